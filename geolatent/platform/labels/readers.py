"""The label readers (GeoJSON, GeoPackage/Shapefile through OGR, CSV) and :func:`read_labels`,
which detects the format and dispatches (Studio exports go to :mod:`.studio`)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import shapely

from geolatent.data.window import WGS84
from geolatent.platform.labels.parsing import (
    _assemble,
    _geojson_features,
    _pick,
    _shapes,
    _to_wgs84,
)
from geolatent.platform.labels.studio import read_studio_export
from geolatent.platform.labels.types import (
    _LAT_GUESSES,
    _LON_GUESSES,
    STUDIO_FEATURES,
    LabelError,
    LabelFormat,
    LabelKind,
    LabelSet,
)


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
