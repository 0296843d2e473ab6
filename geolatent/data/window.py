"""Windows: one pixel grid (CRS, pixel bounds, resolution) and one time range.

Pixel bounds live on a *global* grid of the CRS: pixel column ``col = x / resolution`` and pixel
row ``row = -y / resolution`` (rows grow southwards, as in images). Two windows of the same CRS and
resolution therefore always share pixel edges, and tiling an area is integer arithmetic.

Windows come from a bounding box (:meth:`Window.from_bounds`), an area tiled on a grid
(:func:`tile_windows`, :func:`windows_from_bbox`, :func:`windows_from_geojson`) or label geometries
(:func:`windows_from_labels`). The CRS defaults to the UTM zone of the location.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from geolatent.modalities import BASE_RESOLUTION_M

WGS84 = "EPSG:4326"
DEFAULT_TILE_SIZE = 256

TimeLike = datetime | date | str


def to_utc_naive(value: TimeLike) -> datetime:
    """A naive UTC datetime from a datetime, date or ISO string (aware values are converted)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value
    return datetime(value.year, value.month, value.day)


def year_range(year: int) -> tuple[datetime, datetime]:
    """``[Jan 1 of year, Jan 1 of year + 1)``: the time range of one pretraining year."""
    return datetime(year, 1, 1), datetime(year + 1, 1, 1)


def months_in_range(start: datetime, end: datetime) -> list[tuple[int, int]]:
    """Calendar months ``(year, month 1-12)`` that intersect ``[start, end)``, in order."""
    months = []
    y, m = start.year, start.month
    while datetime(y, m, 1) < end:
        months.append((y, m))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return months


def utm_crs_for(lon: float, lat: float) -> str:
    """EPSG code (``"EPSG:326zz"`` north / ``"EPSG:327zz"`` south) of the UTM zone at a point."""
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


def _crs_tag(crs: str) -> str:
    epsg = CRS.from_user_input(crs).to_epsg()
    if epsg is not None:
        return f"epsg{epsg}"
    # Names must be stable across processes and runs (resume): a content hash, not hash().
    return "crs" + hashlib.sha1(CRS.from_user_input(crs).to_wkt().encode()).hexdigest()[:8]


def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


def reproject_geometry(geom: BaseGeometry, src_crs: str, dst_crs: str) -> BaseGeometry:
    """Reproject a shapely geometry; coordinates are transformed vertex by vertex (vectorized)."""
    if CRS.from_user_input(src_crs) == CRS.from_user_input(dst_crs):
        return geom
    tr = _transformer(src_crs, dst_crs)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


@dataclass(frozen=True)
class Window:
    """A grid of ``height x width`` pixels in ``crs`` at ``resolution`` metres, and a time range.

    Attributes:
        crs: target CRS, e.g. ``"EPSG:32631"``.
        pixel_bounds: ``(col_min, row_min, col_max, row_max)`` on the global grid of the CRS
            (``col = x / resolution``, ``row = -y / resolution``), max exclusive.
        time_range: ``(start, end)`` naive UTC datetimes, end exclusive.
        resolution: pixel size in CRS units (metres for UTM).
        name: a stable identifier (derived from the grid and time range when not given); used
            for output file names and for resuming builds.
        origin: ``(x, y)`` in CRS units of global pixel ``(0, 0)``'s corner: ``(0, 0)`` (the
            default) is the global grid; another origin puts the window on the grid of a given
            raster (pixel edges at ``origin + k * resolution``, e.g. an input file's own grid).
    """

    crs: str
    pixel_bounds: tuple[int, int, int, int]
    time_range: tuple[datetime, datetime]
    resolution: float = BASE_RESOLUTION_M
    name: str = field(default="", compare=False)
    origin: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        c0, r0, c1, r1 = (int(v) for v in self.pixel_bounds)
        if c1 <= c0 or r1 <= r0:
            raise ValueError(f"empty window pixel bounds {self.pixel_bounds}")
        start, end = (to_utc_naive(t) for t in self.time_range)
        if end <= start:
            raise ValueError(f"window time range must have start < end, got {start} .. {end}")
        if self.resolution <= 0:
            raise ValueError(f"resolution must be positive, got {self.resolution}")
        object.__setattr__(self, "pixel_bounds", (c0, r0, c1, r1))
        object.__setattr__(self, "time_range", (start, end))
        object.__setattr__(self, "origin", (float(self.origin[0]), float(self.origin[1])))
        if not self.name:
            grid = "" if self.origin == (0.0, 0.0) else f"o{self.origin[0]:g}_{self.origin[1]:g}_"
            tag = (
                f"{_crs_tag(self.crs)}_{self.resolution:g}m_{grid}{c0}_{r0}_{c1 - c0}x{r1 - r0}_"
                f"{start:%Y%m%d}-{end:%Y%m%d}"
            )
            object.__setattr__(self, "name", tag)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_bounds(
        cls,
        bounds: Sequence[float],
        *,
        time_range: tuple[TimeLike, TimeLike],
        bounds_crs: str = WGS84,
        crs: str | None = None,
        resolution: float = BASE_RESOLUTION_M,
        name: str = "",
    ) -> Window:
        """The smallest grid-aligned window covering ``bounds``.

        Args:
            bounds: ``(xmin, ymin, xmax, ymax)`` in ``bounds_crs`` (lon/lat degrees by default).
            time_range: ``(start, end)``, end exclusive.
            crs: target CRS; the UTM zone of the bounds' centre when None.
            resolution: pixel size in metres.
        """
        xmin, ymin, xmax, ymax = (float(v) for v in bounds)
        if crs is None:
            cx, cy = _transformer(bounds_crs, WGS84).transform((xmin + xmax) / 2, (ymin + ymax) / 2)
            crs = utm_crs_for(cx, cy)
        geom = reproject_geometry(
            shapely.segmentize(box(xmin, ymin, xmax, ymax), max(xmax - xmin, ymax - ymin) / 16),
            bounds_crs,
            crs,
        )
        return cls.from_projected_bounds(
            crs, geom.bounds, time_range=time_range, resolution=resolution, name=name
        )

    @classmethod
    def from_projected_bounds(
        cls,
        crs: str,
        bounds: Sequence[float],
        *,
        time_range: tuple[TimeLike, TimeLike],
        resolution: float = BASE_RESOLUTION_M,
        name: str = "",
    ) -> Window:
        """The smallest grid-aligned window covering ``(xmin, ymin, xmax, ymax)`` in CRS units."""
        xmin, ymin, xmax, ymax = bounds
        c0, c1 = math.floor(xmin / resolution), math.ceil(xmax / resolution)
        r0, r1 = math.floor(-ymax / resolution), math.ceil(-ymin / resolution)
        return cls(crs, (c0, r0, max(c1, c0 + 1), max(r1, r0 + 1)), time_range, resolution, name)

    @classmethod
    def from_center(
        cls,
        lon: float,
        lat: float,
        size_px: int,
        *,
        time_range: tuple[TimeLike, TimeLike],
        crs: str | None = None,
        resolution: float = BASE_RESOLUTION_M,
        name: str = "",
    ) -> Window:
        """A ``size_px x size_px`` window whose centre is the pixel corner nearest to (lon, lat)."""
        crs = crs or utm_crs_for(lon, lat)
        x, y = _transformer(WGS84, crs).transform(lon, lat)
        c = round(x / resolution) - size_px // 2
        r = round(-y / resolution) - size_px // 2
        return cls(crs, (c, r, c + size_px, r + size_px), time_range, resolution, name)

    # -- geometry -----------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.pixel_bounds[2] - self.pixel_bounds[0]

    @property
    def height(self) -> int:
        return self.pixel_bounds[3] - self.pixel_bounds[1]

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        return self.height, self.width

    @property
    def transform(self) -> Affine:
        """Affine pixel -> CRS transform of the window's top-left corner."""
        c0, r0 = self.pixel_bounds[:2]
        res = self.resolution
        x0, y0 = self.origin
        return Affine(res, 0.0, x0 + c0 * res, 0.0, -res, y0 - r0 * res)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` in CRS units."""
        c0, r0, c1, r1 = self.pixel_bounds
        res = self.resolution
        x0, y0 = self.origin
        return x0 + c0 * res, y0 - r1 * res, x0 + c1 * res, y0 - r0 * res

    def geometry(self, crs: str | None = None) -> BaseGeometry:
        """The window footprint as a polygon, in its own CRS or reprojected to ``crs``."""
        poly = shapely.segmentize(
            box(*self.bounds), max(self.width, self.height) * self.resolution / 8
        )
        return poly if crs is None else reproject_geometry(poly, self.crs, crs)

    @property
    def bounds_wgs84(self) -> tuple[float, float, float, float]:
        """Footprint bounding box ``(lon_min, lat_min, lon_max, lat_max)`` in degrees."""
        return tuple(self.geometry(WGS84).bounds)  # type: ignore[return-value]

    @property
    def latlon(self) -> tuple[float, float]:
        """``(lat, lon)`` of the window centre in degrees (the sample-file ``latlon``)."""
        xmin, ymin, xmax, ymax = self.bounds
        lon, lat = _transformer(self.crs, WGS84).transform((xmin + xmax) / 2, (ymin + ymax) / 2)
        return float(lat), float(lon)

    @property
    def months(self) -> list[tuple[int, int]]:
        """Calendar months ``(year, month 1-12)`` of the time range."""
        return months_in_range(*self.time_range)

    # -- derived windows ----------------------------------------------------------------------
    def crop(self, row_off: int, col_off: int, height: int, width: int) -> Window:
        """Sub-window at pixel offsets ``(row_off, col_off)`` of size ``height x width``."""
        if (
            row_off < 0
            or col_off < 0
            or row_off + height > self.height
            or col_off + width > self.width
        ):
            raise ValueError(f"crop ({row_off}, {col_off}, {height}, {width}) outside {self.shape}")
        c0, r0 = self.pixel_bounds[0] + col_off, self.pixel_bounds[1] + row_off
        return Window(self.crs, (c0, r0, c0 + width, r0 + height), self.time_range, self.resolution,
                      origin=self.origin)

    def split(self, size: int) -> list[tuple[int, int, Window]]:
        """``(row_off, col_off, window)`` for each ``size x size`` block, row-major.

        The window's height and width must be multiples of ``size`` (a 256 px tile gives four
        128 px samples).
        """
        if self.height % size or self.width % size:
            raise ValueError(f"window {self.shape} is not a multiple of {size} px")
        return [
            (r, c, self.crop(r, c, size, size))
            for r in range(0, self.height, size)
            for c in range(0, self.width, size)
        ]

    # -- serialization ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {
            "name": self.name,
            "crs": self.crs,
            "pixel_bounds": list(self.pixel_bounds),
            "resolution": self.resolution,
            "time_range": [t.isoformat() for t in self.time_range],
        }
        if self.origin != (0.0, 0.0):  # global-grid windows keep their exact earlier records
            d["origin"] = list(self.origin)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Window:
        return cls(
            d["crs"], tuple(d["pixel_bounds"]), tuple(d["time_range"]), d["resolution"], d["name"],
            tuple(d.get("origin", (0.0, 0.0))),
        )


# -- areas -> windows ---------------------------------------------------------------------------
def _utm_zone_parts(geom_wgs84: BaseGeometry) -> list[tuple[str, BaseGeometry]]:
    """Split a lon/lat geometry into the parts that fall in each UTM zone, with that zone's CRS."""
    lon_min, _, lon_max, _ = geom_wgs84.bounds
    z0 = int(math.floor((lon_min + 180.0) / 6.0))
    z1 = int(math.floor((min(lon_max, 179.999999) + 180.0) / 6.0))
    parts = []
    for z in range(z0, z1 + 1):
        band = box(-180.0 + 6.0 * z, -90.0, -180.0 + 6.0 * (z + 1), 90.0)
        part = geom_wgs84.intersection(band) if z0 != z1 else geom_wgs84
        if part.is_empty:
            continue
        c = part.representative_point()
        parts.append((utm_crs_for(-180.0 + 6.0 * z + 3.0, c.y), part))
    return parts


def tile_windows(
    geometry: BaseGeometry,
    *,
    time_range: tuple[TimeLike, TimeLike],
    geometry_crs: str = WGS84,
    crs: str | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    resolution: float = BASE_RESOLUTION_M,
) -> list[Window]:
    """Grid-aligned ``tile_size`` px windows that intersect ``geometry``.

    Tiles sit at multiples of ``tile_size`` on the global pixel grid, so two runs over
    overlapping areas produce the same tiles (and the same window names). With ``crs=None`` each
    part of the area is tiled in its own UTM zone.
    """
    if geometry.is_empty:
        return []
    if crs is not None:
        targets = [(crs, geometry, geometry_crs)]
    else:
        geom_wgs84 = reproject_geometry(geometry, geometry_crs, WGS84)
        targets = [(zone_crs, part, WGS84) for zone_crs, part in _utm_zone_parts(geom_wgs84)]
    step = tile_size * resolution
    windows: list[Window] = []
    for target_crs, geom, src_crs in targets:
        xmin, ymin, xmax, ymax = geom.bounds
        seg = max(xmax - xmin, ymax - ymin, 1e-9) / 64
        projected = reproject_geometry(shapely.segmentize(geom, seg), src_crs, target_crs)
        xmin, ymin, xmax, ymax = projected.bounds
        tx = np.arange(math.floor(xmin / step), math.ceil(xmax / step))
        ty = np.arange(math.floor(-ymax / step), math.ceil(-ymin / step))
        gx, gy = np.meshgrid(tx, ty)
        gx, gy = gx.ravel(), gy.ravel()
        boxes = shapely.box(gx * step, -(gy + 1) * step, (gx + 1) * step, -gy * step)
        keep = shapely.intersects(boxes, projected)
        if projected.area > 0:  # for areas, touching along an edge only does not count
            keep &= ~shapely.touches(boxes, projected)
        for i, j in zip(gx[keep], gy[keep], strict=True):
            c0, r0 = int(i) * tile_size, int(j) * tile_size
            windows.append(
                Window(target_crs, (c0, r0, c0 + tile_size, r0 + tile_size), time_range, resolution)
            )
    return windows


def windows_from_bbox(
    bbox: Sequence[float],
    *,
    time_range: tuple[TimeLike, TimeLike],
    bbox_crs: str = WGS84,
    crs: str | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    resolution: float = BASE_RESOLUTION_M,
) -> list[Window]:
    """Tile a bounding box ``(xmin, ymin, xmax, ymax)`` (lon/lat by default).

    See :func:`tile_windows`.
    """
    return tile_windows(
        box(*bbox),
        time_range=time_range,
        geometry_crs=bbox_crs,
        crs=crs,
        tile_size=tile_size,
        resolution=resolution,
    )


def read_geojson_geometries(geojson: str | Path | dict) -> list[tuple[BaseGeometry, dict]]:
    """``(geometry, properties)`` of every feature in a GeoJSON file path or mapping (lon/lat)."""
    data = geojson
    if not isinstance(geojson, dict):
        data = json.loads(Path(geojson).read_text())
    kind = data.get("type")
    if kind == "FeatureCollection":
        feats = data["features"]
    elif kind == "Feature":
        feats = [data]
    else:  # a bare geometry
        feats = [{"type": "Feature", "geometry": data, "properties": {}}]
    out = []
    for f in feats:
        if f.get("geometry") is None:
            continue
        out.append((shape(f["geometry"]), dict(f.get("properties") or {})))
    return out


def windows_from_geojson(
    geojson: str | Path | dict,
    *,
    time_range: tuple[TimeLike, TimeLike],
    crs: str | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    resolution: float = BASE_RESOLUTION_M,
) -> list[Window]:
    """Tile the union of a GeoJSON's geometries (lon/lat, RFC 7946); see :func:`tile_windows`."""
    geoms = [g for g, _ in read_geojson_geometries(geojson)]
    if not geoms:
        return []
    return tile_windows(
        shapely.union_all(geoms),
        time_range=time_range,
        crs=crs,
        tile_size=tile_size,
        resolution=resolution,
    )


def windows_from_labels(
    geometries: Iterable[BaseGeometry],
    *,
    time_range: tuple[TimeLike, TimeLike],
    size_px: int = 64,
    crs: str | None = None,
    resolution: float = BASE_RESOLUTION_M,
) -> list[Window]:
    """One window per label geometry (lon/lat): centred on it, at least ``size_px`` wide.

    A geometry larger than ``size_px`` gets a window that covers it, grown to a square.
    """
    windows = []
    for geom in geometries:
        c = geom.centroid
        target = crs or utm_crs_for(c.x, c.y)
        xmin, ymin, xmax, ymax = reproject_geometry(geom, WGS84, target).bounds
        extent = math.ceil(max(xmax - xmin, ymax - ymin) / resolution)
        windows.append(
            Window.from_center(
                c.x,
                c.y,
                max(size_px, extent + 1),
                time_range=time_range,
                crs=target,
                resolution=resolution,
            )
        )
    return windows
