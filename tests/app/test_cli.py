"""`geolatent serve` refuses bad flags with a message naming the flag (before starting)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from geolatent.cli import app


@pytest.mark.parametrize("args, flag, words", [
    (["--port", "70000"], "--port", "0-65535"),
    (["--database", "geolatent.db"], "--database", "postgresql://"),
    (["--max-upload-mb", "0"], "--max-upload-mb", "> 0"),
    (["--dask-scheduler", "127.0.0.1:8786"], "--dask-scheduler", "tcp://"),
])
def test_serve_bad_flags_name_the_flag(tmp_path, args, flag, words):
    res = CliRunner().invoke(app, ["serve", "--project", str(tmp_path / "p"), *args])
    assert res.exit_code != 0
    assert flag in res.output and words in res.output
    assert not (tmp_path / "p").exists()  # nothing created for a refused start


def test_serve_project_that_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("mine")
    res = CliRunner().invoke(app, ["serve", "--project", str(f)])
    assert res.exit_code != 0 and "--project" in res.output and "folder" in res.output
    assert f.read_text() == "mine"
