"""The run driver's output checks on real file systems (a tmpfs mounted read-only, a full
16 MiB tmpfs): one error naming the path and what to change, nothing written, no fd left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from geolatent.data.run import (
    DiskFullError,
    OutputLock,
    OutputNotWritableError,
    check_writable,
    prepare_output_dir,
    write_atomic,
)


def test_a_writable_output_passes(tmp_path: Path):
    check_writable(tmp_path / "new" / "deeper" / "map.tif", "--out")  # parents made later
    check_writable(tmp_path, "output_dir")
    (tmp_path / "notes.txt").write_text("my notes")
    with pytest.raises(OutputNotWritableError, match="notes.txt is a file, not a folder"):
        check_writable(tmp_path / "notes.txt" / "out" / "map.tif", "--out")


@pytest.mark.parametrize("relative", [".", "map.tif", "new/deeper/samples"])
def test_read_only_output_is_one_line_naming_path_and_option(read_only_dir: Path, relative):
    out = read_only_dir / relative
    with pytest.raises(OutputNotWritableError) as info:
        check_writable(out, "--out")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"--out {out} cannot be written")
    assert f"{read_only_dir} is on a read-only file system" in msg
    assert "give --out a path on a writable disk" in msg


def test_every_entry_of_the_run_driver_refuses_a_read_only_output(read_only_dir: Path):
    with pytest.raises(OutputNotWritableError, match="--out .*read-only file system"):
        prepare_output_dir(read_only_dir / "region.zarr", "archive", "--out")
    with pytest.raises(OutputNotWritableError, match="output_dir .*read-only file system"):
        with OutputLock(read_only_dir / "samples", "data build", option="output_dir"):
            pass
    with pytest.raises(OutputNotWritableError, match="cannot write .*read-only file system"):
        write_atomic(read_only_dir / "a.json", lambda p: p.write_text("{}"))
    assert os.listdir(read_only_dir) == []


def test_lock_on_a_full_disk_names_the_path_and_free_space(full_disk: Path):
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(DiskFullError) as info:
        with OutputLock(full_disk / "out", "data build"):
            pass
    msg = str(info.value)
    assert "\n" not in msg and f"disk full while writing {full_disk}" in msg
    assert "MiB free" in msg and "rerun the same command to resume" in msg
    assert len(os.listdir("/proc/self/fd")) == fds  # the lock file's fd was closed
