"""Output grids: the pixel grid a run's rasters are read onto and its maps are written on.

One rule for every command that turns imagery into a raster (``embed`` and ``predict``):

* ``--align-to FILE``: the grid of that raster (its CRS, transform and size);
* ``--crs`` / ``--resolution``: a grid of that CRS and pixel size, aligned to the CRS's global
  grid (pixel edges at multiples of the resolution), covering the inputs;
* otherwise the inputs' own grid when they all share one 10 m grid (a single-grid file
  source: the map lands exactly on the input's pixels), else the 10 m grid of the UTM zone of
  the inputs' centre covering them all (other CRSs and 20 / 30 / 60 m bands are warped by the
  data layer, :func:`geolatent.data.materialize.read_scene`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime, timedelta

import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from geolatent.data.window import Window, utm_crs_for
from geolatent.modalities import BASE_RESOLUTION_M


@dataclass(frozen=True)
class OutputGrid:
    """A north-up grid: ``crs``, ``transform`` (square pixels) and ``width x height`` pixels."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    def __post_init__(self) -> None:
        t = self.transform
        if t.b != 0 or t.d != 0 or t.a <= 0 or not math.isclose(t.a, -t.e, rel_tol=1e-9):
            raise ValueError(f"the output grid needs square north-up pixels, got {tuple(t)[:6]}")

    @property
    def resolution(self) -> float:
        """Pixel size in CRS units."""
        return float(self.transform.a)

    @classmethod
    def of_raster(cls, path: str | os.PathLike) -> OutputGrid:
        """The grid of an existing raster (``--align-to``)."""
        with rasterio.open(path) as src:
            if src.crs is None:
                raise ValueError(f"{path}: no CRS; an aligned grid needs a georeferenced raster")
            return cls(src.crs, src.transform, src.width, src.height)

    @classmethod
    def covering(cls, bounds: list[tuple[CRS, tuple[float, float, float, float]]],
                 crs: str | None = None, resolution: float | None = None) -> OutputGrid:
        """The smallest grid of ``crs`` (default: UTM zone of the bounds' centre) and
        ``resolution`` (default 10 m) on the CRS's global grid covering every ``(crs, bounds)``."""
        res = float(resolution or BASE_RESOLUTION_M)
        if res <= 0:
            raise ValueError(f"resolution must be positive, got {resolution}")
        if crs is None:
            lon = [transform_bounds(c, "EPSG:4326", *b, densify_pts=21) for c, b in bounds]
            cx = (min(b[0] for b in lon) + max(b[2] for b in lon)) / 2
            cy = (min(b[1] for b in lon) + max(b[3] for b in lon)) / 2
            crs = utm_crs_for(cx, cy)
        target = CRS.from_user_input(crs)
        proj = [transform_bounds(c, target, *b, densify_pts=21) for c, b in bounds]
        xmin, ymin = min(b[0] for b in proj), min(b[1] for b in proj)
        xmax, ymax = max(b[2] for b in proj), max(b[3] for b in proj)
        c0, c1 = math.floor(xmin / res), math.ceil(xmax / res)
        r0, r1 = math.floor(-ymax / res), math.ceil(-ymin / res)
        return cls(target, Affine(res, 0.0, c0 * res, 0.0, -res, -r0 * res),
                   max(c1 - c0, 1), max(r1 - r0, 1))

    def window(self, row_off: int, col_off: int, height: int, width: int,
               when: datetime | None = None) -> Window:
        """The data-layer window of pixels ``[row_off, row_off + height) x [col_off, ...)`` of
        this grid (offsets may reach outside it), for one day ``when`` (time is not used by
        :func:`~geolatent.data.materialize.read_scene`)."""
        start = when or datetime(2000, 1, 1)
        return Window(self.crs.to_string(), (col_off, row_off, col_off + width, row_off + height),
                      (start, start + timedelta(days=1)), self.resolution,
                      origin=(self.transform.c, self.transform.f))
