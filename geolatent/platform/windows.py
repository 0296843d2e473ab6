"""Labels -> training windows on the data layer's grid, and their targets.

* Window tasks (``classification``, ``regression``): one ``size_px`` window centred on each
  label (a polygon's representative point); the target is the label's class index or value.
* Pixel tasks (``segmentation``, ``pixel_regression``): the labelled area is tiled into
  ``size_px`` windows on the global pixel grid (:func:`geolatent.data.window.tile_windows`, so
  overlapping labels never produce overlapping windows); every label touching a window is
  rasterized into its target (points burn their pixel, polygons their interior). Pixels
  without a label are ignored (-1 / NaN) unless a ``background`` class is given. Studio task
  polygons, when present, are tiled instead and bound the labelled area of their annotations.

Each window's time range is its label's (an instant becomes ``instant_months`` calendar months
around it) or the default range; labels with different ranges get different windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
import rasterio.features
import shapely
from shapely.geometry.base import BaseGeometry

from geolatent.data.sources import Source
from geolatent.data.window import WGS84, Window, reproject_geometry, tile_windows, utm_crs_for
from geolatent.modalities import BASE_RESOLUTION_M, MAX_TIMESTEPS
from geolatent.platform.classes import IGNORE_INDEX
from geolatent.platform.labels import LabelProblem, LabelSet

TaskType = Literal["classification", "regression", "segmentation", "pixel_regression"]
WINDOW_TASKS = ("classification", "regression")
PIXEL_TASKS = ("segmentation", "pixel_regression")
CLASS_TASKS = ("classification", "segmentation")


@dataclass
class LabelWindow:
    """One training window and the labels it holds.

    Attributes:
        window: the data-layer window (grid, CRS, time range).
        labels: indices into the :class:`LabelSet` of the labels in the window.
        extent: optional area (lon/lat) outside which pixels are unlabelled (a Studio task).
        split: ``train`` / ``val`` / ``test`` once assigned.
    """

    window: Window
    labels: np.ndarray
    extent: BaseGeometry | None = None
    split: str = ""
    meta: dict = field(default_factory=dict)


def _add_months(year: int, month: int, n: int) -> datetime:
    k = year * 12 + (month - 1) + n
    return datetime(k // 12, k % 12 + 1, 1)


def label_time_ranges(
    labels: LabelSet,
    default: tuple[datetime, datetime] | None,
    instant_months: int = 12,
) -> tuple[list[tuple[datetime, datetime] | None], list[LabelProblem]]:
    """The window time range of each label (None where it has none and there is no default).

    Ranges are whole calendar months (the data layer composites per month) and at most
    :data:`~geolatent.modalities.MAX_TIMESTEPS` months: an instant (start == end, or one time)
    becomes ``instant_months`` months centred on its month; a longer range keeps its first
    months, with a warning.
    """
    problems: list[LabelProblem] = []
    out: list[tuple[datetime, datetime] | None] = []
    instant_months = max(1, min(int(instant_months), MAX_TIMESTEPS))
    for i in range(len(labels)):
        s, e = labels.start[i], labels.end[i]
        if np.isnat(s) and np.isnat(e):
            out.append(default)
            continue
        s = e if np.isnat(s) else s
        e = s if np.isnat(e) else e
        s_dt, e_dt = s.astype("datetime64[s]").item(), e.astype("datetime64[s]").item()
        if s_dt == e_dt:
            start = _add_months(s_dt.year, s_dt.month, -(instant_months // 2))
            out.append((start, _add_months(start.year, start.month, instant_months)))
            continue
        start = datetime(s_dt.year, s_dt.month, 1)
        end = _add_months(e_dt.year, e_dt.month, 1 if e_dt > datetime(e_dt.year, e_dt.month, 1)
                          else 0)
        months = (end.year - start.year) * 12 + end.month - start.month
        if months > MAX_TIMESTEPS:
            problems.append(LabelProblem(
                "long_time_range", int(labels.rows[i]),
                f"{months} months from {start:%Y-%m}; the model takes at most {MAX_TIMESTEPS} "
                "monthly steps, so the first ones are used", "warning"))
            end = _add_months(start.year, start.month, MAX_TIMESTEPS)
        out.append((start, end))
    return out, problems


def _window_tasks(labels: LabelSet, ranges: list, size_px: int, crs: str | None,
                  resolution: float) -> list[LabelWindow]:
    points = shapely.point_on_surface(labels.geometries.astype(object))
    xy = shapely.get_coordinates(points)
    out = []
    for i, (lon, lat) in enumerate(xy):
        w = Window.from_center(float(lon), float(lat), size_px, time_range=ranges[i],
                               crs=crs or utm_crs_for(float(lon), float(lat)),
                               resolution=resolution)
        out.append(LabelWindow(w, np.array([i])))
    return out


def _tile_group(area: BaseGeometry, members: np.ndarray, geoms: np.ndarray, time_range,
                size_px: int, crs: str | None, resolution: float,
                extent: BaseGeometry | None, keep_empty: bool = False) -> list[LabelWindow]:
    """Tiles over ``area`` (lon/lat), each with the member labels it holds: points and lines
    that touch it, polygons that cover at least half a pixel of it (so a polygon edge grazing
    a tile after reprojection does not make a window without a labelled pixel)."""
    tiles = tile_windows(area, time_range=time_range, crs=crs, tile_size=size_px,
                         resolution=resolution)
    by_crs: dict[str, list[int]] = {}
    for k, t in enumerate(tiles):
        by_crs.setdefault(t.crs, []).append(k)
    out = []
    for tile_crs, ks in by_crs.items():
        projected = reproject_geometry(geoms[members], WGS84, tile_crs)
        b = np.array([tiles[k].bounds for k in ks])
        boxes = shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3])
        t_idx, l_idx = shapely.STRtree(projected).query(boxes, predicate="intersects")
        shared = shapely.area(shapely.intersection(boxes[t_idx], projected[l_idx]))
        ok = (shapely.area(projected[l_idx]) == 0) | (shared >= 0.5 * resolution**2)
        t_idx, l_idx = t_idx[ok], l_idx[ok]
        if keep_empty:  # tiles the area covers by at least half a pixel, labelled or not
            area_here = reproject_geometry(area, WGS84, tile_crs)
            covered = shapely.area(shapely.intersection(boxes, area_here)) >= 0.5 * resolution**2
        for j, k in enumerate(ks):
            inside = members[l_idx[t_idx == j]]
            if len(inside) or (keep_empty and covered[j]):
                out.append(LabelWindow(tiles[k], np.sort(inside), extent))
    return out


def make_label_windows(
    labels: LabelSet,
    task: TaskType,
    *,
    size_px: int = 32,
    default_time_range: tuple[datetime, datetime] | None = None,
    instant_months: int = 12,
    crs: str | None = None,
    resolution: float = BASE_RESOLUTION_M,
    keep_unlabelled_task_tiles: bool = False,
) -> tuple[list[LabelWindow], list[LabelProblem]]:
    """Training windows for ``labels`` (see the module docstring).

    Args:
        labels: checked labels (:func:`~geolatent.platform.labels.check_labels`).
        task: the task type.
        size_px: window side in pixels.
        default_time_range: for labels without times; labels without times and without a
            default are reported and skipped.
        instant_months: months of imagery around a label given as one instant.
        crs: the windows' CRS; default the UTM zone of each label.
        resolution: pixel size in metres.
        keep_unlabelled_task_tiles: keep Studio task tiles without annotations (they carry
            labels when unlabelled task pixels are a background class).

    Returns:
        ``(windows, problems)``.
    """
    if size_px < 1:
        raise ValueError(f"size_px must be positive, got {size_px}")
    ranges, problems = label_time_ranges(labels, default_time_range, instant_months)
    has_time = np.array([r is not None for r in ranges], dtype=bool)
    for i in np.flatnonzero(~has_time):
        problems.append(LabelProblem(
            "bad_time", int(labels.rows[i]),
            "the label has no time range and no default is configured (windows.start / end)"))
    if task not in PIXEL_TASKS:
        keep = np.flatnonzero(has_time)
        windows = _window_tasks(labels.subset(keep), [ranges[i] for i in keep], size_px, crs,
                                resolution)
        for w in windows:
            w.labels = keep[w.labels]
        return windows, problems

    geoms = labels.geometries.astype(object)
    out: list[LabelWindow] = []
    if labels.tasks and labels.groups is not None:
        for tid, t in labels.tasks.items():
            members = np.flatnonzero((labels.groups == tid) & has_time)
            if not len(members):
                problems.append(LabelProblem("empty_task", -1, f"task {tid} has no usable "
                                             "annotations", "warning"))
                continue
            out += _tile_group(t.geometry, members, geoms, ranges[members[0]], size_px, crs,
                               resolution, t.geometry, keep_unlabelled_task_tiles)
        loose = np.flatnonzero(has_time & ~np.isin(labels.groups, list(labels.tasks)))
    else:
        loose = np.flatnonzero(has_time)
    groups: dict[tuple, list[int]] = {}
    for i in loose:
        groups.setdefault(ranges[i], []).append(int(i))
    for time_range, members in groups.items():
        m = np.array(members)
        out += _tile_group(shapely.union_all(geoms[m]), m, geoms, time_range, size_px, crs,
                           resolution, None)
    return out, problems


def check_imagery(
    windows: list[LabelWindow], sources: Sequence[Source]
) -> tuple[np.ndarray, list[LabelProblem]]:
    """bool ``[N]``: windows that some source has a scene for (in space and time).

    A window without any scene is reported as ``outside_imagery`` (its labels lie outside the
    imagery or outside its dates).
    """
    keep = np.ones(len(windows), dtype=bool)
    problems = []
    for k, lw in enumerate(windows):
        bbox = lw.window.bounds_wgs84
        if not any(s.scenes_for(lw.window, bbox) for s in sources):
            keep[k] = False
            t0, t1 = lw.window.time_range
            problems.append(LabelProblem(
                "outside_imagery", -1,
                f"window {lw.window.name} (lon/lat {tuple(round(v, 4) for v in bbox)}, "
                f"{t0:%Y-%m-%d}..{t1:%Y-%m-%d}, {len(lw.labels)} labels) has no scene in any "
                "source"))
    return keep, problems


@dataclass(frozen=True)
class TargetSpec:
    """What to burn into a window's target (small and picklable; travels to workers).

    Attributes:
        task: the task type.
        shapes_wkb: the window's label geometries (WKB, lon/lat).
        values: class index (int) or value (float) of each geometry.
        extent_wkb: optional labelled area (WKB, lon/lat); pixels outside it stay unlabelled.
        background: class index of labelled-area pixels without a label (pixel classification);
            None leaves them ignored.
    """

    task: str
    shapes_wkb: tuple[bytes, ...]
    values: tuple[float, ...]
    extent_wkb: bytes | None = None
    background: int | None = None


def build_target(window: Window, spec: TargetSpec) -> np.ndarray:
    """The target of one window.

    Returns:
        window tasks: ``[1]`` (int64 class index / float32 value); pixel classification: int16
        ``[H, W]`` class indices, -1 unlabelled; pixel regression: float32 ``[H, W]``, NaN
        unlabelled.
    """
    if spec.task in WINDOW_TASKS:
        dtype = np.float32 if spec.task == "regression" else np.int64
        return np.asarray(spec.values[:1], dtype=dtype)
    classes = spec.task == "segmentation"
    h, w = window.shape
    fill = IGNORE_INDEX if classes else math.nan
    if classes and spec.background is not None:
        fill = spec.background
    dtype = np.int16 if classes else np.float32
    shapes = [reproject_geometry(shapely.from_wkb(b), WGS84, window.crs) for b in spec.shapes_wkb]
    target = np.full((h, w), fill, dtype=dtype)
    if shapes:
        # Later labels win where labels overlap; points burn the pixel they fall in.
        target = rasterio.features.rasterize(
            zip(shapes, spec.values, strict=True), out_shape=(h, w), transform=window.transform,
            fill=fill, dtype=dtype if classes else "float32",
        )
    if spec.extent_wkb is not None:
        extent = reproject_geometry(shapely.from_wkb(spec.extent_wkb), WGS84, window.crs)
        inside = rasterio.features.geometry_mask([extent], (h, w), window.transform, invert=True)
        target[~inside] = IGNORE_INDEX if classes else math.nan
    return target
