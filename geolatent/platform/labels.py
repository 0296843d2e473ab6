"""Reading labels: GeoJSON, GeoPackage, Shapefile, CSV and OlmoEarth Studio exports.

A label is a geometry (point or polygon, any CRS in the file; held here in lon/lat, EPSG:4326)
with a class (string or integer) or a numeric value, and optionally a time range. Everything is
read into one :class:`LabelSet` of parallel arrays; :func:`check_labels` then reports every label
that cannot be used (invalid or empty geometry, missing value, bad time range, coordinates that
are not lon/lat) with its feature number, and drops it.

Studio exports (``annotation_features.geojson`` + ``annotation_task_features.geojson``): each
annotation holds ``oe_labels: {field: value}``, ``oe_annotations_task_id`` and optionally
``oe_start_time`` / ``oe_end_time``; each task polygon holds ``oe_start_time`` / ``oe_end_time``.
An annotation without its own times takes its task's; task polygons become the windows of
segmentation tasks (see :mod:`geolatent.platform.windows`).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import shapely
from pyproj import CRS
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from geolatent.data.window import WGS84, reproject_geometry, to_utc_naive
from geolatent.platform.classes import canonical_value

LabelKind = Literal["class", "value"]
LabelFormat = Literal["auto", "geojson", "gpkg", "shapefile", "csv", "studio"]

STUDIO_FEATURES = "annotation_features.geojson"
STUDIO_TASKS = "annotation_task_features.geojson"

_FIELD_GUESSES = (
    "label", "class", "category", "class_name", "classname", "lulc", "value", "target",
)
_DATE_LIKE_NAMES = ("start_time", "start", "start_date", "date", "time", "datetime",
                    "observation_time", "acquired", "end_time", "end", "end_date", "year")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ].*)?$")
_LAT_GUESSES = ("lat", "latitude", "y")
_LON_GUESSES = ("lon", "lng", "long", "longitude", "x")
NaT = np.datetime64("NaT", "s")


class LabelError(ValueError):
    """Labels that cannot be used at all; the message says what to change."""


@dataclass(frozen=True)
class LabelProblem:
    """One label that was dropped (``error``) or looks suspicious (``warning``).

    Attributes:
        kind: ``invalid_geometry``, ``empty_geometry``, ``missing_label``, ``bad_value``,
            ``bad_time``, ``bad_coordinates``, ``empty_class``, ``outside_imagery``,
            ``no_valid_input``, ``split_overlap``, ``unknown_class``.
        row: feature number in the source file (0-based), or -1 when it is not one feature.
        message: what is wrong, in words a user can act on.
        severity: ``error`` (the label / window is not used) or ``warning``.
    """

    kind: str
    row: int
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"feature {self.row}: " if self.row >= 0 else ""
        return f"[{self.severity}] {self.kind}: {where}{self.message}"


@dataclass(frozen=True)
class StudioTask:
    """An OlmoEarth Studio annotation task: an area (lon/lat) and its time range."""

    id: str
    geometry: BaseGeometry
    start: datetime | None
    end: datetime | None


@dataclass
class LabelSet:
    """Labels as parallel arrays of length N (geometries in lon/lat degrees, EPSG:4326).

    Attributes:
        geometries: object ``[N]`` shapely geometries (None where the file had none).
        values: object ``[N]``: class values (``str`` / ``int``) or floats for ``kind="value"``;
            None where missing.
        start, end: ``datetime64[s]`` ``[N]`` label time range (NaT when not given).
        rows: int64 ``[N]`` feature number in the source file.
        kind: ``class`` or ``value``.
        splits: object ``[N]`` explicit split names (``train`` / ``val`` / ``test``) or None.
        groups: object ``[N]`` Studio task id of each label, or None.
        tasks: Studio tasks by id.
        class_names: label value -> display name found in the file (Studio ``src_labels``).
        source: where the labels came from.
        problems: problems found while reading (unparseable times, ...).
    """

    geometries: np.ndarray
    values: np.ndarray
    start: np.ndarray
    end: np.ndarray
    rows: np.ndarray
    kind: LabelKind
    splits: np.ndarray | None = None
    groups: np.ndarray | None = None
    tasks: dict[str, StudioTask] = field(default_factory=dict)
    class_names: dict[str | int, str] = field(default_factory=dict)
    source: str = ""
    problems: list[LabelProblem] = field(default_factory=list)
    time_column: str | None = None

    def __len__(self) -> int:
        return len(self.geometries)

    def subset(self, keep: np.ndarray) -> LabelSet:
        """The labels where ``keep`` (bool ``[N]`` or indices) selects them."""
        return replace(
            self,
            geometries=self.geometries[keep],
            values=self.values[keep],
            start=self.start[keep],
            end=self.end[keep],
            rows=self.rows[keep],
            splits=None if self.splits is None else self.splits[keep],
            groups=None if self.groups is None else self.groups[keep],
            problems=list(self.problems),
        )

    @property
    def is_point(self) -> np.ndarray:
        """bool ``[N]``: the geometry is a point (or multipoint)."""
        types = shapely.get_type_id(self.geometries)
        return (types == 0) | (types == 4)


# -- parsing helpers ----------------------------------------------------------------------------
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


# -- readers ------------------------------------------------------------------------------------
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


def read_geojson_labels(path: str | Path, *, kind: LabelKind = "class", field: str | None = None,
                        time_column: str | None = None, end_time_column: str | None = None,
                        split_field: str | None = None) -> LabelSet:
    """Labels from a GeoJSON FeatureCollection (lon/lat, RFC 7946)."""
    path = Path(path)
    feats, crs = _geojson_features(path)
    geoms = _to_wgs84(_shapes(feats), crs)
    props = [dict(f.get("properties") or {}) for f in feats]
    return _assemble(geoms, props, kind=kind, field_name=field, time_column=time_column,
                     end_time_column=end_time_column, split_field=split_field, source=str(path))


def read_ogr_labels(path: str | Path, *, kind: LabelKind = "class", field: str | None = None,
                    time_column: str | None = None, end_time_column: str | None = None,
                    split_field: str | None = None, layer: str | int | None = None) -> LabelSet:
    """Labels from a GeoPackage or Shapefile (any CRS; read with pyogrio)."""
    try:
        from pyogrio import raw
    except ImportError as e:  # pragma: no cover - pyogrio is a dependency
        raise LabelError("reading GeoPackage / Shapefile labels needs `pip install pyogrio`") from e
    path = Path(path)
    try:
        meta, _, wkb, columns = raw.read(path, layer=layer, datetime_as_string=True)
    except Exception as e:  # pyogrio raises its own DataSourceError / DataLayerError
        raise LabelError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
    geoms = np.asarray(shapely.from_wkb(wkb, on_invalid="ignore"), dtype=object) \
        if wkb is not None else np.full(len(columns[0]) if columns else 0, None, dtype=object)
    names = list(meta["fields"])
    props = [dict(zip(names, vals, strict=True)) for vals in zip(*columns, strict=True)] \
        if columns else [{} for _ in range(len(geoms))]
    props = [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in p.items()}
             for p in props]
    geoms = _to_wgs84(geoms, meta.get("crs") or WGS84)
    return _assemble(geoms, props, kind=kind, field_name=field, time_column=time_column,
                     end_time_column=end_time_column, split_field=split_field, source=str(path))


def read_csv_labels(path: str | Path, *, kind: LabelKind = "class", field: str | None = None,
                    time_column: str | None = None, end_time_column: str | None = None,
                    split_field: str | None = None, lat_field: str | None = None,
                    lon_field: str | None = None, crs: str = WGS84) -> LabelSet:
    """Point labels from a CSV with latitude / longitude columns (or x / y in ``crs``)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
            columns = list(rows[0].keys()) if rows else []
    except OSError as e:
        raise LabelError(f"{path}: cannot read CSV ({e})") from e
    if not rows:
        raise LabelError(f"{path}: the CSV has no rows")
    lat_col = _pick(columns, lat_field, _LAT_GUESSES, "latitude", required=True)
    lon_col = _pick(columns, lon_field, _LON_GUESSES, "longitude", required=True)

    def number(v: str | None) -> float:
        try:
            return float(v) if v is not None and v.strip() else np.nan
        except ValueError:
            return np.nan

    x = np.array([number(r.get(lon_col)) for r in rows])
    y = np.array([number(r.get(lat_col)) for r in rows])
    geoms = np.asarray(shapely.points(x, y), dtype=object)
    geoms[np.isnan(x) | np.isnan(y)] = None
    props = [{k: v for k, v in r.items() if k not in (lat_col, lon_col)} for r in rows]
    return _assemble(_to_wgs84(geoms, crs), props, kind=kind, field_name=field,
                     time_column=time_column, end_time_column=end_time_column,
                     split_field=split_field, source=str(path))


def read_studio_export(path: str | Path, *, kind: LabelKind = "class", field: str | None = None,
                       tasks_path: str | Path | None = None) -> LabelSet:
    """An OlmoEarth Studio export: a folder holding both files, or the annotations file.

    Args:
        path: ``annotation_features.geojson`` or the folder holding it.
        kind: ``class`` or ``value``.
        field: the ``oe_labels`` key to use (needed when annotations hold several).
        tasks_path: ``annotation_task_features.geojson`` (default: next to the annotations).
    """
    path = Path(path)
    feats_path = path / STUDIO_FEATURES if path.is_dir() else path
    tasks_path = Path(tasks_path) if tasks_path else feats_path.with_name(STUDIO_TASKS)
    feats, crs = _geojson_features(feats_path)
    tasks: dict[str, StudioTask] = {}
    problems: list[LabelProblem] = []
    if tasks_path.exists():
        task_feats, task_crs = _geojson_features(tasks_path)
        task_geoms = _to_wgs84(_shapes(task_feats), task_crs)
        for i, (f, g) in enumerate(zip(task_feats, task_geoms, strict=True)):
            p = f.get("properties") or {}
            tid = str(p.get("oe_annotations_task_id") or p.get("es_annotations_task_id") or i)
            try:
                start = _parse_time(p.get("oe_start_time", p.get("es_start_time")))
                end = _parse_time(p.get("oe_end_time", p.get("es_end_time")))
            except (ValueError, TypeError):
                problems.append(LabelProblem("bad_time", -1, f"task {tid}: unparseable times"))
                start = end = None
            if g is None or g.is_empty:
                problems.append(LabelProblem("empty_geometry", -1, f"task {tid} has no geometry"))
                continue
            tasks[tid] = StudioTask(tid, g, start, end)

    props, label_keys, names = [], set(), {}
    for f in feats:
        p = dict(f.get("properties") or {})
        labels = p.get("oe_labels")
        if labels is None and "es_label" in p:  # the pre-oe_ export schema
            labels = {"label": p["es_label"]}
        labels = labels if isinstance(labels, Mapping) else {}
        label_keys |= set(labels)
        src = p.get("src_labels") if isinstance(p.get("src_labels"), Mapping) else {}
        props.append({"labels": labels, "src": src, "props": p})
    if field is None:
        if len(label_keys) != 1:
            raise LabelError(
                f"{feats_path}: annotations hold oe_labels keys {sorted(label_keys)}; name the "
                "one to train on (labels.field)"
            )
        field = next(iter(label_keys))
    rows = np.arange(len(feats), dtype=np.int64)
    values = _label_values([p["labels"].get(field) for p in props], kind)
    for v, p in zip(values, props, strict=True):
        name = p["src"].get(field)
        if kind == "class" and v is not None and not _is_missing(name):
            names[v] = str(name)  # Studio stores integer codes; src_labels keep the names
    groups = np.array(
        [str(p["props"].get("oe_annotations_task_id") or p["props"].get("es_annotations_task_id")
             or "") or None for p in props], dtype=object)

    def time_of(key: str) -> list[object]:
        out = []
        for p, gid in zip(props, groups, strict=True):
            own = p["props"].get(f"oe_{key}_time", p["props"].get(f"es_{key}_time"))
            task = tasks.get(gid) if gid else None
            out.append(own if not _is_missing(own) else getattr(task, key, None) if task else None)
        return out

    start = _times(time_of("start"), rows, "start time", problems)
    end = _times(time_of("end"), rows, "end time", problems)
    unknown = sorted({g for g in groups if g and tasks and g not in tasks})
    if unknown:
        problems.append(LabelProblem("unknown_task", -1, f"annotations refer to tasks not in "
                                     f"{tasks_path.name}: {unknown[:5]}", "warning"))
    return LabelSet(
        geometries=_to_wgs84(_shapes(feats), crs),
        values=values,
        start=start,
        end=end,
        rows=rows,
        kind=kind,
        groups=groups,
        tasks=tasks,
        class_names=names,
        source=str(feats_path),
        problems=problems,
    )


def detect_format(path: str | Path) -> LabelFormat:
    """The label format from the path (a Studio export is recognised by its file names)."""
    p = Path(path)
    if p.is_dir():
        if (p / STUDIO_FEATURES).exists():
            return "studio"
        shp = sorted(p.glob("*.shp"))
        if len(shp) == 1:
            return "shapefile"
        raise LabelError(f"{p}: a folder must hold {STUDIO_FEATURES} or a single .shp file")
    if p.name == STUDIO_FEATURES:
        return "studio"
    suffix = p.suffix.lower()
    formats: dict[str, LabelFormat] = {
        ".geojson": "geojson", ".json": "geojson", ".gpkg": "gpkg", ".shp": "shapefile",
        ".csv": "csv", ".zip": "shapefile",
    }
    if suffix not in formats:
        raise LabelError(f"{p}: unknown label format {suffix!r}; use GeoJSON, GeoPackage, "
                         "Shapefile, CSV or a Studio export")
    return formats[suffix]


def read_labels(
    path: str | Path,
    *,
    kind: LabelKind = "class",
    format: LabelFormat = "auto",
    field: str | None = None,
    time_column: str | None = None,
    end_time_column: str | None = None,
    split_field: str | None = None,
    layer: str | int | None = None,
    lat_field: str | None = None,
    lon_field: str | None = None,
    csv_crs: str = WGS84,
) -> LabelSet:
    """Read labels from any supported file (see the module docstring).

    Args:
        path: the label file (or a Studio export folder).
        kind: ``class`` (string or integer classes) or ``value`` (numbers, for regression).
        format: ``auto`` detects it from the path.
        field: the label column (``oe_labels`` key for Studio); guessed when None.
        time_column: the column holding each label's time (an instant, or the start of a range
            with ``end_time_column``). Never guessed (default: none, labels take the windows'
            time range); a date-like column left unused is reported as ``unused_time_column``.
        split_field: optional column with an explicit ``train`` / ``val`` / ``test`` split.
        layer: GeoPackage layer (name or index; default the first).
        lat_field, lon_field, csv_crs: CSV coordinate columns and their CRS.

    Returns:
        A :class:`LabelSet` (not yet checked: call :func:`check_labels`).
    """
    path = Path(path)
    if not path.exists():
        raise LabelError(f"label file {path} does not exist")
    fmt = detect_format(path) if format == "auto" else format
    common = dict(kind=kind, field=field)
    if fmt == "studio":
        return read_studio_export(path, **common)  # type: ignore[arg-type]
    times = dict(time_column=time_column, end_time_column=end_time_column, split_field=split_field)
    if fmt == "geojson":
        return read_geojson_labels(path, **common, **times)  # type: ignore[arg-type]
    if fmt in ("gpkg", "shapefile"):
        return read_ogr_labels(path, **common, **times, layer=layer)  # type: ignore[arg-type]
    return read_csv_labels(path, **common, **times, lat_field=lat_field,  # type: ignore[arg-type]
                           lon_field=lon_field, crs=csv_crs)


# -- checking -----------------------------------------------------------------------------------
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
