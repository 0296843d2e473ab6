"""Spatial train / validation / test splits by hashing grid cells.

Neighbouring windows look alike (spatial autocorrelation), so a random split per window leaks
the test set into training. Instead every window goes to the split of the grid cell holding its
centre: cells of ``cell_size_m`` on the window's CRS grid, each cell's split drawn from a hash
of (CRS, cell column, cell row, seed). All windows of one cell share a split, the assignment
is stable when labels are added, and no randomness is stored. Windows that still overlap a
window of another split (near cell edges) are dropped from the lower-priority split, so no
pixel is seen in two splits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import shapely
from pyproj import CRS

from geolatent.data.window import WGS84, Window
from geolatent.platform.labels import LabelProblem

SPLITS = ("train", "val", "test")
# A window overlapping one of another split is dropped from the split that matters less:
# test stays intact first, then validation.
_PRIORITY = {"test": 0, "val": 1, "train": 2}


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer: a well-mixed uint64 from a uint64 (vectorized)."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def cell_uniform(epsg: np.ndarray, col: np.ndarray, row: np.ndarray, seed: int) -> np.ndarray:
    """float64 ``[N]`` in [0, 1): a deterministic pseudo-random number per grid cell."""
    h = _mix64(np.full(len(col), seed, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    for part in (epsg, col, row):
        h = _mix64(h ^ part.astype(np.int64).view(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def window_cells(windows: Sequence[Window], cell_size_m: float) -> np.ndarray:
    """int64 ``[N, 3]``: (EPSG code or CRS hash, cell column, cell row) of each window centre."""
    if cell_size_m <= 0:
        raise ValueError(f"cell_size_m must be positive, got {cell_size_m}")
    out = np.zeros((len(windows), 3), dtype=np.int64)
    codes: dict[str, int] = {}
    for i, w in enumerate(windows):
        if w.crs not in codes:
            epsg = CRS.from_user_input(w.crs).to_epsg()
            codes[w.crs] = epsg if epsg is not None else hash(w.crs) & 0x7FFFFFFF
        xmin, ymin, xmax, ymax = w.bounds
        out[i] = (codes[w.crs], np.floor((xmin + xmax) / 2 / cell_size_m),
                  np.floor((ymin + ymax) / 2 / cell_size_m))
    return out


def assign_splits(
    windows: Sequence[Window],
    *,
    cell_size_m: float = 2560.0,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The split name of each window (object ``[N]``), by hashing its grid cell.

    Args:
        windows: training windows (any CRSs; cells live on each CRS's own grid).
        cell_size_m: grid cell side in CRS units (metres for UTM); use several window sizes so
            that most neighbours share a cell.
        fractions: expected share of cells per split, e.g. ``{"train": .8, "val": .1,
            "test": .1}`` (normalized; splits may be left out).
        seed: changes the assignment.
    """
    fractions = dict(fractions or {"train": 0.8, "val": 0.1, "test": 0.1})
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; use {SPLITS}")
    names = [s for s in SPLITS if fractions.get(s, 0) > 0]
    if not names:
        raise ValueError("at least one split needs a positive fraction")
    shares = np.array([fractions[s] for s in names], dtype=np.float64)
    edges = np.cumsum(shares / shares.sum())
    cells = window_cells(windows, cell_size_m)
    u = cell_uniform(cells[:, 0], cells[:, 1], cells[:, 2], seed)
    which = np.minimum(np.searchsorted(edges, u, side="right"), len(names) - 1)
    return np.asarray(names, dtype=object)[which]


def _footprints(windows: Sequence[Window]) -> np.ndarray:
    """Window footprints in one CRS: the windows' own when they share it, else lon/lat."""
    crss = {w.crs for w in windows}
    if len(crss) == 1:
        b = np.array([w.bounds for w in windows], dtype=np.float64)
        return shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3])
    return np.array([w.geometry(WGS84) for w in windows], dtype=object)


def cross_split_overlaps(
    windows: Sequence[Window], splits: np.ndarray
) -> tuple[np.ndarray, list[LabelProblem]]:
    """Drop windows that overlap (share area with) a window of another split.

    Returns:
        ``(keep bool [N], problems)``: of two overlapping windows of different splits, the one
        in the lower-priority split (train < val < test) is dropped.
    """
    n = len(windows)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep, []
    geoms = _footprints(windows)
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms, predicate="intersects")
    pairs = (a < b) & (splits[a] != splits[b])
    a, b = a[pairs], b[pairs]
    if len(a):
        shared = shapely.area(shapely.intersection(geoms[a], geoms[b]))
        touching = shared <= 1e-9 * np.maximum(shapely.area(geoms[a]), 1e-30)
        a, b = a[~touching], b[~touching]
    problems = []
    rank = np.array([_PRIORITY.get(s, 3) for s in splits])
    loser = np.where(rank[a] > rank[b], a, b)
    for i in np.unique(loser):
        keep[i] = False
        problems.append(LabelProblem(
            "split_overlap", -1,
            f"window {windows[i].name} ({splits[i]}) overlaps a window of another split; "
            "dropped so no pixel is in two splits", "warning"))
    return keep, problems


def split_counts(splits: np.ndarray) -> dict[str, int]:
    """Windows per split, in :data:`SPLITS` order."""
    return {s: int((splits == s).sum()) for s in SPLITS}
