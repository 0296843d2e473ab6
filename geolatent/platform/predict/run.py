"""Running a prediction: the tiled-run driver (:mod:`geolatent.data.run`) over the plan's tiles,
with the model in this process and window materialization in the executor."""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine

from geolatent.data.config import SourceConfig
from geolatent.data.executor import make_executor
from geolatent.data.io.grid import OutputGrid
from geolatent.data.run import (
    LOCK_FILE,
    OutputLock,
    WorkStore,
    check_not_input,
    disk_error,
    drop_empty_work_on_error,
    wait_for_ranks,
    work_dir_for,
)
from geolatent.data.sources import Source
from geolatent.modalities import MAX_TIMESTEPS
from geolatent.model.precision import Resolved, current_precision, set_precision
from geolatent.platform.area import AreaLike, BlendMode, PredictionPlan, plan_prediction
from geolatent.platform.predict.plan import (
    DEFAULT_MAX_AREA_KM2,
    PredictionModel,
    Timeline,
    check_area_size,
    check_run_size,
    end_exclusive,
    estimate_run,
    load_prediction_model,
    model_key,
    open_prediction_sources,
    output_bands,
    output_kind,
    rough_estimate,
    single_grid,
    sources_key,
)
from geolatent.platform.predict.tile import PixelBounds, TileJob, TilePredictor, materialize_tile
from geolatent.platform.predict.write import tile_key, write_prediction_cog
from geolatent.runtime import ComputeMeter, resolve_device
from geolatent.units import Fix

Progress = Callable[[int, int], None]
#: How long ranks wait for each other (rank 0 for the others' tiles, others for rank 0's store).
RANK_TIMEOUT_S = 24 * 3600.0


@dataclass
class PredictResult:
    """Summary of a :func:`predict_area` run (on rank 0; other ranks get their own counts)."""

    path: Path
    vector_path: Path | None
    width: int
    height: int
    crs: str
    transform: Affine
    kind: str
    tiles_total: int
    tiles_run: int
    tiles_resumed: int
    area_km2: float
    seconds: float
    compute: dict | None = None  # geolatent.runtime.ComputeMeter report of this run
    tiles_with_data: int = 0  # tiles where the model ran on some valid input (rank 0: all)

    @property
    def km2_per_s(self) -> float:
        return self.area_km2 / self.seconds if self.seconds > 0 else float("nan")


def _existing_fingerprint(path: Path) -> str | None:
    try:
        with rasterio.open(path) as src:
            return src.tags().get("geolatent_plan")
    except (OSError, rasterio.errors.RasterioError):
        return None


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world size {world}")
    return rank, world


# -- the whole area -----------------------------------------------------------------------------
def predict_area(
    model: str | os.PathLike | PredictionModel | torch.nn.Module,
    area: AreaLike,
    start: str,
    end: str,
    out_path: str | os.PathLike,
    *,
    sources: Sequence[Source] | Sequence[SourceConfig] | Sequence[dict] | None = None,
    crs: str | None = None,
    crop: int | None = None,
    stride: int | None = None,
    tile: int = 256,
    blend: BlendMode = "linear",
    batch_size: int = 16,
    device: str = "auto",
    precision: str | None = "fp32",
    executor: str = "serial",
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = True,
    keep_parts: bool = False,
    vector_path: str | os.PathLike | None = None,
    progress: Progress | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    gdal_cache_mb: int = 64,
    max_area_km2: float = DEFAULT_MAX_AREA_KM2,
    confirm: bool = False,
    report: Callable[[str], None] | None = None,
    rank_timeout_s: float = RANK_TIMEOUT_S,
    align_to: str | os.PathLike | None = None,
    patch_size: int | None = None,
) -> PredictResult:
    """Predict over ``area`` from ``start`` to ``end`` and write a COG at ``out_path``.

    Args:
        model: a fine-tuned model folder or a loaded :class:`FinetunedModel`; or a plain
            model (release folder or id, geolatent checkpoint, a loaded model, or an
            :class:`~geolatent.platform.predict.plan.EncoderModel`), which writes the
            embedding map: ``D`` float32 bands at ``10 * p`` m.
        area: GeoJSON / GeoPackage / Shapefile path, GeoJSON mapping, lon/lat geometry or box.
        start, end: ISO dates of the imagery time range (a date-only end is inclusive:
            ``2024-01-01`` .. ``2024-12-31`` is one year; at most 12 monthly steps).
        out_path: the output ``.tif``.
        sources: imagery (data-layer source configs or opened sources); default: the sources
            recorded in the model folder.
        crs: output CRS (default: UTM zone of the area's centre).
        align_to: put the map on the grid of this raster (CRS, pixel size and edges). By
            default a map over local files that share one grid of the model's resolution is
            on their grid; other imagery gives a map on the global grid of ``crs``.
        crop, stride: model crop side and spacing in pixels (default: the training crop, half;
            a plain model: the token-budget crop of
            :meth:`~geolatent.platform.predict.plan.EncoderModel.of`).
        tile: tile core side in pixels (memory per work item grows with its square).
        blend: ``linear`` (weighted blend of overlapping crops) or ``trim`` (centre blocks).
        batch_size: crops per model call.
        device: ``auto`` / ``cpu`` / ``cuda[:i]``.
        precision: encoder precision ``fp32`` | ``bf16`` | ``int8`` | ``auto``
            (:mod:`geolatent.model.precision`); a model passed in is copied, not converted;
            None runs a loaded model in the precision it has.
        executor, workers, scheduler: how tiles are materialized (data-layer executor).
        resume: skip tiles finished by an earlier run (and the whole run if ``out_path`` is
            already this plan's output); ``False`` starts the work store afresh.
        keep_parts: keep the work store (``OUT.work``: tile cores) after writing the COG.
        vector_path: also write class polygons (lon/lat GeoJSON) there (class maps only).
        progress: ``(tiles_done, tiles_total)`` after every tile.
        rank, world_size: this process's share of the tiles (default: torchrun's env).
        gdal_cache_mb: GDAL block cache while reading inputs and writing the COG.
        max_area_km2, confirm: a run over more than ``max_area_km2`` needs ``confirm=True``.
        report: called with one line describing the run (area, tiles, sizes, rough time)
            before it starts.
        rank_timeout_s: how long ranks wait for each other before failing, naming the rank.
        patch_size: p of a plain model's embedding map (default 4); fine-tuned models keep
            their own.

    Raises:
        ValueError: bad arguments, an output that is an input, an unconfirmed huge area.
        RunLockedError: another run writes the same output.
        DiskFullError: the output does not fit on the disk (before the run), or the disk
            filled up during it (the run is resumable).
    """
    t0 = time.perf_counter()
    rank, world = _rank_world(rank, world_size)
    dev = resolve_device(device, "device")
    if device == "auto" and dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    fm, resolved = prepare_model(model, dev, precision, patch_size)
    kind = output_kind(fm)
    if vector_path is not None and kind != "class":
        raise ValueError(f"vector output is for class maps; this model predicts {kind}")
    srcs = open_prediction_sources(fm, sources)
    fed = {s.modality for s in srcs}
    if not fed & set(fm.inputs.modalities):
        raise ValueError(f"the sources feed {sorted(fed)} but the model takes "
                         f"{fm.inputs.modalities}")
    p = fm.inputs.patch_size
    q = p if kind == "embedding" else 1
    crop = crop or fm.inputs.crop_size
    if crop % p:
        raise ValueError(f"crop {crop} must be a multiple of the patch size {p}")
    if stride is not None and stride % p:
        raise ValueError(f"stride {stride} must be a multiple of the patch size {p}")
    stride = stride or max(p, (crop // 2) // p * p)
    end = end_exclusive(end)
    if align_to is not None and crs is not None:
        raise ValueError("give either align_to (CLI --align-to) or crs (CLI --crs)")
    if align_to is not None:
        grid = OutputGrid.of_raster(align_to)
    else:
        grid = None if crs is not None else single_grid(srcs, fm.inputs.resolution_m)
    # An explicit --align-to grid bounds the map; the imagery's own grid only sets its pixels.
    itemsize = 1 if kind == "class" else 4
    rough = rough_estimate(area, fm.inputs.resolution_m, tile, q, output_bands(fm, kind), itemsize)
    try:  # a huge area is refused from its outline, before its tiles are planned (minutes)
        check_area_size(rough, max_area_km2=max_area_km2, confirm=confirm)
    except ValueError:
        if report is not None and rank == 0:
            report(rough.describe())
        raise
    plan = plan_prediction(area, (start, end), crop=crop, stride=stride, tile=tile,
                           out_scale=q, crs=crs, resolution=fm.inputs.resolution_m, grid=grid,
                           clip_to_grid=align_to is not None, blend=blend)
    months = len(plan.tiles[0].window.months)
    if months > MAX_TIMESTEPS:
        raise ValueError(f"{start}..{end} covers {months} months; the model takes at most "
                         f"{MAX_TIMESTEPS} monthly steps")
    settings = RunSettings(batch_size, executor, workers, scheduler, resume, keep_parts,
                           vector_path, progress, rank, world, gdal_cache_mb, max_area_km2,
                           confirm, report, rank_timeout_s)
    return run_plan(fm, plan, srcs, out_path, device=dev, precision=resolved, settings=settings,
                    started=t0)


def prepare_model(model, dev: torch.device, precision: str | None,
                  patch_size: int | None = None) -> tuple[PredictionModel, Resolved]:
    """The prediction model on ``dev`` in eval mode and ``precision`` (a model passed in is
    copied before a conversion; None keeps the precision it has)."""
    fm = load_prediction_model(model, dev, patch_size)
    fm.model.to(dev).eval()
    if precision is None:
        return fm, Resolved(current_precision(fm.model), "as loaded")
    if not isinstance(model, str | os.PathLike) and precision != "fp32":
        fm = copy.copy(fm)
        fm.model = copy.deepcopy(fm.model)
    return fm, set_precision(fm.model, precision)


@dataclass
class RunInputs:
    """How a plan's tiles get their pixels, beyond the sources (``embed``'s file inputs).

    Attributes:
        timeline: an explicit time axis (one timestep per date) instead of monthly composites.
        read_bounds: only these global pixels are read (the input grid).
        fix: per modality where the inputs came from, for unit errors (a CLI flag, Python).
        tags: extra tags of the output COG.
        blocksize: the output COG's block size.
    """

    timeline: Timeline | None = None
    read_bounds: PixelBounds | None = None
    fix: Mapping[str, Fix] = field(default_factory=dict)
    tags: Mapping[str, object] = field(default_factory=dict)
    blocksize: int = 256


@dataclass
class RunSettings:
    """How a plan is run (see :func:`predict_area` for each): batch size, executor, resume,
    outputs beside the map, progress, ranks, GDAL cache, the size gate and its report."""

    batch_size: int = 16
    executor: str = "serial"
    workers: int | None = None
    scheduler: str | None = None
    resume: bool = True
    keep_parts: bool = False
    vector_path: str | os.PathLike | None = None
    progress: Progress | None = None
    rank: int = 0
    world_size: int = 1
    gdal_cache_mb: int = 64
    max_area_km2: float = DEFAULT_MAX_AREA_KM2
    confirm: bool = False
    report: Callable[[str], None] | None = None
    rank_timeout_s: float = RANK_TIMEOUT_S
    command: str = "predict"  # how a lock held by this run is named to another one


def run_plan(
    fm: PredictionModel,
    plan: PredictionPlan,
    srcs: Sequence[Source],
    out_path: str | os.PathLike,
    *,
    device: torch.device,
    precision: Resolved,
    settings: RunSettings | None = None,
    inputs: RunInputs | None = None,
    started: float | None = None,
) -> PredictResult:
    """Run ``plan`` with ``fm`` (already on ``device``, in ``precision``) over ``srcs`` and write
    the COG: the size gate, the lock, the work store (resume), the executor, the ranks, the
    writer. ``started``: the run's start (``perf_counter``) for its timing."""
    t0 = time.perf_counter() if started is None else started
    st = settings or RunSettings()
    rank, world, progress, vector_path = st.rank, st.world_size, st.progress, st.vector_path
    extra = inputs or RunInputs()
    kind = output_kind(fm)
    meter = ComputeMeter(device, precision.name, "km2")
    meter.start()
    used = [s for s in srcs if s.modality in fm.inputs.modalities]
    if not any(s.scenes_for(t.window) for t in plan.tiles for s in used):
        # Far from the imagery (or outside its dates) the map would be all nodata: say so.
        raise ValueError(
            f"no scene of the sources {[s.name for s in used]} covers the area ({plan.crs} "
            f"bounds {tuple(round(v) for v in plan.area.bounds)}) between "
            f"{plan.time_range[0]} and {plan.time_range[1]}; check the area, the dates and "
            "the sources")
    out_path = Path(out_path)
    if st.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {st.batch_size}")
    check_not_input(out_path, (f for s in srcs for sc in s.scenes for f in sc.files), "output")
    key = model_key(fm)
    if precision.name != "fp32":
        key = f"{key}:{precision.name}"
    tags = {k: str(v) for k, v in extra.tags.items()}
    fingerprint = plan.fingerprint(f"{key}:{sources_key(srcs, {'tags': tags})}")
    total = len(plan.tiles)

    def result(run: int, resumed: int, with_data: int = 0) -> PredictResult:
        meter.add(plan.area_km2 * run / max(total, 1))
        return PredictResult(out_path, Path(vector_path) if vector_path else None, plan.width,
                             plan.height, plan.crs, plan.transform, kind, total, run, resumed,
                             plan.area_km2, time.perf_counter() - t0, meter.report_dict(),
                             with_data)

    if st.resume and out_path.exists() and _existing_fingerprint(out_path) == fingerprint:
        if progress is not None:
            progress(total, total)
        return result(0, total, _existing_tiles_with_data(out_path))
    estimate = estimate_run(plan, output_bands(fm, kind), 1 if kind == "class" else 4)
    if st.report is not None and rank == 0:
        st.report(estimate.describe())
    check_run_size(estimate, out_path, max_area_km2=st.max_area_km2, confirm=st.confirm)
    work = work_dir_for(out_path)
    lock = OutputLock(out_path, st.command, LOCK_FILE if rank == 0 else f"{LOCK_FILE}-rank{rank}")
    try:
        # only rank 0 owns the work area: other ranks never remove it
        cleanup = drop_empty_work_on_error(work) if rank == 0 else contextlib.nullcontext()
        with lock, cleanup:
            if rank == 0:
                store = WorkStore(work, fingerprint)
                if not st.resume:
                    store.clear()
            else:  # rank 0 owns the store (it discards stale cores): wait until it is this plan's
                store = WorkStore(work, fingerprint, create=False)
                store.wait_ready(st.rank_timeout_s)
            mine = [t for t in plan.tiles if t.index % world == rank]
            todo = [t for t in mine if not store.done(tile_key(t.index))]
            resumed = len(mine) - len(todo)
            done = resumed
            if progress is not None:
                progress(done, len(mine))
            predictor = TilePredictor(fm, plan, device, st.batch_size, precision.name, extra.fix)

            def put(t, arrays: dict, timestamps: np.ndarray) -> None:
                nonlocal done
                before = predictor.crops_run
                core = predictor.predict(t, arrays, timestamps)
                store.put(tile_key(t.index), core, {"data": predictor.crops_run > before})
                done += 1
                if progress is not None:
                    progress(done, len(mine))

            jobs, failures = [], []
            for t in todo:
                bbox = t.window.bounds_wgs84
                scenes = {s.name: s.scenes_for(t.window, bbox) for s in srcs}
                if not any(scenes.values()):  # no imagery: nodata without reading anything
                    put(t, {}, np.zeros((0, 3), np.int64))
                    continue
                feeds = [s.with_scenes(scenes[s.name]) for s in srcs]
                jobs.append(TileJob(t.index, t.window, feeds, list(fm.inputs.modalities),
                                    st.gdal_cache_mb, extra.timeline, extra.read_bounds))
            by_index = {t.index: t for t in plan.tiles}
            ex = make_executor(st.executor, st.workers, st.scheduler)  # type: ignore[arg-type]
            try:
                for outcome in ex.map_unordered(materialize_tile, jobs):
                    job: TileJob = outcome.item
                    if outcome.error is not None:
                        failures.append(f"tile {job.index} ({job.window.name}): {outcome.error}")
                        continue
                    m = outcome.value
                    put(by_index[job.index], m["arrays"], m["timestamps"])
                    del m
            finally:
                ex.close()
            if failures:
                raise RuntimeError(f"{len(failures)} tiles failed (rerun to resume after "
                                   "fixing):\n" + "\n".join(failures[:10]))
            if rank != 0:
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    torch.distributed.barrier()
                return result(len(jobs), resumed)
            if world > 1:
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    torch.distributed.barrier()
                by_rank = {r: [tile_key(t.index) for t in plan.tiles if t.index % world == r]
                           for r in range(1, world)}
                wait_for_ranks(store, by_rank, st.rank_timeout_s)
            with_data = sum(bool(store.get_record(tile_key(t.index)).get("data"))
                            for t in plan.tiles)
            # GDAL's block cache defaults to 5% of RAM; cap it while writing the COG.
            with rasterio.Env(GDAL_CACHEMAX=st.gdal_cache_mb):
                write_prediction_cog(plan, fm, store, out_path, kind, fingerprint,
                                     predictor.bands, {**tags, "tiles_with_data": with_data},
                                     extra.blocksize)
            if vector_path is not None:
                from geolatent.platform.vectorize import write_class_polygons

                write_class_polygons(out_path, vector_path, fm.classes)  # type: ignore[union-attr]
            if not st.keep_parts:
                store.discard()
            return result(len(todo), resumed, with_data)
    except OSError as e:  # a full disk: one line naming the path; the run stays resumable
        full = disk_error(e, out_path)
        if full is e:
            raise
        raise full from e


def _existing_tiles_with_data(path: Path) -> int:
    with rasterio.open(path) as src:
        return int(src.tags().get("tiles_with_data", 0))
