"""GeoTIFFs in, an embedding GeoTIFF out: area prediction with a plain model over file inputs.

``embed_geotiffs`` validates the files (:class:`~geolatent.inference.file_inputs.FileInputs`:
band names, grid, time axis), turns them into data-layer sources and runs the same plan / tile /
run / write code as ``predict`` (:mod:`geolatent.platform.predict`) with a plain model, whose
output is the embedding map. Nothing here reads pixels or cuts tiles itself.

The output grid is the input grid coarsened by the patch size ``p``: output pixel ``(i, j)`` is
the model's feature-map vector of input patch ``(i, j)`` (input pixels ``[i*p, (i+1)*p)`` x
``[j*p, (j+1)*p)``), so the output transform is the input transform scaled by ``p`` (pixels of
``10*p`` m) in the same CRS. When the input size is not a multiple of ``p``, the last
``H mod p`` rows / ``W mod p`` columns do not fill a whole patch and are not embedded: the output
is ``floor(H/p) x floor(W/p)``.

Tiling: the plan's tiles start at the input grid's corner; each is one ``trim`` crop of
``tile + 2 * overlap`` input pixels whose central ``tile`` block (the tile's core) is kept, so
the model sees the core plus an ``overlap`` margin on every side. Pixels past the grid's full
patches are missing (-99999), which the model masks, so every crop has the same square shape
(v1 expects square inputs). Tiles whose core has no valid input are not run through the model.
A raster small enough for one crop (see
:func:`~geolatent.platform.predict.plan.embedding_tiling`) is embedded in one piece and equals
``model.embed`` on the whole array. Otherwise results are close to, not equal to, the untiled
ones, whatever the margin: the encoder attends globally within a crop and v1's spatial
encodings count positions from the crop's corner, so every token depends on its crop. Measured
with random Nano weights on generated scenes: mean cosine similarity to the untiled feature map
0.89-0.98.

Nodata: inputs' nodata / NaN become -99999 before the model; output pixels where the model had
no valid input token are NaN, the output's nodata value.

Resume, safety and size (the run driver, :mod:`geolatent.data.run`): finished tile cores go to
the work store ``OUT.work`` with a completion marker; a rerun after a kill skips finished tiles
and gives a byte-identical output (tiles of another model, input or tiling are discarded). The
COG is assembled from the store and published atomically; one run per output at a time (a
lock); an output that is one of the inputs is refused; the area, output size, tiles and a
rough time are reported before the run and an area above ``max_area_km2`` needs ``confirm``.

Memory: one crop batch (``batch_size x (tile + 2*overlap)^2 x T x C`` float32) plus the
model's activations for it, GDAL's block cache (capped at ``gdal_cache_mb``) and the output
tile; never the whole raster.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
import torch
from affine import Affine
from rasterio.crs import CRS

from geolatent.data.io.grid import OutputGrid
from geolatent.data.run import check_not_input
from geolatent.data.window import WGS84, reproject_geometry
from geolatent.inference.file_inputs import FileInputs, ModalitySummary, RasterInput
from geolatent.modalities import get_modality
from geolatent.platform.area import PredictionPlan, plan_prediction
from geolatent.platform.predict.plan import (
    DEFAULT_MAX_AREA_KM2,
    DEFAULT_TOKEN_BUDGET,
    EncoderModel,
    embedding_tiling,
)
from geolatent.platform.predict.run import RunInputs, RunSettings, prepare_model, run_plan
from geolatent.runtime import resolve_device
from geolatent.units import Fix


@dataclass(frozen=True)
class EmbedResult:
    """Summary of an :func:`embed_geotiffs` run."""

    path: Path
    width: int
    height: int
    count: int
    crs: CRS
    transform: Affine
    patch_size: int
    tile_size: int
    overlap: int
    timestamps: np.ndarray
    modalities: tuple[str, ...]
    inputs: dict[str, ModalitySummary]
    tiles_total: int
    tiles_embedded: int
    seconds: float


ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(tiles_done, tiles_total)`` after every tile."""


def embed_geotiffs(
    model,
    inputs: Mapping[str, Sequence[RasterInput]],
    out_path: str | os.PathLike,
    *,
    patch_size: int = 4,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    align: str = "date",
    progress: ProgressCallback | None = None,
    tags: Mapping[str, object] | None = None,
    blocksize: int = 128,
    gdal_cache_mb: int = 128,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    check_resolution: bool = True,
    grid: OutputGrid | None = None,
    crs: str | None = None,
    resolution: float | None = None,
    input_flags: Mapping[str, str] | None = None,
    max_area_km2: float = DEFAULT_MAX_AREA_KM2,
    confirm: bool = False,
    report: Callable[[str], None] | None = None,
) -> EmbedResult:
    """Embed GeoTIFFs into a cloud-optimized embedding GeoTIFF.

    Args:
        model: a geolatent model (``geolatent.load_model(...)``), run in the precision it has.
        inputs: per modality the input files (one per timestep, or stacks), any CRS and
            resolution. Raw units: Sentinel-2 L2A DN (0-10000), Sentinel-1 dB, Landsat L1 DN.
        out_path: the output ``.tif``: ``D = model.embedding_dim`` float32 bands at ``10*p`` m,
            same CRS, transform = input grid transform scaled by ``p``, nodata NaN.
        patch_size: p in 1..8.
        tile_size: tile core size in input pixels (a multiple of p); default: see
            :func:`~geolatent.platform.predict.plan.embedding_tiling` (the whole raster when
            it fits ``token_budget``).
        overlap: context margin in input pixels on each side (a multiple of p); default 1/8
            of the model crop per side, 0 when the whole raster is one tile.
        batch_size: crops per model call.
        device: run the model there (the model is moved); default: where the model is.
        align: ``"date"`` or ``"month"``; how dates become timesteps (see :class:`FileInputs`).
        progress: optional callback ``(tiles_done, tiles_total)``.
        tags: extra metadata tags for the output (e.g. the checkpoint used).
        blocksize: COG block size of the output (128: a 128 px block of 128 float32 bands
            is already 8 MiB, so larger blocks make random reads of a few pixels costly).
        gdal_cache_mb: GDAL block cache cap while reading and writing.
        token_budget: tokens per model crop when choosing a default tile; with ``batch_size``
            it bounds the model's memory.
        check_resolution: see :class:`FileInputs`.
        grid, crs, resolution: the input grid the embedding is computed on (its transform
            scaled by ``p`` is the output's): the inputs' own grid when they share a 10 m one,
            else the 10 m UTM grid covering them; ``grid`` (e.g.
            ``OutputGrid.of_raster(path)`` for ``--align-to``) or ``crs`` / ``resolution``
            choose another. Inputs off the grid are warped by the data layer.
        input_flags: modality -> the CLI flag that gave it, so unit errors name the flag
            (default: they name Python's ``check_units``).
        max_area_km2, confirm: an area above ``max_area_km2`` needs ``confirm=True``.
        report: called with one line (area, tiles, output size, rough time) before the run.

    Returns:
        An :class:`EmbedResult`.
    """
    start = time.perf_counter()
    p = int(patch_size)
    if not 1 <= p <= 8:
        raise ValueError(f"patch_size must be in 1..8, got {patch_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out_path = Path(out_path)
    check_not_input(out_path, (ri.path for files in inputs.values() for ri in files), "output")
    with rasterio.Env(GDAL_CACHEMAX=gdal_cache_mb):
        files = FileInputs(inputs, align=align, check_resolution=check_resolution, grid=grid,
                           crs=crs, resolution=resolution)
    num_bandsets = sum(get_modality(m).num_bandsets for m in files.modalities)
    tile, margin = embedding_tiling(files.height, files.width, p, len(files.dates),
                                    num_bandsets, tile_size, overlap, token_budget)
    g = files.grid
    em = EncoderModel.of(model, p, crop=tile + 2 * margin)
    em.inputs.resolution_m = g.resolution
    dev = next(model.parameters()).device if device is None else resolve_device(device)
    fm, precision = prepare_model(em, dev, None)
    plan = plan_embedding(g, p, tile, margin, files.timeline.time_range)
    gc0, gr0 = margin, margin  # the grid's corner in the plan's pixels
    fix = {m: Fix("cli", flag=input_flags.get(m)) if input_flags is not None else Fix("python")
           for m in files.modalities}
    run_tags = {
        "modalities": ",".join(files.modalities),
        "dates": ",".join(d.isoformat() for d in files.dates),
        "tile_size": tile,
        "overlap": margin,
        **(tags or {}),
    }
    settings = RunSettings(batch_size=batch_size, progress=progress,
                           gdal_cache_mb=gdal_cache_mb, max_area_km2=max_area_km2,
                           confirm=confirm, report=report, command="embed")
    read = RunInputs(files.timeline, (gc0, gr0, gc0 + g.width, gr0 + g.height), fix, run_tags,
                     blocksize)
    res = run_plan(fm, plan, files.sources, out_path, device=dev, precision=precision,
                   settings=settings, inputs=read, started=start)
    return EmbedResult(
        path=out_path,
        width=res.width,
        height=res.height,
        count=fm.embedding_dim,
        crs=CRS.from_user_input(res.crs),
        transform=res.transform,
        patch_size=p,
        tile_size=tile,
        overlap=margin,
        timestamps=files.timeline.timestamps,
        modalities=tuple(files.modalities),
        inputs=files.summary(),
        tiles_total=res.tiles_total,
        tiles_embedded=res.tiles_with_data,
        seconds=time.perf_counter() - start,
    )


def plan_embedding(grid: OutputGrid, patch_size: int, tile: int, overlap: int,
                   time_range: tuple[str, str]) -> PredictionPlan:
    """The prediction plan of an embedding map of ``grid``'s full patches.

    Tiles (``tile`` px cores) start at the grid's corner; each is one ``trim`` crop of
    ``tile + 2 * overlap`` px. In the plan's pixels the grid's corner is ``(overlap,
    overlap)``: the plan counts from a margin above / left of it, so the first crop reaches
    ``overlap`` px beyond the corner.
    """
    g = grid
    origin = (g.transform.c - overlap * g.resolution, g.transform.f + overlap * g.resolution)
    box = shapely.box(*_grid_bounds(g))
    area = reproject_geometry(shapely.segmentize(box, g.resolution * 8), g.crs.to_string(), WGS84)
    return plan_prediction(area, time_range, crop=tile + 2 * overlap, stride=tile, tile=tile,
                           out_scale=patch_size, grid=g, origin=origin, blend="trim")


def _grid_bounds(g: OutputGrid) -> tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` of the grid in its CRS."""
    x0, y1 = g.transform.c, g.transform.f
    return x0, y1 - g.height * g.resolution, x0 + g.width * g.resolution, y1
