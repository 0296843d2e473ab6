"""Spatial splits: grid cells hashed to splits, stable, and no overlap across splits."""

from __future__ import annotations

import numpy as np

from geolatent.data.window import Window
from geolatent.platform.split import assign_splits, cross_split_overlaps, split_counts

T = ("2024-01-01", "2025-01-01")


def _grid(n: int, size: int = 32, step: int = 32, crs: str = "EPSG:32633") -> list[Window]:
    return [Window(crs, (c, r, c + size, r + size), T)
            for r in range(0, n * step, step) for c in range(0, n * step, step)]


def test_windows_of_one_cell_share_a_split_and_the_split_is_stable():
    windows = _grid(40)  # 40 x 40 windows of 320 m
    splits = assign_splits(windows, cell_size_m=1280, seed=3)  # 4 x 4 windows per cell
    again = assign_splits(list(reversed(windows)), cell_size_m=1280, seed=3)[::-1]
    assert (splits == again).all()
    cells = {}
    for w, s in zip(windows, splits, strict=True):
        key = (w.pixel_bounds[0] // 128, w.pixel_bounds[1] // 128)
        cells.setdefault(key, set()).add(s)
    assert all(len(v) == 1 for v in cells.values())
    counts = split_counts(splits)
    total = sum(counts.values())
    assert 0.6 < counts["train"] / total < 0.95 and counts["val"] > 0 and counts["test"] > 0
    other = assign_splits(windows, cell_size_m=1280, seed=4)
    assert (other != splits).any()


def test_fractions_and_validation_of_names():
    windows = _grid(30, step=32)
    splits = assign_splits(windows, cell_size_m=320, fractions={"train": 1.0, "val": 1.0})
    counts = split_counts(splits)
    assert counts["test"] == 0 and abs(counts["train"] - counts["val"]) < 0.15 * len(windows)
    try:
        assign_splits(windows, fractions={"holdout": 1.0})
    except ValueError as e:
        assert "holdout" in str(e)
    else:
        raise AssertionError("unknown split accepted")


def test_overlapping_windows_of_different_splits_are_dropped():
    a = Window("EPSG:32633", (0, 0, 32, 32), T)
    b = Window("EPSG:32633", (16, 0, 48, 32), T)   # overlaps a
    c = Window("EPSG:32633", (32, 0, 64, 32), T)   # touches a only along an edge
    d = Window("EPSG:32633", (100, 0, 132, 32), T)
    splits = np.array(["train", "test", "val", "train"], dtype=object)
    keep, problems = cross_split_overlaps([a, b, c, d], splits)
    # a (train) overlaps b (test): a goes; b (test) overlaps c (val): c goes.
    assert keep.tolist() == [False, True, False, True]
    assert {p.kind for p in problems} == {"split_overlap"}


def test_overlap_check_across_utm_zones():
    # Two windows on either side of the 12 E zone boundary that cover the same ground.
    from geolatent.data.window import Window as W

    west = W.from_center(11.9995, 46.0, 32, time_range=T, crs="EPSG:32632")
    east = W.from_center(11.9995, 46.0, 32, time_range=T, crs="EPSG:32633")
    keep, _ = cross_split_overlaps([west, east], np.array(["train", "val"], dtype=object))
    assert keep.tolist() == [False, True]
