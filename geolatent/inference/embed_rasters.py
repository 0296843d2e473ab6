"""GeoTIFFs in, an embedding GeoTIFF out: tiled, streaming, memory-bounded.

The output grid is the input grid coarsened by the patch size ``p``: output pixel ``(i, j)`` is
the model's feature-map vector of input patch ``(i, j)`` (input pixels ``[i*p, (i+1)*p)`` x
``[j*p, (j+1)*p)``), so the output transform is the input transform scaled by ``p`` (pixels of
``10*p`` m) in the same CRS. When the input size is not a multiple of ``p``, the last
``H mod p`` rows / ``W mod p`` columns do not fill a whole patch and are not embedded: the output
is ``floor(H/p) x floor(W/p)``.

Tiling: the output is cut into square tiles of ``tile_size / p`` output pixels (the *core*).
For each tile the model sees the core plus an ``overlap`` margin of input pixels on every side,
read with windowed reads; the margin's embeddings are discarded and only the core is written.
Windows reaching past the raster edge are padded with the missing value (-99999), which the
model masks, so every tile has the same square shape (v1 expects square inputs). Tiles whose
core has no valid input are not run through the model. A raster small enough for one window
(see :func:`choose_tiling`) is embedded in one piece and equals ``model.embed`` on the whole
array. Otherwise results are close to, not equal to, the untiled ones, whatever the margin:
the encoder attends globally within a window and v1's spatial encodings count positions from
the window's corner, so every token depends on its window. Measured with random Nano weights on
generated scenes: mean cosine similarity to the untiled feature map 0.89-0.98.

Nodata: inputs' nodata / NaN become -99999 before the model; output pixels where the model had
no valid input token (feature map NaN) are NaN, the output's nodata value.

Resume and safety (:mod:`geolatent.data.run`): each finished tile core goes to the work store
``OUT.work`` with a completion marker; a rerun after a kill skips finished tiles and gives a
byte-identical output (tiles of another model, input or tiling are discarded). The COG is
assembled from the store and published atomically; one run per output at a time (a lock), and
an output that is one of the inputs is refused.

Memory: one batch of tiles (``batch_size x (tile + 2*overlap)^2 x T x C`` float32) plus the
model's activations for it, GDAL's block cache (capped at ``gdal_cache_mb``) and the output
tile; never the whole raster.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS

from geolatent.data.io.cog import COGWriter
from geolatent.data.io.grid import OutputGrid
from geolatent.data.run import (
    OutputLock,
    WorkStore,
    check_not_input,
    drop_empty_work_on_error,
    work_dir_for,
)
from geolatent.inference.raster_io import ModalitySummary, RasterInput, RasterStack
from geolatent.modalities import MISSING_VALUE, get_modality
from geolatent.units import Fix, check_values

DEFAULT_TOKEN_BUDGET = 4096
"""Default cap on tokens per model window ((window/p)^2 x T x bandsets) when ``tile_size`` is
not given. Attention work per window grows with the square of its token count, so the total
work grows linearly with the budget; 4096 is about twice the v1 pretraining budget (2250)."""


@dataclass(frozen=True)
class Tile:
    """One tile of the output grid.

    Attributes:
        out_row, out_col: upper-left output pixel of the core.
        out_height, out_width: core size in output pixels (smaller at the raster's edges).
        in_row, in_col: upper-left input pixel of the model window (margin included; may be
            negative at the top / left edge).
        in_size: side of the square model window in input pixels (``tile + 2 * overlap``).
    """

    out_row: int
    out_col: int
    out_height: int
    out_width: int
    in_row: int
    in_col: int
    in_size: int


@dataclass(frozen=True)
class TilePlan:
    """How a raster is tiled (all sizes in input pixels unless noted)."""

    patch_size: int
    tile_size: int
    overlap: int
    out_height: int
    out_width: int
    tiles: tuple[Tile, ...]


def plan_tiles(height: int, width: int, patch_size: int, tile_size: int, overlap: int) -> TilePlan:
    """Cut the ``floor(H/p) x floor(W/p)`` output grid into tiles (row-major order).

    Args:
        height, width: input raster size in pixels.
        patch_size: p.
        tile_size: core size in input pixels, a positive multiple of p.
        overlap: margin in input pixels on each side, a non-negative multiple of p.
    """
    p = patch_size
    if tile_size <= 0 or tile_size % p:
        raise ValueError(
            f"tile_size must be a positive multiple of patch_size {p}, got {tile_size}"
        )
    if overlap < 0 or overlap % p:
        raise ValueError(
            f"overlap must be a non-negative multiple of patch_size {p}, got {overlap}"
        )
    out_h, out_w = height // p, width // p
    if out_h == 0 or out_w == 0:
        raise ValueError(f"a {height}x{width} px raster is smaller than one {p}x{p} patch")
    core = tile_size // p
    tiles = tuple(
        Tile(
            out_row=r,
            out_col=c,
            out_height=min(core, out_h - r),
            out_width=min(core, out_w - c),
            in_row=r * p - overlap,
            in_col=c * p - overlap,
            in_size=tile_size + 2 * overlap,
        )  # fmt: skip
        for r in range(0, out_h, core)
        for c in range(0, out_w, core)
    )
    return TilePlan(p, tile_size, overlap, out_h, out_w, tiles)


def default_overlap(window_patches: int, patch_size: int) -> int:
    """Default margin in input pixels: 1/8 of the window side per side (at least one patch)."""
    return max(1, window_patches // 8) * patch_size


def choose_tiling(
    height: int,
    width: int,
    patch_size: int,
    num_timesteps: int,
    num_bandsets: int,
    tile_size: int | None = None,
    overlap: int | None = None,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    max_tile: int = 256,
) -> tuple[int, int]:
    """``(tile_size, overlap)`` in input pixels, filling in defaults.

    A raster whose whole patch grid fits in ``token_budget`` is one tile without margin (the
    exact untiled result). Otherwise the model window is the largest square of patches within
    the budget, the margin 1/8 of it on each side (:func:`default_overlap`) and the tile the
    rest (at most ``max_tile`` px). A given ``tile_size`` gets the default margin for its size.
    """
    p = patch_size
    grid = max(height // p, width // p)
    per_patch = max(1, num_timesteps * num_bandsets)
    if tile_size is None and grid * grid * per_patch <= token_budget:
        return grid * p, 0 if overlap is None else overlap
    if tile_size is None:
        window = max(1, math.isqrt(token_budget // per_patch))
        margin = default_overlap(window, p) if overlap is None else overlap
        core = max(1, min(window - 2 * (margin // p), max_tile // p, grid))
        return core * p, margin
    if overlap is None:
        overlap = default_overlap(tile_size // p * 4 // 3, p)  # core = 3/4 of the window
    return tile_size, overlap


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
"""Called as ``progress(tiles_done, tiles_total)`` after every batch."""


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
) -> EmbedResult:
    """Embed co-registered GeoTIFFs into a cloud-optimized embedding GeoTIFF.

    Args:
        model: a geolatent model (``geolatent.load_model(...)``); its ``embed`` checks units.
        inputs: per modality the input files (one per timestep, or stacks), all on one grid.
            Raw units: Sentinel-2 L2A DN (0-10000), Sentinel-1 dB, Landsat L1 DN.
        out_path: the output ``.tif``: ``D = model.embedding_dim`` float32 bands at ``10*p`` m,
            same CRS, transform = input transform scaled by ``p``, nodata NaN.
        patch_size: p in 1..8.
        tile_size: core tile size in input pixels (a multiple of p); default: see
            :func:`choose_tiling` (the whole raster when it fits ``token_budget``).
        overlap: context margin in input pixels on each side (a multiple of p); default 1/8
            of the model window per side, 0 when the whole raster is one tile.
        batch_size: tiles per model call.
        device: run the model there (the model is moved); default: where the model is.
        align: ``"date"`` or ``"month"``; how dates become timesteps (see :class:`RasterStack`).
        progress: optional callback ``(tiles_done, tiles_total)``.
        tags: extra metadata tags for the output (e.g. the checkpoint used).
        blocksize: COG block size of the output (128: a 128 px block of 128 float32 bands
            is already 8 MiB, so larger blocks make random reads of a few pixels costly).
        gdal_cache_mb: GDAL block cache cap while reading and writing.
        token_budget: tokens per model window when choosing a default tile (see
            :data:`DEFAULT_TOKEN_BUDGET`); with ``batch_size`` it bounds the model's memory.
        check_resolution: see :class:`RasterStack`.
        grid, crs, resolution: the input grid the embedding is computed on (its transform
            scaled by ``p`` is the output's): the inputs' own grid when they share a 10 m one,
            else the 10 m UTM grid covering them; ``grid`` (e.g.
            ``OutputGrid.of_raster(path)`` for ``--align-to``) or ``crs`` / ``resolution``
            choose another. Inputs off the grid are warped by the data layer.

    Returns:
        An :class:`EmbedResult`.
    """
    start = time.perf_counter()
    p = int(patch_size)
    if not 1 <= p <= 8:
        raise ValueError(f"patch_size must be in 1..8, got {patch_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is not None:
        model.to(device)
    out_path = Path(out_path)
    check_not_input(out_path, (ri.path for files in inputs.values() for ri in files), "output")
    work = work_dir_for(out_path)

    with (
        OutputLock(out_path, "embed"),
        drop_empty_work_on_error(work),
        rasterio.Env(GDAL_CACHEMAX=gdal_cache_mb),
        RasterStack(inputs, align=align, check_resolution=check_resolution, grid=grid, crs=crs,
                    resolution=resolution) as stack,
    ):
        num_bandsets = sum(get_modality(m).num_bandsets for m in stack.modalities)
        tile, margin = choose_tiling(
            stack.height, stack.width, p, stack.num_timesteps, num_bandsets, tile_size, overlap,
            token_budget,
        )  # fmt: skip
        plan = plan_tiles(stack.height, stack.width, p, tile, margin)
        out_transform = stack.transform @ Affine.scale(p)
        dim = int(model.embedding_dim)
        timestamps = stack.timestamps
        all_tags = {
            "geolatent_product": "embedding",
            "patch_size": p,
            "pixel_size_m": f"{abs(out_transform.a):g}",
            "modalities": ",".join(stack.modalities),
            "dates": ",".join(d.isoformat() for d in stack.dates),
            "tile_size": plan.tile_size,
            "overlap": plan.overlap,
        }
        provenance = getattr(model, "provenance", None)
        if provenance:  # which weights made these embeddings (release, revision, sha256)
            all_tags["model_provenance"] = json.dumps(provenance, sort_keys=True, default=str)
        all_tags.update(tags or {})
        fingerprint = _fingerprint(model, inputs, plan, align,
                                   {**all_tags, "grid": f"{stack.crs} {tuple(stack.transform)}"})
        store = WorkStore(work, fingerprint)
        total = len(plan.tiles)
        todo = [t for t in plan.tiles if not store.done(_key(t))]
        done = total - len(todo)
        if progress is not None:
            progress(done, total)
        m = plan.overlap // p
        for batch in _batches(stack, plan, todo, batch_size):
            windows = [w for _, w in batch if w is not None]
            feats = (_embed_windows(model, windows, timestamps, p, input_flags) if windows
                     else None)
            for k, (t, w) in enumerate(batch):
                if w is None:  # nothing valid in the core: nodata, nothing stored
                    store.put(_key(t), None, {"data": False})
                    continue
                # Windowed tiles come first in a batch, in model-batch order.
                core = feats[k, m : m + t.out_height, m : m + t.out_width]
                store.put(_key(t), np.ascontiguousarray(np.moveaxis(core, -1, 0)), {"data": True})
            done += len(batch)
            if progress is not None:
                progress(done, total)
        writer = COGWriter(
            out_path,
            width=plan.out_width,
            height=plan.out_height,
            count=dim,
            dtype="float32",
            crs=stack.crs,
            transform=out_transform,
            nodata=float("nan"),
            band_descriptions=[f"embedding_{i:03d}" for i in range(dim)],
            tags=all_tags,
            blocksize=blocksize,
            temp_dir=work,
        )
        embedded = 0
        with writer:  # every tile is in the store: assemble the COG (one core at a time)
            for t in plan.tiles:
                if store.get_record(_key(t)).get("data"):
                    writer.write(store.get_array(_key(t)), t.out_row, t.out_col)
                    embedded += 1
        shutil.rmtree(work, ignore_errors=True)  # published: the work area goes
        return EmbedResult(
            path=out_path,
            width=plan.out_width,
            height=plan.out_height,
            count=dim,
            crs=stack.crs,
            transform=out_transform,
            patch_size=p,
            tile_size=plan.tile_size,
            overlap=plan.overlap,
            timestamps=timestamps,
            modalities=tuple(stack.modalities),
            inputs=stack.summary(),
            tiles_total=total,
            tiles_embedded=embedded,
            seconds=time.perf_counter() - start,
        )


def _key(tile: Tile) -> str:
    """The work-store key of a tile."""
    return f"tile_{tile.out_row:06d}_{tile.out_col:06d}"


def _fingerprint(model, inputs: Mapping[str, Sequence[RasterInput]], plan: TilePlan, align: str,
                 tags: Mapping[str, object]) -> str:
    """Identifies everything that shapes the output: the model's weights, each input file
    (path, size, mtime), its dates and bands, the tiling and the alignment. Stored tiles of
    another fingerprint are never reused."""
    h = hashlib.sha256()
    for t in model.state_dict().values():
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
    files = []
    for name, ris in sorted(inputs.items()):
        for ri in ris:
            st = Path(ri.path).stat()
            files.append([name, str(Path(ri.path).resolve()), st.st_size, st.st_mtime_ns,
                          [d.isoformat() for d in ri.dates], list(ri.bands or []),
                          list(ri.indexes or [])])
    h.update(json.dumps([files, plan.patch_size, plan.tile_size, plan.overlap, plan.out_height,
                         plan.out_width, align, {k: str(v) for k, v in tags.items()}],
                        sort_keys=True).encode())
    return h.hexdigest()[:20]


def _batches(stack: RasterStack, plan: TilePlan, tiles: Sequence[Tile], batch_size: int):
    """Yield lists of ``(tile, window or None)``: up to ``batch_size`` windows to embed, plus the
    tiles without data met on the way (window None, nothing to run). Reads one tile at a time,
    so at most ``batch_size`` windows are held."""
    pending: list[tuple[Tile, dict[str, np.ndarray] | None]] = []
    n_windows = 0
    for t in tiles:
        window = stack.read(
            t.in_row, t.in_col, t.in_size, t.in_size,
            valid_height=plan.out_height * plan.patch_size,
            valid_width=plan.out_width * plan.patch_size,
        )  # fmt: skip
        core = slice(plan.overlap, plan.overlap + t.out_height * plan.patch_size)
        core_c = slice(plan.overlap, plan.overlap + t.out_width * plan.patch_size)
        if all(np.all(w[core, core_c] == MISSING_VALUE) for w in window.values()):
            window = None  # nothing to embed in the core: its output is nodata
        pending.append((t, window))
        n_windows += window is not None
        # Also flush long runs of empty tiles, so progress keeps moving over nodata areas.
        if n_windows == batch_size or len(pending) >= 64 * batch_size:
            yield _ordered(pending)
            pending, n_windows = [], 0
    if pending:
        yield _ordered(pending)


def _ordered(pending: list[tuple[Tile, dict | None]]) -> list[tuple[Tile, dict | None]]:
    # Tiles with windows first so they line up with the model's batch outputs.
    return [x for x in pending if x[1] is not None] + [x for x in pending if x[1] is None]


def _embed_windows(
    model, windows: list[dict[str, np.ndarray]], timestamps: np.ndarray, p: int,
    input_flags: Mapping[str, str] | None = None,
) -> np.ndarray:
    """Run the model on ``[h, w, T, C]`` windows; returns float32 ``[B, h/p, w/p, D]``.
    With ``input_flags`` (modality -> CLI flag) unit errors name the flag, not Python's
    ``check_units``."""
    inputs = {m: np.stack([w[m] for w in windows]) for m in windows[0]}
    ts = np.repeat(timestamps[None], len(windows), axis=0)
    if input_flags is not None:
        for m, x in inputs.items():
            check_values(m, x, what=m, fix=Fix("cli", flag=input_flags.get(m)))
    out = model.embed(inputs, timestamps=ts, patch_size=p, normalize=True,
                      check_units=input_flags is None)
    return out.feature_map.detach().to("cpu", torch.float32).numpy()
