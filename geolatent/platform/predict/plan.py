"""What a prediction run will do, before it does it: the model and its output kind, sources,
time axis, fingerprint, and the size sanity check (area, tiles, output bytes, a rough time)
that guards long runs."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import rasterio
import shapely
import torch
from affine import Affine
from pydantic import TypeAdapter
from rasterio.crs import CRS

from geolatent.data.config import SourceConfig
from geolatent.data.io.grid import OutputGrid
from geolatent.data.run import check_free_space
from geolatent.data.sources import Source, open_sources
from geolatent.data.window import WGS84, reproject_geometry, utm_crs_for
from geolatent.modalities import MAX_TIMESTEPS, get_modality
from geolatent.platform.area import PredictionPlan, read_area
from geolatent.platform.bundle import (
    BUNDLE_FILE,
    FinetunedModel,
    InputSpec,
    bundle_modalities,
    unfinished_model_dir,
)
from geolatent.platform.windows import CLASS_TASKS

#: Above this area (km²) a run needs ``confirm=True`` (CLI ``--yes``); settable per call.
DEFAULT_MAX_AREA_KM2 = 2_500.0
#: A deliberately rough throughput for the printed time estimate (Nano on 2 CPU cores,
#: BENCHMARKS.md "area prediction"); the real speed depends on the model, crop and machine.
ROUGH_KM2_PER_S = 0.5


DEFAULT_TOKEN_BUDGET = 4096
"""Default cap on tokens per model crop of an embedding map ((crop/p)^2 x T x bandsets) when no
crop is given. Attention work per crop grows with the square of its token count, so the total
work grows linearly with the budget; 4096 is about twice the v1 pretraining budget (2250)."""


@dataclass
class EncoderModel:
    """A plain (not fine-tuned) model as a prediction model: its output is the embedding map
    (``D`` float bands at ``10 * p`` m, the encoder's feature map).

    Attributes:
        model: the geolatent model (``geolatent.load_model``; a ``LatentMIM`` of any version).
        inputs: the input contract: every encoder-input modality of the model, patch size p,
            crop (see :func:`embedding_tiling`) and resolution.
        path: where it was loaded from (None: in memory; the weights are then hashed).
        sources: imagery sources recorded with the model (none: pass ``sources``).
    """

    model: object
    inputs: InputSpec
    path: Path | None = None
    sources: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, model, patch_size: int = 4, crop: int | None = None,
           path: str | os.PathLike | None = None) -> EncoderModel:
        """Wrap a loaded model; ``crop`` defaults to the largest square of patches within
        :data:`DEFAULT_TOKEN_BUDGET` for 12 monthly steps of every modality."""
        if not 1 <= int(patch_size) <= 8:
            raise ValueError(f"patch_size must be in 1..8, got {patch_size}")
        mods = [m for m in model.config.modalities if get_modality(m).encoder_input]
        if crop is None:
            per_patch = MAX_TIMESTEPS * sum(get_modality(m).num_bandsets for m in mods)
            crop = max(1, math.isqrt(DEFAULT_TOKEN_BUDGET // max(1, per_patch))) * patch_size
        bands = {m: list(get_modality(m).bands) for m in mods}
        return cls(model, InputSpec(mods, bands, int(patch_size), crop, crop),
                   Path(path) if path is not None else None)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.embedding_size)


PredictionModel = FinetunedModel | EncoderModel


def load_prediction_model(model, device, patch_size: int | None = None) -> PredictionModel:
    """A fine-tuned model folder (``bundle.json``) or a plain model (release folder, release id,
    geolatent checkpoint, or a loaded model) as a prediction model; a plain one writes the
    embedding map at patch size ``patch_size`` (default 4)."""
    if isinstance(model, FinetunedModel | EncoderModel):
        return model
    if isinstance(model, str | os.PathLike) and (
            (Path(model) / BUNDLE_FILE).exists() or unfinished_model_dir(Path(model)).exists()):
        from geolatent.platform.bundle import load_bundle

        return load_bundle(model, device)  # says so when a fine-tuning into it did not finish
    if isinstance(model, str | os.PathLike):
        from geolatent.model.checkpoint import load_model

        return EncoderModel.of(load_model(model, device=device), patch_size or 4, path=model)
    return EncoderModel.of(model, patch_size or 4)


def output_kind(fm: PredictionModel) -> str:
    """``class``, ``value`` or ``embedding`` (a plain model)."""
    if isinstance(fm, EncoderModel):
        return "embedding"
    return "class" if fm.task.type in CLASS_TASKS else "value"


def output_bands(fm: PredictionModel, kind: str) -> int:
    """Bands of the output raster."""
    return fm.embedding_dim if isinstance(fm, EncoderModel) else 1


def embedding_tiling(
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
    """``(tile, overlap)`` in input pixels of an embedding map of a ``height x width`` px grid,
    run as ``trim`` crops of ``tile + 2 * overlap`` px whose central ``tile`` block is kept.

    A grid whose whole patch grid fits in ``token_budget`` is one tile without margin (the
    exact untiled result). Otherwise the crop is the largest square of patches within the
    budget, the margin 1/8 of it on each side (at least one patch) and the tile the rest (at
    most ``max_tile`` px). A given ``tile_size`` gets the default margin for its size.

    Raises:
        ValueError: a tile that is not a positive multiple of p, or an overlap that is not a
            non-negative multiple of p, or a grid smaller than one patch.
    """
    p = patch_size
    if height // p == 0 or width // p == 0:
        raise ValueError(f"a {height}x{width} px raster is smaller than one {p}x{p} patch")
    grid = max(height // p, width // p)
    per_patch = max(1, num_timesteps * num_bandsets)
    if tile_size is None and grid * grid * per_patch <= token_budget:
        tile_size, overlap = grid * p, 0 if overlap is None else overlap
    elif tile_size is None:
        window = max(1, math.isqrt(token_budget // per_patch))
        overlap = _default_overlap(window, p) if overlap is None else overlap
        tile_size = max(1, min(window - 2 * (overlap // p), max_tile // p, grid)) * p
    elif overlap is None:
        overlap = _default_overlap(tile_size // p * 4 // 3, p)  # core = 3/4 of the crop
    if tile_size <= 0 or tile_size % p:
        raise ValueError(f"tile_size must be a positive multiple of patch_size {p}, "
                         f"got {tile_size}")
    if overlap < 0 or overlap % p:
        raise ValueError(f"overlap must be a non-negative multiple of patch_size {p}, "
                         f"got {overlap}")
    return tile_size, overlap


def _default_overlap(window_patches: int, patch_size: int) -> int:
    """Default margin in input pixels: 1/8 of the crop side per side (at least one patch)."""
    return max(1, window_patches // 8) * patch_size


@dataclass(frozen=True)
class Timeline:
    """An explicit time axis: one timestep per distinct date (``align="date"``) or calendar
    month (``"month"``) instead of one monthly composite per month of the time range. Each
    scene goes to the timestep of its date (``embed``: one file or stack step per date).

    Attributes:
        dates: the date of each timestep (the earliest date mapped to it), increasing.
        align: ``date`` or ``month``.
    """

    dates: tuple[date, ...]
    align: str = "date"

    def key(self, d: date) -> tuple[int, ...]:
        return (d.year, d.month) if self.align == "month" else (d.year, d.month, d.day)

    def index(self, d: date) -> int:
        """The timestep of date ``d``."""
        keys = [self.key(x) for x in self.dates]
        return keys.index(self.key(d))

    @property
    def timestamps(self) -> np.ndarray:
        """int64 ``[T, 3]`` (day, month 0-11, year) of the timesteps."""
        return np.array([[d.day, d.month - 1, d.year] for d in self.dates], dtype=np.int64)

    @property
    def time_range(self) -> tuple[str, str]:
        """``(first date, day after the last)`` ISO: every scene of the axis falls inside."""
        return self.dates[0].isoformat(), (self.dates[-1] + timedelta(days=1)).isoformat()


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


def model_key(fm: PredictionModel) -> str:
    """Identifies the weights in the plan fingerprint: a fine-tuned folder by the path, size
    and mtime of its weights; a plain model by a hash of its weights and patch size."""
    if isinstance(fm, EncoderModel):
        h = hashlib.sha256(str(fm.inputs.patch_size).encode())
        for t in fm.model.state_dict().values():
            h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
        return h.hexdigest()[:20]
    if fm.path is None:
        return str(id(fm))
    st = (Path(fm.path) / "weights.safetensors").stat()
    return f"{Path(fm.path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def sources_key(sources: Sequence[Source], extra: dict | None = None) -> str:
    """Identifies the imagery in the plan fingerprint: every scene (id, date, and each local
    file's path, size and mtime), so stored tiles of changed inputs are never reused."""
    rows = []
    for s in sources:
        for sc in s.scenes:
            files = []
            for f in sc.files:
                try:
                    st = os.stat(f)
                    files.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns])
                except OSError:  # a URL (or a file the run reports itself)
                    files.append([f])
            rows.append([s.name, sc.id, sc.datetime.isoformat(), files,
                         sorted((b, a.band_index) for b, a in sc.assets.items())])
    payload = json.dumps([rows, extra or {}], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


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


def _km2(v: float) -> str:
    """An area for messages: whole km² from 10 up, 3 significant digits below."""
    return f"{v:,.0f}" if v >= 10 else f"{v:.3g}"


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
            f"the area is {_km2(est.area_km2)} km² (limit {_km2(max_area_km2)} km²): "
            f"{est.describe()}. Confirm the size (CLI --yes, Python confirm=True) or raise the "
            "limit (CLI --max-area-km2, Python max_area_km2)"
        )


def check_run_size(est: RunEstimate, out_path: str | os.PathLike, *, max_area_km2: float,
                   confirm: bool) -> None:
    """Refuse a run above ``max_area_km2`` unless confirmed, or one whose output cannot fit on
    the disk (checked against the estimate before any work)."""
    check_area_size(est, max_area_km2=max_area_km2, confirm=confirm)
    check_free_space(out_path, est.output_bytes + est.work_bytes, "this prediction")
