"""Archive builds on a disk that is too small or fills up mid-build (a real 16 MiB tmpfs)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from archive_fixtures import write_sample

import geolatent.archive as ga
from geolatent.data.run import DiskFullError

START, END = "2024-01-01", "2024-03-31"


def _fill(path: Path, leave: int = 0) -> None:
    """Fill the file system of ``path``'s folder up to ``leave`` free bytes."""
    with open(path, "wb") as f:
        try:
            while (free := shutil.disk_usage(path.parent).free) > leave:
                f.write(b"\0" * min(2**20, max(4096, free - leave)))
                f.flush()
        except OSError:
            pass


def test_a_build_that_does_not_fit_is_refused_before_any_work(tmp_path, small_disk,
                                                              fixture_dir):
    s = write_sample(tmp_path)
    _fill(small_disk / "filler.bin", leave=128 * 1024)  # the build needs ~0.26 MiB
    out = small_disk / "region.zarr"
    with pytest.raises(DiskFullError, match=r"this archive needs about 0\.\d MiB but only "
                                            r"0\.\d MiB are free"):
        ga.build(fixture_dir, s["aoi"], START, END, out, sources=s["sources"])
    assert not out.exists()  # nothing left behind


@pytest.mark.slow
def test_full_disk_mid_build_is_one_line_and_resumes_to_the_same_archive(tmp_path, small_disk,
                                                                          fixture_dir):
    s = write_sample(tmp_path)
    kw = dict(sources=s["sources"], tile_size=32, pca_tiles=2)
    out = small_disk / "region.zarr"
    filler = small_disk / "filler.bin"

    def fill_after_two(done: int, total: int) -> None:
        if done == 2 and not filler.exists():  # another program fills the disk mid-build
            _fill(filler)

    with pytest.raises(DiskFullError) as info:
        ga.build(fixture_dir, s["aoi"], START, END, out, progress=fill_after_two, **kw)
    msg = str(info.value)
    assert "\n" not in msg and "disk full while writing" in msg and str(out) in msg
    assert "MiB free" in msg and "rerun the same command to resume" in msg
    assert not (out / "zarr.json").exists()  # nothing published
    filler.unlink()  # the user frees space and reruns: the finished tiles are kept
    resumed = ga.build(fixture_dir, s["aoi"], START, END, out, **kw)
    assert resumed.tiles_resumed >= 2 and resumed.tiles_run + resumed.tiles_resumed == 6
    assert not (out / ".work").exists()
    ref = ga.build(fixture_dir, s["aoi"], START, END, tmp_path / "ref.zarr", **kw)
    a, b = (zarr.open_group(str(p), mode="r") for p in (ref.path, out))
    for name in ("embeddings", "overview_rgb"):
        np.testing.assert_array_equal(a["zones"]["32633"][name][:], b["zones"]["32633"][name][:])
