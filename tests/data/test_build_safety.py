"""Run safety of ``data build``: unreadable scenes are never recorded as done, one build per
folder, kill -9 then a rerun gives byte-identical samples."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geolatent.data.build import BadSceneError, build_dataset
from geolatent.data.cli import app
from geolatent.data.run import OutputLock, RunLockedError

from .test_build import S1, make_config, read_manifest

runner = CliRunner()
GOOD = "S1A__IW___D_20170309T054356_VV_grd_mli_geo_norm_db.tif"


@pytest.mark.parametrize("damage", ["zero-byte", "truncated header"])
def test_unreadable_scene_fails_the_build_and_a_repair_builds_it(tmp_path, s1_dir, damage):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    real = scenes / "S1A_extra_20170715T054356_VV.tif"
    data = (s1_dir / GOOD).read_bytes()
    real.write_bytes(b"" if damage == "zero-byte" else data[:200])
    extra = [dict(S1, name="extra", paths=[str(scenes / "*_VV.tif")])]
    cfg = make_config(tmp_path / "out", s1_dir, extra)
    with pytest.raises(BadSceneError, match=rf"(?s)on_bad_scene: skip.*{real.name}"):
        build_dataset(cfg, executor="serial")
    assert not list((tmp_path / "out").glob("windows/*.json"))  # nothing recorded as done
    assert not list((tmp_path / "out").glob("samples/*.h5"))

    real.write_bytes(data)  # the user repairs the file: the rerun builds its July samples
    summary = build_dataset(cfg, executor="serial")
    assert not summary.failed and summary.samples_written > 0
    assert all(r["modalities"]["sentinel1"]["present_timesteps"] == 2
               for r in read_manifest(tmp_path / "out"))


def test_cli_names_the_unreadable_file(tmp_path, s1_dir):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    (scenes / "S1A_extra_20170715T054356_VV.tif").write_bytes(b"")
    cfg = make_config(tmp_path / "out", s1_dir,
                      [dict(S1, name="extra", paths=[str(scenes / "*_VV.tif")])])
    config = tmp_path / "data.yaml"
    import yaml

    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    res = runner.invoke(app, ["build", "--config", str(config), "--executor", "serial"])
    assert res.exit_code == 2
    assert "S1A_extra_20170715T054356_VV.tif" in " ".join(res.output.split())


def test_second_build_on_one_folder_is_refused(tmp_path, s1_dir):
    cfg = make_config(tmp_path / "out", s1_dir)
    with OutputLock(tmp_path / "out", "data build"):
        with pytest.raises(RunLockedError, match=rf"data build on .*out is already running "
                                                 rf"\(pid {os.getpid()}\)"):
            build_dataset(cfg, executor="serial")


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from geolatent.data.build import build_dataset
    from geolatent.data.config import DataConfig
    from geolatent.data.executor import SerialExecutor

    class Slow(SerialExecutor):
        def map_unordered(self, fn, items):
            for outcome in super().map_unordered(fn, items):
                print("window", flush=True)
                time.sleep(0.3)
                yield outcome

    cfg = DataConfig.model_validate_json(open(sys.argv[1]).read())
    build_dataset(cfg, executor=Slow())
    """
)


def _files(root: Path) -> dict[str, bytes]:
    skip = {"build_summary.json"}  # holds the run's timings
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


@pytest.mark.slow
def test_build_kill9_then_rerun_is_byte_identical(tmp_path, s1_dir):
    fresh = build_dataset(make_config(tmp_path / "fresh", s1_dir), executor="serial")
    assert len(fresh.built) >= 3
    cfg = make_config(tmp_path / "killed", s1_dir)
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(cfg.model_dump_json())
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(script), str(cfg_file)], stdout=subprocess.PIPE,
                            text=True, env=env)
    stop_at = random.Random(0).randint(1, 4)
    try:
        for n, _ in enumerate(proc.stdout, start=1):  # type: ignore[arg-type]
            if n >= stop_at:
                time.sleep(random.Random(1).uniform(0.0, 0.3))
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert not (tmp_path / "killed" / "manifest.jsonl").exists()
    again = build_dataset(cfg, executor="serial")
    assert again.skipped and not again.failed
    got, want = _files(tmp_path / "killed"), _files(tmp_path / "fresh")
    assert sorted(got) == sorted(want)
    fresh_root, killed_root = str(tmp_path / "fresh"), str(tmp_path / "killed")
    for name, data in want.items():  # records name their own folder; otherwise equal bytes
        assert got[name].replace(killed_root.encode(), fresh_root.encode()) == data, name
    shutil.rmtree(tmp_path / "fresh")


def test_output_of_the_earlier_layout_is_migrated_onto_the_work_store(tmp_path, s1_dir):
    """Builds before the work store wrote the same ``windows/<name>.json`` markers without a
    ``windows/store.json``: a rerun adopts them (nothing rebuilt, same files), says so, and a
    folder whose ``windows/`` holds something else is a clear error."""
    out = tmp_path / "out"
    cfg = make_config(out, s1_dir)
    first = build_dataset(cfg, executor="serial")
    before = _files(out)
    (out / "windows" / "store.json").unlink()  # the earlier layout: markers only
    again = build_dataset(cfg, executor="serial")
    assert sorted(again.skipped) == sorted(first.built + first.empty) and not again.built
    assert [w for w in again.warnings if "migrated" in w]
    assert _files(out) == before and (out / "windows" / "store.json").exists()

    other = tmp_path / "other"
    (other / "windows").mkdir(parents=True)
    (other / "windows" / "notes.json").write_text('{"mine": 1}')
    with pytest.raises(ValueError, match=r"notes\.json is not a window record .* choose another "
                                         r"output_dir"):
        build_dataset(make_config(other, s1_dir), executor="serial")
    assert (other / "windows" / "notes.json").read_text() == '{"mine": 1}'
