"""Helpers every label reader shares: column guessing, time parsing, value conversion and the
assembly of a :class:`LabelSet` with the problems found while reading."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

import numpy as np
from pyproj import CRS
from shapely.geometry import shape

from geolatent.data.window import WGS84, reproject_geometry, to_utc_naive
from geolatent.platform.classes import canonical_value
from geolatent.platform.labels.types import (
    _DATE_LIKE_NAMES,
    _FIELD_GUESSES,
    _ISO_DATE,
    LabelError,
    LabelKind,
    LabelProblem,
    LabelSet,
    NaT,
)


def _pick(available: Sequence[str], wanted: str | None, guesses: Sequence[str], what: str,
          required: bool) -> str | None:
    """The column to use: ``wanted`` (must exist), else the first case-insensitive guess."""
    by_lower = {c.lower(): c for c in available}
    if wanted is not None:
        if wanted in available:
            return wanted
        if wanted.lower() in by_lower:
            return by_lower[wanted.lower()]
        raise LabelError(f"{what} column {wanted!r} not found; columns are {list(available)}")
    for g in guesses:
        if g in by_lower:
            return by_lower[g]
    if required:
        raise LabelError(
            f"no {what} column found (tried {list(guesses)}); columns are {list(available)}: "
            f"name the column in the labels config"
        )
    return None


def _is_missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (
        isinstance(v, str) and not v.strip()
    )


def _parse_time(v: object) -> datetime | None:
    """A naive UTC datetime from an ISO string / date / datetime; None when empty.

    Raises ValueError when the value is not a time."""
    if _is_missing(v):
        return None
    if isinstance(v, datetime | date):
        return to_utc_naive(v)
    if isinstance(v, np.datetime64):
        return None if np.isnat(v) else v.astype("datetime64[s]").item()
    return to_utc_naive(str(v).strip())  # ISO 8601, "Z" or offsets, date or date-time


def _times(values: Sequence[object], rows: np.ndarray, what: str,
           problems: list[LabelProblem]) -> np.ndarray:
    out = np.full(len(values), NaT)
    for i, v in enumerate(values):
        try:
            t = _parse_time(v)
        except (ValueError, TypeError):
            problems.append(LabelProblem("bad_time", int(rows[i]), f"{what} {v!r} is not a date"))
            continue
        if t is not None:
            out[i] = np.datetime64(t, "s")
    return out


def _label_values(raw: Sequence[object], kind: LabelKind) -> np.ndarray:
    out = np.empty(len(raw), dtype=object)
    for i, v in enumerate(raw):
        if _is_missing(v):
            out[i] = None
        elif kind == "class":
            out[i] = canonical_value(v)
        else:
            out[i] = v  # numbers are checked in check_labels, with the feature number
    return out


def _assemble(
    geoms: np.ndarray,
    props: list[dict],
    *,
    kind: LabelKind,
    field_name: str | None,
    time_column: str | None,
    end_time_column: str | None,
    split_field: str | None,
    source: str,
) -> LabelSet:
    if not props:
        raise LabelError(f"{source}: the label file holds no labels (0 features); check the "
                         "file (and the layer, for a GeoPackage)")
    columns = sorted({k for p in props for k in p})
    col = _pick(columns, field_name, _FIELD_GUESSES, "label", required=True)
    if end_time_column is not None and time_column is None:
        raise LabelError(f"end_time_column {end_time_column!r} needs time_column (the start)")
    # Label time is never guessed: a column that merely looks like a date (a survey or edit
    # date, say) would silently override the windows' time range.
    start_col = _pick(columns, time_column, (), "time", required=True) if time_column else None
    end_col = _pick(columns, end_time_column, (), "end time", required=True) \
        if end_time_column else None
    split_col = _pick(columns, split_field, (), "split", required=False) if split_field else None
    rows = np.arange(len(props), dtype=np.int64)
    problems: list[LabelProblem] = []
    if start_col is None:
        unused = [c for c in columns if c != col and _looks_like_dates(c, props)]
        if unused:
            problems.append(LabelProblem(
                "unused_time_column", -1,
                f"column {unused[0]!r} looks like dates but label time is not taken from it: "
                "every label uses the windows' start/end; set labels.time_column: "
                f"{unused[0]} to use it", "warning"))
    what = f"time column {start_col!r} value"
    start = _times([p.get(start_col) for p in props], rows, what, problems) if start_col \
        else np.full(len(props), NaT)
    end = _times([p.get(end_col) for p in props], rows, f"end time column {end_col!r} value",
                 problems) if end_col else start.copy()  # one time column: the label is an instant
    splits = None
    if split_col:
        splits = np.array([_split_name(p.get(split_col)) for p in props], dtype=object)
    return LabelSet(
        geometries=geoms,
        values=_label_values([p.get(col) for p in props], kind),
        start=start,
        end=end,
        rows=rows,
        kind=kind,
        splits=splits,
        source=source,
        problems=problems,
        time_column=start_col,
    )


def _looks_like_dates(column: str, props: list[dict]) -> bool:
    """A column named like a time, or whose first values are dates / ISO date strings."""
    if column.lower() in _DATE_LIKE_NAMES:
        return True
    values = [p.get(column) for p in props[:20] if not _is_missing(p.get(column))]
    return bool(values) and all(
        isinstance(v, datetime | date | np.datetime64) or
        (isinstance(v, str) and _ISO_DATE.match(v.strip()) is not None) for v in values)


def _split_name(v: object) -> str | None:
    if _is_missing(v):
        return None
    s = str(v).strip().lower()
    return {"training": "train", "validation": "val", "valid": "val", "testing": "test"}.get(s, s)


def _to_wgs84(geoms: np.ndarray, crs: str | None) -> np.ndarray:
    if crs is None or CRS.from_user_input(crs) == CRS.from_user_input(WGS84):
        return geoms
    out = np.empty(len(geoms), dtype=object)
    present = np.array([g is not None for g in geoms], dtype=bool)
    if present.any():
        # One vectorized transform for all geometries (reproject_geometry accepts arrays).
        out[present] = reproject_geometry(geoms[present], crs, WGS84)
    return out


def _geojson_features(path: Path) -> tuple[list[dict], str | None]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LabelError(f"{path}: cannot read GeoJSON ({e})") from e
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "FeatureCollection":
        feats = data.get("features") or []
    elif kind == "Feature":
        feats = [data]
    else:
        raise LabelError(f"{path}: expected a GeoJSON Feature or FeatureCollection, got {kind!r}")
    # RFC 7946 GeoJSON is lon/lat; honour the pre-2016 "crs" member when a file still has one.
    crs = ((data.get("crs") or {}).get("properties") or {}).get("name")
    return feats, crs


def _shapes(feats: list[dict]) -> np.ndarray:
    out = np.empty(len(feats), dtype=object)
    for i, f in enumerate(feats):
        g = f.get("geometry")
        try:
            out[i] = shape(g) if g else None
        except (ValueError, TypeError, AttributeError, KeyError):
            out[i] = None  # reported as an empty geometry by check_labels
    return out
