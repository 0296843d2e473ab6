"""Label checks: drop every label that cannot be used and say why (feature number and
reason), and warn about classes without labels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import shapely

from geolatent.platform.classes import canonical_value
from geolatent.platform.labels.types import LabelError, LabelProblem, LabelSet


def check_labels(
    labels: LabelSet,
    *,
    ignore_values: Sequence[object] = (),
    repair_invalid: bool = False,
) -> tuple[LabelSet, list[LabelProblem]]:
    """Drop the labels that cannot be used and say why.

    Checks (vectorized over all labels): missing or unparseable geometry, invalid geometry
    (self-intersections, ...; repaired with ``shapely.make_valid`` when ``repair_invalid``),
    coordinates outside lon/lat ranges (a projected file read as lon/lat), missing or non-numeric
    values, end time before start time. Labels whose value is in ``ignore_values`` are dropped
    silently (e.g. ``0`` = "no data").

    Returns:
        ``(usable labels, problems)``; problems include those found while reading.
    """
    problems = list(labels.problems)
    n = len(labels)
    geoms = labels.geometries.copy()
    keep = np.ones(n, dtype=bool)
    rows = labels.rows

    none = np.array([g is None for g in geoms], dtype=bool)
    empty = none.copy()
    empty[~none] = shapely.is_empty(geoms[~none].astype(object))
    for i in np.flatnonzero(empty):
        problems.append(LabelProblem("empty_geometry", int(rows[i]), "no geometry"))
    keep &= ~empty

    idx = np.flatnonzero(keep)
    valid = shapely.is_valid(geoms[idx])
    for i in idx[~valid]:
        reason = shapely.is_valid_reason(geoms[i])
        if repair_invalid:
            geoms[i] = shapely.make_valid(geoms[i])
            problems.append(LabelProblem("invalid_geometry", int(rows[i]),
                                         f"{reason}; repaired", "warning"))
        else:
            problems.append(LabelProblem(
                "invalid_geometry", int(rows[i]),
                f"{reason} (fix it in the file, or set repair_invalid: true)"))
            keep[i] = False

    idx = np.flatnonzero(keep)
    if len(idx):
        b = shapely.bounds(geoms[idx])
        bad = (b[:, 0] < -180) | (b[:, 2] > 180) | (b[:, 1] < -90) | (b[:, 3] > 90)
        for i in idx[bad]:
            problems.append(LabelProblem(
                "bad_coordinates", int(rows[i]),
                f"bounds {tuple(round(v, 1) for v in shapely.bounds(geoms[i]))} are not lon/lat "
                "degrees: the file's CRS is missing or wrong"))
            keep[i] = False

    ignored = {canonical_value(v) for v in ignore_values}
    for i in np.flatnonzero(keep):
        v = labels.values[i]
        if v is None:
            problems.append(LabelProblem("missing_label", int(rows[i]), "no label value"))
            keep[i] = False
        elif labels.kind == "class" and v in ignored:
            keep[i] = False
        elif labels.kind == "value":
            try:
                x = float(v)
            except (TypeError, ValueError):
                x = math.nan
            if not math.isfinite(x):
                problems.append(LabelProblem("bad_value", int(rows[i]),
                                             f"value {v!r} is not a finite number"))
                keep[i] = False

    has_both = ~np.isnat(labels.start) & ~np.isnat(labels.end)
    backwards = has_both & (labels.end < labels.start)
    for i in np.flatnonzero(keep & backwards):
        problems.append(LabelProblem("bad_time", int(rows[i]),
                                     f"end {labels.end[i]} is before start {labels.start[i]}"))
    keep &= ~backwards
    bad_time_rows = {p.row for p in labels.problems if p.kind == "bad_time"}
    if bad_time_rows:
        keep &= ~np.isin(rows, list(bad_time_rows))

    out = replace(labels, geometries=geoms).subset(keep)
    if labels.kind == "value":
        out.values = out.values.astype(np.float64)
    out.problems = problems
    if len(out) == 0:
        detail = "; ".join(str(p) for p in problems[:5])
        raise LabelError(f"{labels.source}: no usable labels among {n} features ({detail})")
    return out, problems


def empty_class_problems(values: np.ndarray, classes: Sequence[str | int],
                         where: str = "") -> list[LabelProblem]:
    """A warning for every class in ``classes`` without any label among ``values``."""
    present = {canonical_value(v) for v in values}
    return [
        LabelProblem("empty_class", -1, f"class {c!r} has no labels{where}", "warning")
        for c in classes
        if canonical_value(c) not in present
    ]
