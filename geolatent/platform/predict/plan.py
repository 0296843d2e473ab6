"""What a prediction run will do, before it does it: output kind, sources, fingerprint, and the
size sanity check (area, tiles, output bytes, a rough time) that guards long runs."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import rasterio
import shapely
from affine import Affine
from pydantic import TypeAdapter
from rasterio.crs import CRS

from geolatent.data.config import SourceConfig
from geolatent.data.io.grid import OutputGrid
from geolatent.data.run import check_free_space
from geolatent.data.sources import Source, open_sources
from geolatent.data.window import WGS84, reproject_geometry, utm_crs_for
from geolatent.platform.area import PredictionPlan, read_area
from geolatent.platform.bundle import FinetunedModel, bundle_modalities
from geolatent.platform.windows import CLASS_TASKS

#: Above this area (km²) a run needs ``confirm=True`` (CLI ``--yes``); settable per call.
DEFAULT_MAX_AREA_KM2 = 2_500.0
#: A deliberately rough throughput for the printed time estimate (Nano on 2 CPU cores,
#: BENCHMARKS.md "area prediction"); the real speed depends on the model, crop and machine.
ROUGH_KM2_PER_S = 0.5


def output_kind(fm: FinetunedModel) -> str:
    """``class``, ``value`` or ``embedding``."""
    if fm.task.type in CLASS_TASKS:
        return "class"
    return "embedding" if fm.task.type == "embedding" else "value"


def output_bands(fm: FinetunedModel, kind: str) -> int:
    """Bands of the output raster."""
    return fm.model_config.embedding_size if kind == "embedding" else 1


def end_exclusive(end: str) -> str:
    """A date-only end (``2024-12-31``) is inclusive: the range runs to the next day."""
    text = str(end).strip()
    if len(text) == 10:  # YYYY-MM-DD
        return (date.fromisoformat(text) + timedelta(days=1)).isoformat()
    return text


def open_prediction_sources(fm: FinetunedModel, sources) -> list[Source]:
    """The imagery sources: given ones (configs or opened), else those the model records."""
    if sources is None:
        if not fm.sources:
            raise ValueError("the model folder records no imagery sources; pass sources")
        sources = fm.sources
    if sources and isinstance(sources[0], Source):
        return list(sources)
    adapter = TypeAdapter(SourceConfig)
    return open_sources([adapter.validate_python(s) if isinstance(s, dict) else s
                         for s in sources])


def imagery_for_model(imagery: str, model: str | os.PathLike, aoi, start: str, end: str,
                      **overrides) -> list[Source]:
    """``predict --imagery``: the imagery's collections feeding the fine-tuned model's own
    input modalities (its ``bundle.json``), searched over the area. ``overrides`` are
    ``stac_api`` fields for every source (``url`` for a mirror, ...)."""
    from geolatent.data.imagery import imagery_source, imagery_sources

    imagery_source(imagery)  # an unknown name is reported before the model folder is read
    return imagery_sources(imagery, aoi, start, end, modalities=bundle_modalities(model),
                           **overrides)


GRID_SNAP = 1e-3
"""Relative pixel-size difference up to which a map takes its input's grid (origin, size)."""


def single_grid(sources: list[Source], resolution: float) -> OutputGrid | None:
    """The grid every scene file of ``sources`` shares (CRS, transform, size), when the sources
    are local files on one grid of the model's ``resolution``: a map of such imagery is put on
    its grid (pixel for pixel). None otherwise (the map goes on the CRS's global grid)."""
    files = sorted({f for s in sources for sc in s.scenes for f in sc.files})
    if not files or any("://" in f for f in files):
        return None
    grids = set()
    for f in files:
        try:
            with rasterio.open(f) as src:
                if src.crs is None:
                    return None
                grids.add((src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height))
        except rasterio.errors.RasterioError:
            return None  # the data layer reports unreadable scenes itself
        if len(grids) > 1:
            return None
    ((wkt, t, w, h),) = grids
    t = Affine(*t)
    if t.b or t.d or t.a <= 0 or t.e >= 0:
        return None  # rotated or south-up: the CRS's global grid
    if max(abs(t.a - resolution), abs(-t.e - resolution)) > GRID_SNAP * resolution:
        return None  # another resolution: the map keeps the model's
    # Exports cut to a bounding box often have pixels a hair off the nominal size (the eo-learn
    # patch: 9.995 x 9.997 m). The map keeps the input's origin and pixel count with exact
    # nominal pixels: at most GRID_SNAP of a pixel per pixel of drift (0.5 m over 100 px).
    square = Affine(resolution, 0.0, t.c, 0.0, -resolution, t.f)
    return OutputGrid(CRS.from_wkt(wkt), square, w, h)


def model_key(fm: FinetunedModel) -> str:
    """Identifies the weights in the plan fingerprint (path, size and mtime of the weights)."""
    if fm.path is None:
        return str(id(fm))
    st = (Path(fm.path) / "weights.safetensors").stat()
    return f"{Path(fm.path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


@dataclass(frozen=True)
class RunEstimate:
    """What a run will produce, printed before it starts.

    Attributes:
        area_km2: the area (NaN for a lon/lat output CRS).
        tiles: work items.
        width, height, bands: output raster size.
        output_bytes: uncompressed output size (the COG writer's temporary file needs it).
        work_bytes: the work store's tile cores (same size again, freed at the end).
        seconds: a rough time at :data:`ROUGH_KM2_PER_S`.
    """

    area_km2: float
    tiles: int
    width: int
    height: int
    bands: int
    output_bytes: int
    work_bytes: int
    seconds: float

    def describe(self) -> str:
        gib = (self.output_bytes + self.work_bytes) / 2**30
        area = "?" if math.isnan(self.area_km2) else f"{self.area_km2:,.1f}"
        return (f"area {area} km², {self.tiles} tiles, output {self.width} x {self.height} x "
                f"{self.bands}, needs ~{gib:.2f} GiB of disk while running, roughly "
                f"{_duration(self.seconds)}")


def _duration(s: float) -> str:
    if math.isnan(s):
        return "unknown time"
    if s < 120:
        return f"{s:.0f} s"
    return f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def estimate_run(plan: PredictionPlan, bands: int, itemsize: int) -> RunEstimate:
    """Sizes of the run of ``plan`` with ``bands`` output bands of ``itemsize`` bytes."""
    raw = plan.width * plan.height * bands * itemsize
    area = plan.area_km2
    return RunEstimate(area, len(plan.tiles), plan.width, plan.height, bands, raw, raw,
                       area / ROUGH_KM2_PER_S if not math.isnan(area) else float("nan"))


def rough_estimate(area, resolution: float, tile: int, out_scale: int, bands: int,
                   itemsize: int) -> RunEstimate:
    """The sizes of a run over ``area`` from its outline in its UTM zone, without planning its
    tiles (planning 20° x 20° takes minutes): what a huge area is refused with at once."""
    geom = read_area(area)
    c = geom.centroid
    x0, y0, x1, y1 = geom.bounds
    outline = shapely.segmentize(geom, max(x1 - x0, y1 - y0, 1e-9) / 64)
    projected = reproject_geometry(outline, WGS84, utm_crs_for(c.x, c.y))
    px0, py0, px1, py1 = projected.bounds
    w, h = ((px1 - px0) / resolution, (py1 - py0) / resolution)
    tiles = math.ceil(w / tile) * math.ceil(h / tile)
    width, height = math.ceil(w / out_scale), math.ceil(h / out_scale)
    raw = width * height * bands * itemsize
    km2 = projected.area / 1e6
    return RunEstimate(km2, tiles, width, height, bands, raw, raw, km2 / ROUGH_KM2_PER_S)


def check_area_size(est: RunEstimate, *, max_area_km2: float, confirm: bool) -> None:
    """Refuse a run above ``max_area_km2`` unless confirmed."""
    if not confirm and not math.isnan(est.area_km2) and est.area_km2 > max_area_km2:
        raise ValueError(
            f"the area is {est.area_km2:,.0f} km² (limit {max_area_km2:,.0f} km²): "
            f"{est.describe()}. Confirm the size (CLI --yes, Python confirm=True) or raise the "
            "limit (CLI --max-area-km2, Python max_area_km2)"
        )


def check_run_size(est: RunEstimate, out_path: str | os.PathLike, *, max_area_km2: float,
                   confirm: bool) -> None:
    """Refuse a run above ``max_area_km2`` unless confirmed, or one whose output cannot fit on
    the disk (checked against the estimate before any work)."""
    check_area_size(est, max_area_km2=max_area_km2, confirm=confirm)
    check_free_space(out_path, est.output_bytes + est.work_bytes, "this prediction")
