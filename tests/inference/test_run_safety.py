"""The tiled-run driver's safety layer (geolatent.data.run) and ``embed`` on it: locks, the work
store, atomic writes, outputs that would destroy inputs, kill -9 and resume, full disks."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from kill_points import kill_after, start_child
from typer.testing import CliRunner

from geolatent.cli import app
from geolatent.data.run import (
    DiskFullError,
    OutputConflictError,
    OutputLock,
    RunLockedError,
    WorkStore,
    check_free_space,
    check_not_input,
    disk_error,
    prepare_output_dir,
    wait_for_ranks,
    work_dir_for,
    write_atomic,
)
from geolatent.inference.embed_rasters import embed_geotiffs

from .conftest import S2, embed_args, flat

runner = CliRunner()


# -- locks --------------------------------------------------------------------------------------
def test_second_run_on_one_output_is_refused_naming_the_pid(tmp_path) -> None:
    out = tmp_path / "map.tif"
    with OutputLock(out, "predict"):
        with pytest.raises(RunLockedError, match=rf"predict on .*map.tif is already running "
                                                 rf"\(pid {os.getpid()}\)"):
            with OutputLock(out, "predict"):
                pass
    with OutputLock(out, "predict"):  # released at exit
        pass


def test_lock_of_a_killed_run_is_free(tmp_path) -> None:
    out = tmp_path / "map.tif"
    code = (f"import time; from geolatent.data.run import OutputLock\n"
            f"with OutputLock({str(out)!r}):\n    print('locked', flush=True); time.sleep(60)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
        with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
            with OutputLock(out):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    with OutputLock(out):  # kill -9 released it: no stale lock to remove by hand
        pass


def test_embed_refuses_a_locked_output(nano, small_scene_files, tmp_path) -> None:
    out = tmp_path / "e.tif"
    with OutputLock(out, "embed"):
        with pytest.raises(RunLockedError, match="already running"):
            embed_geotiffs(nano, small_scene_files, out)
    assert not out.exists()


# -- the work store -----------------------------------------------------------------------------
def test_work_store_resumes_and_cleans_its_temporaries(tmp_path) -> None:
    root = tmp_path / "out.tif.work"
    store = WorkStore(root, "plan-a")
    store.put("tile_1", np.arange(6, dtype=np.float32).reshape(2, 3), {"data": True})
    store.put("tile_2", None, {"data": False})
    # what a kill -9 in the middle of a write leaves: a temp file and an array without marker
    (root / ".tile_3.npy.tmp-123-abcd").write_bytes(b"partial")
    np.save(root / "tile_3.npy", np.zeros(3))
    again = WorkStore(root, "plan-a")
    assert again.keys() == ["tile_1", "tile_2"] and not again.done("tile_3")
    assert again.pending(["tile_1", "tile_3", "tile_2"]) == ["tile_3"]
    assert not list(root.glob(".*tmp-*"))  # the resume removed the temp file
    np.testing.assert_array_equal(again.get_array("tile_1"), np.arange(6).reshape(2, 3))
    assert again.get_record("tile_2") == {"data": False}
    other = WorkStore(root, "plan-b")  # another plan: nothing of plan-a is reused
    assert other.keys() == []
    user_file = root.parent / "notes.txt"
    user_file.write_text("mine")
    other.discard()
    assert not root.exists() and user_file.read_text() == "mine"


def test_rank_waits_time_out_naming_the_rank(tmp_path) -> None:
    store = WorkStore(tmp_path / "w", "p")
    store.put("a")
    store.put("c")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"rank 2 \(1 items left\) did not finish"):
        wait_for_ranks(store, {1: ["a", "c"], 2: ["b"]}, timeout_s=0.3, poll_s=0.05)
    assert time.monotonic() - t0 < 5
    waiting = WorkStore(tmp_path / "never", "p", create=False)
    with pytest.raises(TimeoutError, match="rank 0 did not prepare"):
        waiting.wait_ready(0.2, poll_s=0.05)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path) -> None:
    final = tmp_path / "a.json"
    final.write_text("old")

    def fail(p: Path) -> None:
        p.write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_atomic(final, fail)
    assert final.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


# -- outputs never destroy inputs or user files -------------------------------------------------
def test_output_equal_to_an_input_is_refused(tmp_path) -> None:
    a = tmp_path / "a.tif"
    a.write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    with pytest.raises(OutputConflictError, match=r"--out .*a.tif is also an input"):
        check_not_input(tmp_path / "sub" / ".." / "a.tif", [a], "--out")
    check_not_input(tmp_path / "b.tif", [a, "https://example.invalid/a.tif"])


def test_embed_cli_refuses_to_overwrite_its_input(small_scene_files, tmp_path) -> None:
    src = small_scene_files[S2][0].path
    before = src.read_bytes()
    args = [*embed_args(small_scene_files, src), "--random-weights", "nano"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"output {src} is also an input" in flat(result.output)
    assert src.read_bytes() == before


def test_embed_has_predicts_area_gate(small_scene_files, tmp_path) -> None:
    """The run's size is printed before it starts; above --max-area-km2 it needs --yes (the
    same gate as predict: the 32 x 32 px scene is 0.1 km²)."""
    out = tmp_path / "gated.tif"
    args = [*embed_args(small_scene_files, out), "--random-weights", "nano"]
    refused = runner.invoke(app, [*args, "--max-area-km2", "0.05"])
    assert refused.exit_code == 2, refused.output
    text = flat(refused.output)
    assert "the area is 0.102 km² (limit 0.05 km²)" in text
    assert "1 tiles, output 8 x 8 x 128" in text
    assert "CLI --yes" in text and "--max-area-km2" in text
    assert not out.exists() and not work_dir_for(out).exists()
    confirmed = runner.invoke(app, [*args, "--max-area-km2", "0.05", "--yes"])
    assert confirmed.exit_code == 0, confirmed.output
    assert "embed: area 0.1 km², 1 tiles, output 8 x 8 x 128" in flat(confirmed.output)
    assert out.exists()


def test_output_folder_must_be_new_or_of_the_same_kind(tmp_path) -> None:
    user = tmp_path / "my_data"
    user.mkdir()
    (user / "field.tif").write_bytes(b"user data")
    with pytest.raises(OutputConflictError, match=r"my_data is a folder with other files "
                                                  r"\(field.tif\)"):
        prepare_output_dir(user, "archive")
    a_file = tmp_path / "model.txt"
    a_file.write_text("notes")
    with pytest.raises(OutputConflictError, match="model.txt is an existing file"):
        prepare_output_dir(a_file, "archive")
    assert (user / "field.tif").read_bytes() == b"user data" and a_file.read_text() == "notes"
    new = prepare_output_dir(tmp_path / "new", "archive")
    (new / "part.bin").write_bytes(b"1")
    assert prepare_output_dir(new, "archive") == new  # a previous artefact of the same kind
    with pytest.raises(OutputConflictError):
        prepare_output_dir(new, "model")  # ... but of another kind


# -- disk ---------------------------------------------------------------------------------------
def test_full_disk_is_one_line_naming_path_and_free_space(tmp_path) -> None:
    with pytest.raises(OSError) as info:
        with open("/dev/full", "wb") as f:  # a real ENOSPC from the kernel
            f.write(b"x" * 65536)
            f.flush()
    assert info.value.errno == errno.ENOSPC
    err = disk_error(info.value, tmp_path / "map.tif")
    assert isinstance(err, DiskFullError)
    msg = str(err)
    assert "\n" not in msg and str(tmp_path / "map.tif") in msg and "MiB free" in msg
    other = OSError(errno.EACCES, "denied")
    assert disk_error(other, tmp_path) is other


def test_free_space_is_checked_before_a_run(tmp_path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    with pytest.raises(DiskFullError, match=r"needs about .* MiB but only .* MiB are free"):
        check_free_space(tmp_path / "map.tif", free + 2**40, "this prediction")
    check_free_space(tmp_path / "map.tif", 1024)


# -- kill -9 and resume -------------------------------------------------------------------------
KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from geolatent.inference.demo import random_model
    from geolatent.inference.embed_rasters import embed_geotiffs
    from geolatent.inference.file_inputs import RasterInput

    out, *pairs = sys.argv[1:]
    inputs = {}
    for pair in pairs:
        m, path, date = pair.split("|")
        inputs.setdefault(m, []).append(RasterInput(path, date))

    def slow(done, total):
        print(done, flush=True)
        time.sleep(0.3)  # room for the kill between tiles and inside them

    embed_geotiffs(random_model("nano", seed=0), inputs, out, tile_size=8, overlap=4,
                   progress=slow)
    """
)


@pytest.mark.slow
def test_embed_kill9_then_rerun_is_byte_identical(nano, small_scene_files, tmp_path) -> None:
    fresh = embed_geotiffs(nano, small_scene_files, tmp_path / "fresh.tif", tile_size=8,
                           overlap=4)
    assert fresh.tiles_total == 16
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "killed.tif"
    pairs = [f"{m}|{ri.path}|{ri.dates[0].isoformat()}" for m in small_scene_files
             for ri in small_scene_files[m]]
    proc = start_child([str(script), str(out), *pairs])
    kill_after(proc, random.Random(0).randint(3, 12), 0.3)  # a reproducible "random point"
    assert not out.exists()
    work = work_dir_for(out)
    finished = [p for p in work.glob("tile_*.json")]
    assert 0 < len(finished) < 16
    resumed = embed_geotiffs(nano, small_scene_files, out, tile_size=8, overlap=4)
    assert resumed.tiles_embedded == fresh.tiles_embedded
    assert out.read_bytes() == fresh.path.read_bytes()
    assert not work.exists()  # published: the work area is gone, temp files with it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.tif", "killed.tif", "run.py"]
