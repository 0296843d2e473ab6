"""``imagery fetch`` writes only into a new folder or one of an earlier fetch: never over a
folder of the user's files (checked before any search or download)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from geolatent.cli import app
from geolatent.data.imagery import fetch_composites
from geolatent.data.run import OutputConflictError

BOX = (13.0, 45.0, 13.01, 45.01)


def _user_folder(tmp_path: Path) -> Path:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "sentinel2_l2a_2024-01.tif").write_bytes(b"the user's own file")
    return out


def test_fetch_refuses_a_folder_of_user_files(tmp_path: Path):
    out = _user_folder(tmp_path)
    with pytest.raises(OutputConflictError, match="sentinel2_l2a_2024-01.tif"):
        fetch_composites([], BOX, "2024-01-01", "2024-02-01", out)
    assert [p.name for p in out.iterdir()] == ["sentinel2_l2a_2024-01.tif"]
    assert (out / "sentinel2_l2a_2024-01.tif").read_bytes() == b"the user's own file"


def test_fetch_cli_names_the_out_flag(tmp_path: Path):
    out = _user_folder(tmp_path)
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text('{"type": "Polygon", "coordinates": [[[13.0, 45.0], [13.01, 45.0], '
                   '[13.01, 45.01], [13.0, 45.01], [13.0, 45.0]]]}')
    res = CliRunner().invoke(app, ["imagery", "fetch", "--aoi", str(aoi), "--start", "2024-01-01",
                                   "--end", "2024-02-01", "--out", str(out)])
    assert res.exit_code != 0
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "--out" in " ".join(res.output.split()), res.output
    assert (out / "sentinel2_l2a_2024-01.tif").read_bytes() == b"the user's own file"
