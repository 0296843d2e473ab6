"""Prediction over an area with a fine-tuned model, written as a cloud-optimized GeoTIFF.

Pipeline (see :mod:`geolatent.platform.area` for the grid, tiles and crops)::

    area + dates -> plan (tiles on the global grid) -> per tile: materialize its window through
    the data layer (in the executor: serial, process pool or Dask) -> run the model on the
    tile's overlapping crops -> blend the crops -> clip to the tile core -> write a part file
    -> (rank 0) stream all parts into the COG writer -> optional vector GeoJSON

Memory is bounded by one tile (its inputs, the blend accumulators and a batch of crops) per
in-flight work item, whatever the area: parts go to disk and the COG is assembled part by part.
A run is resumable: finished tiles' part files are kept until the COG is written, and a rerun
skips them (parts of a different plan or model are discarded). Work can be spread over ranks
(``torchrun``: each rank takes every ``world_size``-th tile, rank 0 assembles).

Outputs: classification -> uint8 class indices with a colour table, class names in the tags,
nodata 255; regression -> float32 values, nodata NaN; embedding -> float32 ``D`` bands at
``10 * p`` m, nodata NaN. Pixels outside the area, or where no input was valid, are nodata.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import torch
from affine import Affine
from pydantic import TypeAdapter

from geolatent.data.config import SourceConfig
from geolatent.data.executor import make_executor
from geolatent.data.materialize import materialize_window
from geolatent.data.sources import Source, open_sources
from geolatent.data.window import Window
from geolatent.inference.cog import COGWriter
from geolatent.modalities import MAX_TIMESTEPS, MISSING_VALUE
from geolatent.model.embed import check_value_units
from geolatent.model.precision import set_precision
from geolatent.platform.area import (
    AreaLike,
    AreaTile,
    BlendMode,
    PredictionPlan,
    blend_weights,
    plan_prediction,
)
from geolatent.platform.bundle import FinetunedModel, load_bundle
from geolatent.platform.classes import NODATA_CLASS
from geolatent.platform.encoder_inputs import batch_from_normalized, normalize_arrays
from geolatent.platform.finetune import resolve_device
from geolatent.platform.windows import CLASS_TASKS
from geolatent.runtime import ComputeMeter

Progress = Callable[[int, int], None]
PLAN_FILE = "plan.json"


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

    @property
    def km2_per_s(self) -> float:
        return self.area_km2 / self.seconds if self.seconds > 0 else float("nan")


# -- work items ---------------------------------------------------------------------------------
@dataclass
class TileJob:
    """What a worker needs to materialize one tile (small and picklable)."""

    index: int
    window: Window
    sources: list[Source]
    modalities: list[str]
    gdal_cache_mb: int = 64


def materialize_tile(job: TileJob) -> dict:
    """Materialize a tile's window: ``{"arrays": {m: [H, W, T, C]}, "timestamps": [T, 3]}``."""
    mw = materialize_window(job.window, job.sources, gdal_cache_mb=job.gdal_cache_mb)
    arrays = {m: a for m, a in mw.arrays.items() if m in job.modalities}
    return {"arrays": arrays, "timestamps": mw.timestamps, "warnings": mw.warnings}


def output_kind(fm: FinetunedModel) -> str:
    """``class``, ``value`` or ``embedding``."""
    if fm.task.type in CLASS_TASKS:
        return "class"
    return "embedding" if fm.task.type == "embedding" else "value"


# -- one tile -----------------------------------------------------------------------------------
class TilePredictor:
    """Runs the model on a tile's crops and blends them into the tile core.

    Args:
        fm: the fine-tuned model (on ``device``).
        plan: the prediction plan.
        batch_size: crops per model call.
        blend: crop weighting (:func:`~geolatent.platform.area.blend_weights`).
        precision: ``bf16`` autocast on GPUs, or ``fp32``.
    """

    def __init__(self, fm: FinetunedModel, plan: PredictionPlan, device: torch.device,
                 batch_size: int = 16, blend: BlendMode = "linear",
                 precision: str = "fp32"):
        self.fm, self.plan, self.device = fm, plan, device
        self.batch_size = batch_size
        self.kind = output_kind(fm)
        self.p = fm.inputs.patch_size
        q = plan.out_scale
        self.weights = blend_weights(plan.crop // q, plan.stride // q, blend)
        self.autocast = device.type == "cuda" and precision == "bf16"

    @property
    def bands(self) -> int:
        if self.kind == "class":
            return 1
        return self.fm.model_config.embedding_size if self.kind == "embedding" else 1

    @property
    def channels(self) -> int:
        """Channels blended per pixel (class probabilities, a value, or features)."""
        if self.kind == "class":
            return self.fm.classes.num_classes  # type: ignore[union-attr]
        return self.bands

    @torch.inference_mode()
    def _run(self, crops: dict[str, torch.Tensor], ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(values [N, K, co, co], valid [N, co, co])`` in output units for a batch of
        normalized crops ``{m: [N, c, c, T, C]}``."""
        fm, q = self.fm, self.plan.out_scale
        batch = batch_from_normalized(crops, ts, self.p).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            feats = fm.model.encode(batch)
            out = fm.model.head(feats).float()
        valid = feats.token_valid  # [N, c/p, c/p]
        if self.kind == "class":
            out = out.softmax(1)
        elif self.kind == "value":
            out = out * fm.task.target_std + fm.task.target_mean
        co = self.plan.crop // q
        if out.ndim == 2:  # a window head: one prediction for the whole crop
            out = out[:, :, None, None].expand(-1, -1, co, co)
        rep = self.p // q
        valid = valid.repeat_interleave(rep, 1).repeat_interleave(rep, 2)
        values = torch.nan_to_num(out).cpu().numpy()
        return values, valid.cpu().numpy()

    def predict(self, tile: AreaTile, arrays: dict[str, np.ndarray],
                timestamps: np.ndarray) -> np.ndarray:
        """The tile core ``[bands, h, w]`` (output dtype, nodata where nothing is known)."""
        plan, q, c = self.plan, self.plan.out_scale, self.plan.crop
        ec0, er0, ec1, er1 = tile.window.pixel_bounds
        acc = np.zeros((self.channels, (er1 - er0) // q, (ec1 - ec0) // q), np.float32)
        wsum = np.zeros(acc.shape[1:], np.float32)
        rows, cols = plan.crop_origins(tile)
        mods = [m for m in self.fm.inputs.modalities if m in arrays]
        for m in mods:  # once per tile, on a subsample: crops overlap, the check need not
            check_value_units(m, torch.from_numpy(arrays[m][::4, ::4]), normalized=False)
        # Normalized once per tile rather than once per overlapping crop.
        normed = normalize_arrays(arrays, mods, check_units=False) if mods else {}
        if mods:
            present = np.zeros(len(rows), dtype=bool)
            for m in mods:
                has = (arrays[m] != MISSING_VALUE).any(axis=(2, 3))  # [H, W]
                integral = np.pad(has.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
                r, cc = rows - er0, cols - ec0
                present |= (integral[r + c, cc + c] - integral[r, cc + c] - integral[r + c, cc]
                            + integral[r, cc]) > 0
            rows, cols = rows[present], cols[present]
        else:
            rows, cols = rows[:0], cols[:0]
        co = c // q
        for s in range(0, len(rows), self.batch_size):
            rr, cc = rows[s : s + self.batch_size] - er0, cols[s : s + self.batch_size] - ec0
            crops = {m: torch.stack([normed[m][r : r + c, k : k + c] for r, k in zip(rr, cc,
                                     strict=True)]) for m in mods}
            values, valid = self._run(crops, timestamps)
            for n, (r, k) in enumerate(zip(rr // q, cc // q, strict=True)):
                w = self.weights * valid[n]
                acc[:, r : r + co, k : k + co] += values[n] * w
                wsum[r : r + co, k : k + co] += w
        c0, r0, c1, r1 = tile.core
        core = (slice((r0 - er0) // q, (r1 - er0) // q), slice((c0 - ec0) // q, (c1 - ec0) // q))
        acc, wsum = acc[:, core[0], core[1]], wsum[core]
        known = (wsum > 0) & self._area_mask(tile)
        if self.kind == "class":
            out = np.where(known, acc.argmax(0), NODATA_CLASS).astype(np.uint8)[None]
        else:
            out = np.where(known, acc / np.maximum(wsum, 1e-12), np.nan).astype(np.float32)
        return out

    def _area_mask(self, tile: AreaTile) -> np.ndarray:
        """bool ``[h, w]``: output pixels of the core whose centre is inside the area."""
        plan, q = self.plan, self.plan.out_scale
        c0, r0, c1, r1 = tile.core
        res = plan.resolution
        transform = Affine(res * q, 0, c0 * res, 0, -res * q, -r0 * res)
        shape = ((r1 - r0) // q, (c1 - c0) // q)
        return rasterio.features.geometry_mask([plan.area], shape, transform, invert=True)


# -- parts on disk ------------------------------------------------------------------------------
def _part_path(parts: Path, index: int) -> Path:
    return parts / f"tile_{index:07d}.npy"


def _write_part(parts: Path, index: int, data: np.ndarray) -> None:
    tmp = parts / f".tile_{index:07d}.{uuid.uuid4().hex[:8]}.npy"
    np.save(tmp, data)
    os.replace(tmp, _part_path(parts, index))  # a part exists only once complete


def _parts_fingerprint(parts: Path) -> str | None:
    try:
        return json.loads((parts / PLAN_FILE).read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None


def _prepare_parts(parts: Path, fingerprint: str) -> None:
    """Create the parts folder, discarding parts of another plan or model."""
    plan_file = parts / PLAN_FILE
    if parts.exists() and _parts_fingerprint(parts) != fingerprint:
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    if not plan_file.exists():
        tmp = parts / f".{PLAN_FILE}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps({"fingerprint": fingerprint}))
        os.replace(tmp, plan_file)


def _model_key(fm: FinetunedModel) -> str:
    if fm.path is None:
        return str(id(fm))
    st = (Path(fm.path) / "weights.safetensors").stat()
    return f"{Path(fm.path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _existing_fingerprint(path: Path) -> str | None:
    try:
        with rasterio.open(path) as src:
            return src.tags().get("geolatent_plan")
    except (OSError, rasterio.errors.RasterioError):
        return None


def _sources(fm: FinetunedModel, sources) -> list[Source]:
    if sources is None:
        if not fm.sources:
            raise ValueError("the model folder records no imagery sources; pass sources")
        sources = fm.sources
    if sources and isinstance(sources[0], Source):
        return list(sources)
    adapter = TypeAdapter(SourceConfig)
    return open_sources([adapter.validate_python(s) if isinstance(s, dict) else s
                         for s in sources])


def end_exclusive(end: str) -> str:
    """A date-only end (``2024-12-31``) is inclusive: the range runs to the next day."""
    text = str(end).strip()
    if len(text) == 10:  # YYYY-MM-DD
        return (date.fromisoformat(text) + timedelta(days=1)).isoformat()
    return text


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world size {world}")
    return rank, world


def _wait_for_parts(parts: Path, tiles: Sequence[AreaTile], timeout_s: float = 24 * 3600) -> None:
    """Rank 0 without torch.distributed: wait until every tile's part exists."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        return
    deadline = time.monotonic() + timeout_s
    while not all(_part_path(parts, t.index).exists() for t in tiles):
        if time.monotonic() > deadline:
            raise TimeoutError(f"other ranks did not finish their tiles in {parts}")
        time.sleep(2.0)


# -- the whole area -----------------------------------------------------------------------------
def predict_area(
    model: str | os.PathLike | FinetunedModel,
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
    precision: str = "fp32",
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
) -> PredictResult:
    """Predict over ``area`` from ``start`` to ``end`` and write a COG at ``out_path``.

    Args:
        model: a fine-tuned model folder or a loaded :class:`FinetunedModel`.
        area: GeoJSON / GeoPackage / Shapefile path, GeoJSON mapping, lon/lat geometry or box.
        start, end: ISO dates of the imagery time range (a date-only end is inclusive:
            ``2024-01-01`` .. ``2024-12-31`` is one year; at most 12 monthly steps).
        out_path: the output ``.tif``.
        sources: imagery (data-layer source configs or opened sources); default: the sources
            recorded in the model folder.
        crs: output CRS (default: UTM zone of the area's centre).
        crop, stride: model crop side and spacing in pixels (default: the training crop, half).
        tile: tile core side in pixels (memory per work item grows with its square).
        blend: ``linear`` (weighted blend of overlapping crops) or ``trim`` (centre blocks).
        batch_size: crops per model call.
        device: ``auto`` / ``cpu`` / ``cuda[:i]``.
        precision: encoder precision ``fp32`` | ``bf16`` | ``int8`` | ``auto``
            (:mod:`geolatent.model.precision`); a model passed in is copied, not converted.
        executor, workers, scheduler: how tiles are materialized (data-layer executor).
        resume: skip tiles finished by an earlier run (and the whole run if ``out_path`` is
            already this plan's output).
        keep_parts: keep the part files after writing the COG.
        vector_path: also write class polygons (lon/lat GeoJSON) there (class maps only).
        progress: ``(tiles_done, tiles_total)`` after every tile.
        rank, world_size: this process's share of the tiles (default: torchrun's env).
        gdal_cache_mb: GDAL block cache while reading inputs and writing the COG.
    """
    t0 = time.perf_counter()
    rank, world = _rank_world(rank, world_size)
    dev = resolve_device(device)
    if device == "auto" and dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    fm = model if isinstance(model, FinetunedModel) else load_bundle(model, dev)
    fm.model.to(dev).eval()
    if isinstance(model, FinetunedModel) and precision != "fp32":
        fm = copy.copy(fm)
        fm.model = copy.deepcopy(fm.model)
    resolved = set_precision(fm.model, precision)
    meter = ComputeMeter(dev, resolved.name, "km2")
    meter.start()
    kind = output_kind(fm)
    if vector_path is not None and kind != "class":
        raise ValueError("vector output is for class maps; this model predicts "
                         f"{fm.task.type}")
    srcs = _sources(fm, sources)
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
    plan = plan_prediction(area, (start, end), crop=crop, stride=stride, tile=tile,
                           out_scale=q, crs=crs, resolution=fm.inputs.resolution_m)
    months = len(plan.tiles[0].window.months)
    if months > MAX_TIMESTEPS:
        raise ValueError(f"{start}..{end} covers {months} months; the model takes at most "
                         f"{MAX_TIMESTEPS} monthly steps")
    out_path = Path(out_path)
    key = _model_key(fm)
    fingerprint = plan.fingerprint(key if resolved.name == "fp32" else f"{key}:{resolved.name}")
    total = len(plan.tiles)

    def result(run: int, resumed: int) -> PredictResult:
        meter.add(plan.area_km2 * run / max(total, 1))
        return PredictResult(out_path, Path(vector_path) if vector_path else None, plan.width,
                             plan.height, plan.crs, plan.transform, kind, total, run, resumed,
                             plan.area_km2, time.perf_counter() - t0, meter.report_dict())

    if resume and out_path.exists() and _existing_fingerprint(out_path) == fingerprint:
        if progress is not None:
            progress(total, total)
        return result(0, total)
    parts = out_path.with_name(out_path.name + ".parts")
    if rank == 0:
        _prepare_parts(parts, fingerprint)
    else:  # rank 0 owns the folder (it discards stale parts): wait until it is this plan's
        while _parts_fingerprint(parts) != fingerprint:
            time.sleep(0.5)
    mine = [t for t in plan.tiles if t.index % world == rank]
    todo = [t for t in mine if not (resume and _part_path(parts, t.index).exists())]
    resumed = len(mine) - len(todo)
    done = resumed
    if progress is not None:
        progress(done, len(mine))
    predictor = TilePredictor(fm, plan, dev, batch_size, blend, precision)
    jobs, failures = [], []
    for t in todo:
        bbox = t.window.bounds_wgs84
        scenes = {s.name: s.scenes_for(t.window, bbox) for s in srcs}
        if not any(scenes.values()):  # no imagery at all: nodata without reading anything
            empty = predictor.predict(t, {}, np.zeros((0, 3), np.int64))
            _write_part(parts, t.index, empty)
            done += 1
            if progress is not None:
                progress(done, len(mine))
            continue
        jobs.append(TileJob(t.index, t.window, [s.with_scenes(scenes[s.name]) for s in srcs],
                            list(fm.inputs.modalities), gdal_cache_mb))
    by_index = {t.index: t for t in plan.tiles}
    ex = make_executor(executor, workers, scheduler)  # type: ignore[arg-type]
    try:
        for outcome in ex.map_unordered(materialize_tile, jobs):
            job: TileJob = outcome.item
            if outcome.error is not None:
                failures.append(f"tile {job.index} ({job.window.name}): {outcome.error}")
                continue
            m = outcome.value
            core = predictor.predict(by_index[job.index], m["arrays"], m["timestamps"])
            _write_part(parts, job.index, core)
            del m
            done += 1
            if progress is not None:
                progress(done, len(mine))
    finally:
        ex.close()
    if failures:
        raise RuntimeError(f"{len(failures)} tiles failed (rerun to resume after fixing):\n" +
                           "\n".join(failures[:10]))
    if rank != 0:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        return result(len(jobs), resumed)
    if world > 1:
        _wait_for_parts(parts, plan.tiles)
    # GDAL's block cache defaults to 5% of RAM; cap it while writing / converting the COG.
    with rasterio.Env(GDAL_CACHEMAX=gdal_cache_mb):
        write_prediction_cog(plan, fm, parts, out_path, kind, fingerprint, predictor.bands)
    if vector_path is not None:
        from geolatent.platform.vectorize import write_class_polygons

        write_class_polygons(out_path, vector_path, fm.classes)  # type: ignore[arg-type]
    if not keep_parts:
        shutil.rmtree(parts, ignore_errors=True)
    return result(len(todo), resumed)


def write_prediction_cog(plan: PredictionPlan, fm: FinetunedModel, parts: Path, out_path: Path,
                         kind: str, fingerprint: str, bands: int) -> Path:
    """Stream every tile's part into a COG (one part in memory at a time)."""
    tags = {
        "geolatent_product": "prediction",
        "geolatent_plan": fingerprint,
        "task": fm.task.type,
        "model": str(fm.path or ""),
        "time_range": "/".join(plan.time_range),
        "crop": plan.crop,
        "stride": plan.stride,
    }
    colormap, descriptions, nodata, dtype = None, None, float("nan"), "float32"
    if kind == "class":
        classes = fm.classes
        assert classes is not None
        colormap, descriptions, nodata, dtype = classes.colormap(), ["class"], NODATA_CLASS, "uint8"
        tags["class_names"] = json.dumps(list(classes.names))
        tags["class_values"] = json.dumps(list(classes.values))
        tags |= {f"class_{i}": n for i, n in enumerate(classes.names)}
    elif kind == "value":
        descriptions = [fm.task.value_name]
    else:
        descriptions = [f"embedding_{i:03d}" for i in range(bands)]
    q = plan.out_scale
    c0, r0 = plan.bounds[:2]
    with COGWriter(out_path, width=plan.width, height=plan.height, count=bands, dtype=dtype,
                   crs=plan.crs, transform=plan.transform, nodata=nodata,
                   band_descriptions=descriptions, colormap=colormap, tags=tags,
                   blocksize=256) as writer:
        for t in plan.tiles:
            data = np.load(_part_path(parts, t.index))
            writer.write(data, (t.core[1] - r0) // q, (t.core[0] - c0) // q)
    return out_path
