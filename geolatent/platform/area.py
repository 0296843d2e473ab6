"""Prediction areas: reading the area, the output grid, tiles, crops and blending weights.

Grid: the output raster lives on the data layer's global pixel grid of one CRS (default: the
UTM zone of the area's centre; inputs in other zones or CRSs are warped onto it by the data
layer, so areas crossing UTM zones give one seamless raster). Pixel columns / rows below are
*global* (``col = x / resolution``).

Crops: the model runs on ``crop x crop`` pixel crops whose origins sit at multiples of
``stride`` on the global grid. A pixel's prediction is the weighted blend of every crop
covering it, so it depends only on the crop grid, never on how the area is cut into tiles:
tiles (``tile`` px cores on the global grid) are independent work items and no seam can
appear at their edges. Each tile materializes its core plus the reach of the crops that touch
it (up to ``crop - stride`` px around it).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import shapely
from affine import Affine
from shapely.geometry.base import BaseGeometry

from geolatent.data.area import AreaError, AreaLike, read_area  # noqa: F401 (re-exported)
from geolatent.data.io.grid import OutputGrid
from geolatent.data.window import (
    WGS84,
    Window,
    reproject_geometry,
    tile_windows,
    utm_crs_for,
)

BlendMode = Literal["linear", "trim"]
@dataclass(frozen=True)
class AreaTile:
    """One work item: an output core and the window that feeds it.

    Attributes:
        index: tile number (stable for a plan; names the part file).
        core: ``(col0, row0, col1, row1)`` global input-grid pixels this tile writes.
        window: the data-layer window to materialize (core plus the crops' reach).
    """

    index: int
    core: tuple[int, int, int, int]
    window: Window


@dataclass(frozen=True)
class PredictionPlan:
    """Everything about where predictions go (see the module docstring).

    Attributes:
        crs, resolution: the grid (input pixels of ``resolution`` m).
        bounds: ``(col0, row0, col1, row1)`` global input pixels of the output raster.
        out_scale: input pixels per output pixel (1; ``p`` for embedding maps).
        crop, stride, tile: sizes in input pixels.
        area_wkb: the area in ``crs`` (WKB), nodata outside it.
        time_range: ``(start, end)`` ISO strings.
        tiles: the work items, row-major.
        origin: CRS coordinates of global pixel ``(0, 0)``: ``(0, 0)`` for the CRS's global
            grid, a raster's corner for a map on that raster's grid (``--align-to``).
    """

    crs: str
    resolution: float
    bounds: tuple[int, int, int, int]
    out_scale: int
    crop: int
    stride: int
    tile: int
    area_wkb: bytes
    time_range: tuple[str, str]
    tiles: tuple[AreaTile, ...]
    origin: tuple[float, float] = (0.0, 0.0)
    blend: BlendMode = "linear"

    @property
    def width(self) -> int:
        """Output raster width in output pixels."""
        return (self.bounds[2] - self.bounds[0]) // self.out_scale

    @property
    def height(self) -> int:
        return (self.bounds[3] - self.bounds[1]) // self.out_scale

    @property
    def transform(self) -> Affine:
        """Output raster transform (pixels of ``resolution * out_scale``)."""
        r = self.resolution
        q = self.out_scale
        x0, y0 = self.origin
        return Affine(r * q, 0.0, x0 + self.bounds[0] * r, 0.0, -r * q, y0 - self.bounds[1] * r)

    @property
    def area(self) -> BaseGeometry:
        return shapely.from_wkb(self.area_wkb)

    @property
    def area_km2(self) -> float:
        return float(self.area.area) / 1e6 if self.crs != WGS84 else float("nan")

    def fingerprint(self, model_key: str = "") -> str:
        """Hash of the plan and the model: parts of another plan are never reused."""
        payload = json.dumps({
            "crs": self.crs, "res": self.resolution, "bounds": self.bounds, "q": self.out_scale,
            "crop": self.crop, "stride": self.stride, "tile": self.tile,
            "area": hashlib.sha256(self.area_wkb).hexdigest(), "time": self.time_range,
            "model": model_key,
            **({"origin": self.origin} if self.origin != (0.0, 0.0) else {}),
            **({"blend": self.blend} if self.blend != "linear" else {}),
        }, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def crop_origins(self, tile: AreaTile) -> tuple[np.ndarray, np.ndarray]:
        """Global (row, col) origins of the crops feeding ``tile`` (each int64 ``[N]``)."""
        c0, r0, c1, r1 = tile.core
        rows = _origins(r0, r1, self.crop, self.stride, self.blend)
        cols = _origins(c0, c1, self.crop, self.stride, self.blend)
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        rr, cc = rr.ravel(), cc.ravel()
        # Crops that do not touch the area cannot give it a prediction: skip them.
        r = self.resolution
        x0, y0 = self.origin
        boxes = shapely.box(x0 + cc * r, y0 - (rr + self.crop) * r, x0 + (cc + self.crop) * r,
                            y0 - rr * r)
        hit = shapely.intersects(boxes, self.area)
        return rr[hit], cc[hit]


def _origins(lo: int, hi: int, crop: int, stride: int, blend: BlendMode = "linear") -> np.ndarray:
    """Crop origins (multiples of ``stride``) of the crops whose weighted block (see
    :func:`blend_weights`: the whole crop for ``linear``, its central ``stride`` block for
    ``trim``) covers some of pixels ``[lo, hi)``: crops that give those pixels no weight are
    neither materialized nor run."""
    margin, width = ((crop - stride) // 2, stride) if blend == "trim" else (0, crop)
    first = (lo - margin - width) // stride + 1  # smallest k: k * stride + margin + width > lo
    last = (hi - margin - 1) // stride  # largest k: k * stride + margin < hi
    return np.arange(first, last + 1, dtype=np.int64) * stride


def plan_prediction(
    area: AreaLike,
    time_range: tuple[str, str],
    *,
    crop: int,
    stride: int | None = None,
    tile: int = 256,
    out_scale: int = 1,
    crs: str | None = None,
    resolution: float = 10.0,
    grid: OutputGrid | None = None,
    clip_to_grid: bool = True,
    origin: tuple[float, float] | None = None,
    blend: BlendMode = "linear",
) -> PredictionPlan:
    """Plan predictions over ``area``.

    Args:
        area: see :func:`read_area`.
        time_range: ``(start, end)`` ISO dates, end exclusive.
        crop: model input side in pixels (a multiple of ``out_scale``).
        stride: crop spacing in pixels (default ``crop // 2``, rounded to ``out_scale``).
        tile: tile core side in pixels (rounded up to a multiple of ``stride``).
        out_scale: input pixels per output pixel.
        crs: output CRS (default: the UTM zone of the area's centre).
        resolution: input pixel size in metres.
        grid: put the map on this raster grid instead (its CRS, resolution and pixel edges;
            ``crs`` and ``resolution`` are then ignored): its pixels are the grid's pixels
            (``q`` of them per output pixel).
        clip_to_grid: with ``grid``, the map covers only the area's part of the grid (else
            the whole area, on the grid's pixel edges).
        origin: with ``grid``, count tiles and crops from this CRS point (global pixel
            ``(0, 0)``) instead of the grid's edges nearest ``(0, 0)``: ``embed`` puts it a
            context margin above / left of its input grid's corner, so tiles start at the corner.
        blend: how overlapping crops are weighted (:func:`blend_weights`); ``trim`` needs only
            the crops whose central block touches a tile, so tiles materialize less.
    """
    q = int(out_scale)
    if crop < 1 or crop % q:
        raise ValueError(f"crop {crop} must be a positive multiple of {q}")
    stride = stride or max(q, (crop // 2) // q * q)
    if stride % q or not 0 < stride <= crop:
        raise ValueError(f"stride {stride} must be a multiple of {q} in 1..crop ({crop})")
    tile = max(stride, math.ceil(tile / stride) * stride)
    geom = read_area(area)
    given_origin, origin = origin, (0.0, 0.0)
    if grid is not None and given_origin is not None:
        crs, resolution = grid.crs.to_string(), grid.resolution
        origin = (float(given_origin[0]), float(given_origin[1]))
    elif grid is not None:
        crs, resolution = grid.crs.to_string(), grid.resolution
        # The grid's pixel edges, as the origin nearest (0, 0): a grid on the CRS's global grid
        # gets origin (0, 0) and so exactly the plan (tiles, crops) of the global grid.
        origin = (_edge_offset(grid.transform.c, resolution),
                  _edge_offset(grid.transform.f, resolution))
        corner = (round((grid.transform.c - origin[0]) / resolution),
                  round((origin[1] - grid.transform.f) / resolution))
        if corner[0] % q or corner[1] % q:  # output pixels (q x q) start at the grid corner
            origin = (grid.transform.c, grid.transform.f)
    elif crs is None:
        c = geom.centroid
        crs = utm_crs_for(c.x, c.y)
    xmin, ymin, xmax, ymax = geom.bounds
    seg = max(xmax - xmin, ymax - ymin, 1e-9) / 64
    projected = reproject_geometry(shapely.segmentize(geom, seg), WGS84, crs)
    px, py0, px1, py1 = projected.bounds
    x0, y0 = origin
    # Round outwards only past a pixel edge by more than 1/1000 pixel (1 cm at 10 m): an area
    # drawn on a grid's edges (a raster's bounds, through lon/lat and back) gets exactly that
    # grid's pixels.
    eps = 1e-3
    c0 = math.floor((px - x0) / resolution + eps) // q * q
    r0 = math.floor((y0 - py1) / resolution + eps) // q * q
    c1 = -(-math.ceil((px1 - x0) / resolution - eps) // q) * q
    r1 = -(-math.ceil((y0 - py0) / resolution - eps) // q) * q
    if grid is not None and clip_to_grid:  # only the grid's own pixels
        gc0 = round((grid.transform.c - x0) / resolution)
        gr0 = round((y0 - grid.transform.f) / resolution)
        c0, r0 = max(c0, gc0), max(r0, gr0)
        c1 = min(c1, gc0 + grid.width // q * q)
        r1 = min(r1, gr0 + grid.height // q * q)
        if c1 <= c0 or r1 <= r0:
            raise ValueError("the prediction area does not overlap the grid of the imagery it "
                             f"is aligned to ({grid.crs.to_string()}, origin {x0:.2f}, "
                             f"{y0:.2f}, {grid.width} x {grid.height} px): check the area (and "
                             "its CRS), the sources and --align-to")
    c1, r1 = max(c1, c0 + q), max(r1, r0 + q)
    start, end = (str(t) for t in time_range)
    if origin == (0.0, 0.0) and given_origin is None:
        cores = [w.pixel_bounds for w in tile_windows(
            projected, time_range=(start, end), geometry_crs=crs, crs=crs, tile_size=tile,
            resolution=resolution)]
    else:  # tiles of the aligned grid that touch the area
        cores = [(c, r, c + tile, r + tile) for r in range(r0, r1, tile)
                 for c in range(c0, c1, tile)
                 if projected.intersects(shapely.box(x0 + c * resolution,
                                                     y0 - (r + tile) * resolution,
                                                     x0 + (c + tile) * resolution,
                                                     y0 - r * resolution))]
    tiles = []
    for tc0, tr0, tc1, tr1 in cores:
        core = (max(tc0, c0), max(tr0, r0), min(tc1, c1), min(tr1, r1))
        if core[0] >= core[2] or core[1] >= core[3]:
            continue
        cols = _origins(core[0], core[2], crop, stride, blend)
        rows = _origins(core[1], core[3], crop, stride, blend)
        ext_c0, ext_c1 = int(cols[0]), int(cols[-1]) + crop
        ext_r0, ext_r1 = int(rows[0]), int(rows[-1]) + crop
        window = Window(crs, (ext_c0, ext_r0, ext_c1, ext_r1), (start, end), resolution,
                        origin=origin)
        tiles.append(AreaTile(len(tiles), core, window))
    if not tiles:
        raise ValueError("the prediction area covers no pixel")
    return PredictionPlan(crs, resolution, (c0, r0, c1, r1), q, crop, stride, tile,
                          shapely.to_wkb(projected), (start, end), tuple(tiles), origin, blend)


def _edge_offset(coord: float, resolution: float) -> float:
    """``coord`` modulo ``resolution`` in ``[0, resolution)``, 0 within a micro-pixel of an
    edge of the global grid."""
    off = coord - math.floor(coord / resolution) * resolution
    return 0.0 if min(off, resolution - off) < 1e-6 * resolution else off


def blend_weights(crop: int, stride: int, mode: BlendMode = "linear") -> np.ndarray:
    """float32 ``[crop, crop]`` weight of each crop pixel in the blend (output units).

    ``linear``: a pyramid peaking at the centre (edge pixels, which saw the least context,
    count least; a small floor keeps pixels seen only by crop edges). ``trim``: 1 on the
    central ``stride x stride`` block, 0 elsewhere (every pixel from exactly one crop).
    """
    i = np.arange(crop, dtype=np.float64)
    if mode == "trim":
        m = (crop - stride) // 2
        w1 = ((i >= m) & (i < m + stride)).astype(np.float64)
    elif mode == "linear":
        w1 = 1.0 - np.abs(2.0 * (i + 0.5) / crop - 1.0) + 1e-3
    else:
        raise ValueError(f"unknown blend mode {mode!r}; use linear or trim")
    return np.outer(w1, w1).astype(np.float32)
