"""Reading an area of interest: any vector file, GeoJSON mapping, geometry or box, in any CRS.

The one AOI reader of every command (``predict``, ``imagery``, ``archive``, the app): the result
is always one lon/lat (EPSG:4326) geometry, and a bad area is an :class:`AreaError` that names
the file and what to change.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import shapely
from pyproj import CRS
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from geolatent.data.window import WGS84, read_geojson_geometries, reproject_geometry

AreaLike = str | Path | BaseGeometry | tuple[float, float, float, float] | dict


class AreaError(ValueError):
    """An area (AOI) that cannot be used; the message names the file and what to change."""


def read_area(area: AreaLike, crs: str | None = None) -> BaseGeometry:
    """The area as one lon/lat (EPSG:4326) geometry.

    Args:
        area: a vector file (GeoJSON, GeoPackage, Shapefile), a GeoJSON mapping, a shapely
            geometry or a ``(xmin, ymin, xmax, ymax)`` box.
        crs: the CRS of the area's coordinates when the area does not carry one (shapely
            geometries, boxes, GeoJSON without a legacy ``crs`` member). A CRS stored in the
            file (GeoPackage / Shapefile CRS, GeoJSON ``crs`` member) wins over nothing, and
            contradicting it is an error. Default: lon/lat.

    Raises:
        AreaError: unreadable or empty area, coordinates outside lon/lat range (e.g. metres
            read as degrees), or a CRS that contradicts the file's.
    """
    where = "the area"
    file_crs: str | None = None
    if isinstance(area, BaseGeometry):
        geom = area
    elif isinstance(area, tuple | list) and len(area) == 4:
        geom = box(*(float(v) for v in area))
        where = f"the box {tuple(area)}"
    elif isinstance(area, dict):
        geom, file_crs = _geojson_area(area, where)
    else:
        path = Path(area)
        where = f"area file {path}"
        if not path.exists():
            raise AreaError(f"{where} does not exist")
        if path.suffix.lower() in (".geojson", ".json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, ValueError) as e:
                raise AreaError(f"{where} is not readable GeoJSON ({e})") from e
            geom, file_crs = _geojson_area(data, where)
        else:
            from pyogrio import raw

            try:
                meta, _, wkb, _ = raw.read(path, columns=[])
            except Exception as e:  # pyogrio raises its own DataSourceError family
                raise AreaError(f"{where} is not a readable vector file (GeoJSON, GeoPackage, "
                                f"Shapefile): {e}") from e
            file_crs = meta.get("crs")
            geom = shapely.union_all(shapely.from_wkb(wkb)) if wkb is not None and len(wkb) \
                else None
    if geom is None or geom.is_empty:
        raise AreaError(f"{where} holds no geometry (the prediction area is empty)")
    if file_crs is not None and crs is not None and \
            CRS.from_user_input(file_crs) != CRS.from_user_input(crs):
        raise AreaError(f"{where} declares CRS {file_crs} but {crs} was given; drop the "
                        "given CRS or fix the file")
    src_crs = file_crs or crs or WGS84
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if CRS.from_user_input(src_crs) != CRS.from_user_input(WGS84):
        geom = reproject_geometry(shapely.segmentize(geom, _segment(geom)), src_crs, WGS84)
        if not np.isfinite(geom.bounds).all():
            raise AreaError(f"{where}: its coordinates do not transform from {src_crs} to "
                            "lon/lat; check the CRS of the area")
    else:
        xmin, ymin, xmax, ymax = geom.bounds
        if not (-180 <= xmin <= xmax <= 180 and -90 <= ymin <= ymax <= 90):
            hint = ("these look like projected coordinates (metres); give the area's CRS "
                    "(--aoi-crs in the CLI, crs= in Python) or store it in the file"
                    if max(abs(xmin), abs(xmax), abs(ymin), abs(ymax)) > 1000 else
                    "longitude must be in -180..180 and latitude in -90..90 (lon/lat order)")
            raise AreaError(f"{where} has bounds {tuple(round(v, 4) for v in geom.bounds)} "
                            f"outside lon/lat range: {hint}")
    if geom.area == 0:  # points / lines: predict the pixels they touch, with a minimal buffer
        geom = geom.buffer(1e-6)
    return geom


def _segment(geom: BaseGeometry) -> float:
    """Vertex spacing (in the geometry's units) that keeps a reprojected outline faithful."""
    xmin, ymin, xmax, ymax = geom.bounds
    return max(xmax - xmin, ymax - ymin, 1e-9) / 64


def _geojson_area(data: object, where: str) -> tuple[BaseGeometry | None, str | None]:
    """The union of a GeoJSON's geometries and its legacy ``crs`` member (None when absent)."""
    if not isinstance(data, dict) or data.get("type") not in _GEOJSON_TYPES:
        kind = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise AreaError(f"{where} is not a GeoJSON geometry, Feature or FeatureCollection "
                        f"(type {kind!r})")
    try:
        geoms = [g for g, _ in read_geojson_geometries(data)]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise AreaError(f"{where} holds an invalid GeoJSON geometry ({e})") from e
    # RFC 7946 GeoJSON is lon/lat; files written before 2016 may still name their CRS.
    crs = ((data.get("crs") or {}).get("properties") or {}).get("name")
    return (shapely.union_all(geoms) if geoms else None), crs


_GEOJSON_TYPES = ("FeatureCollection", "Feature", "Point", "MultiPoint", "LineString",
                  "MultiLineString", "Polygon", "MultiPolygon", "GeometryCollection")
