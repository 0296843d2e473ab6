"""One tile of a prediction: materialize its window (in a worker) and run the model on its
overlapping crops, blended into the tile core."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import rasterio.features
import torch
from affine import Affine

from geolatent.data.materialize import materialize_window, read_scene
from geolatent.data.sources import Source
from geolatent.data.window import Window
from geolatent.modalities import MISSING_VALUE, get_modality
from geolatent.model.embed import embed
from geolatent.platform.area import AreaTile, PredictionPlan, blend_weights
from geolatent.platform.classes import NODATA_CLASS
from geolatent.platform.encoder_inputs import batch_from_normalized, normalize_arrays
from geolatent.platform.predict.plan import (
    PredictionModel,
    Timeline,
    output_bands,
    output_kind,
)
from geolatent.units import Fix, check_values

PixelBounds = tuple[int, int, int, int]


@dataclass
class TileJob:
    """What a worker needs to materialize one tile (small and picklable).

    ``timeline`` (an explicit time axis) places each scene at the timestep of its date instead
    of compositing months; ``read_bounds`` (global pixels) limits what is read (``embed``: its
    input grid, so a warp covers the same extent whatever the tiling)."""

    index: int
    window: Window
    sources: list[Source]
    modalities: list[str]
    gdal_cache_mb: int = 64
    timeline: Timeline | None = None
    read_bounds: PixelBounds | None = None


def materialize_tile(job: TileJob) -> dict:
    """Materialize a tile's window: ``{"arrays": {m: [H, W, T, C]}, "timestamps": [T, 3]}``."""
    if job.timeline is not None:
        with rasterio.Env(GDAL_CACHEMAX=int(job.gdal_cache_mb)):
            arrays = read_dated(job.window, job.sources, job.timeline, job.read_bounds)
        return {"arrays": {m: a for m, a in arrays.items() if m in job.modalities},
                "timestamps": job.timeline.timestamps, "warnings": []}
    mw = materialize_window(job.window, job.sources, gdal_cache_mb=job.gdal_cache_mb)
    arrays = {m: a for m, a in mw.arrays.items() if m in job.modalities}
    return {"arrays": arrays, "timestamps": mw.timestamps, "warnings": mw.warnings}


def read_dated(window: Window, sources: list[Source], timeline: Timeline,
               read_bounds: PixelBounds | None = None) -> dict[str, np.ndarray]:
    """Each scene of ``sources`` onto ``window`` at the timestep of its date (no compositing).

    Args:
        window: the target grid (global pixel bounds, CRS, resolution, origin).
        sources: data-layer sources (scenes read by :func:`~geolatent.data.materialize.read_scene`:
            any CRS and resolution, warped and resampled by the data layer's rules).
        timeline: the time axis.
        read_bounds: only these global pixels are read (others stay missing).

    Returns:
        per modality float32 ``[H, W, T, C]`` in registry channel order and raw units; -99999
        where a scene has no valid value, at timesteps without a scene, and in bands no source
        provides.

    Raises:
        SceneReadError: naming the file, when a scene cannot be read.
    """
    c0, r0, c1, r1 = window.pixel_bounds
    n_t = len(timeline.dates)
    out = {s.modality: np.full((r1 - r0, c1 - c0, n_t, get_modality(s.modality).num_bands),
                               MISSING_VALUE, np.float32) for s in sources}
    b = read_bounds or window.pixel_bounds
    rc0, rr0, rc1, rr1 = max(c0, b[0]), max(r0, b[1]), min(c1, b[2]), min(r1, b[3])
    if rc0 >= rc1 or rr0 >= rr1:
        return out
    part = Window(window.crs, (rc0, rr0, rc1, rr1), window.time_range, window.resolution,
                  origin=window.origin)
    rows, cols = slice(rr0 - r0, rr1 - r0), slice(rc0 - c0, rc1 - c0)
    for s in sources:
        mod = get_modality(s.modality)
        channels = [mod.band_index(band) for band in s.bands]
        for scene in s.scenes:
            t = timeline.index(scene.datetime.date())
            layer = read_scene(scene, s, part)[channels]  # [C used, h, w], NaN invalid
            out[s.modality][rows, cols, t][..., channels] = np.where(
                np.isnan(layer), np.float32(MISSING_VALUE), layer).transpose(1, 2, 0)
    return out


class TilePredictor:
    """Runs the model on a tile's crops and blends them into the tile core.

    A plain model's embedding map sees only the inputs inside the plan's bounds (full patches
    of the area's box): pixels beyond them are missing, so an embedding does not depend on
    imagery outside the map.

    Args:
        fm: the fine-tuned or plain model (on ``device``).
        plan: the prediction plan (its ``blend`` weights the crops).
        batch_size: crops per model call.
        precision: ``bf16`` autocast on GPUs, or ``fp32``.
        fix: per modality where its inputs came from, so unit errors name what to change
            (default: a source in a config).
    """

    def __init__(self, fm: PredictionModel, plan: PredictionPlan, device: torch.device,
                 batch_size: int = 16, precision: str = "fp32",
                 fix: Mapping[str, Fix] | None = None):
        self.fm, self.plan, self.device = fm, plan, device
        self.batch_size = batch_size
        self.kind = output_kind(fm)
        self.p = fm.inputs.patch_size
        self.fix = dict(fix or {})
        q = plan.out_scale
        self.weights = blend_weights(plan.crop // q, plan.stride // q, plan.blend)
        # the block of a crop that carries weight: whole crop (linear), centre (trim)
        m = (plan.crop - plan.stride) // 2 if plan.blend == "trim" else 0
        self.block = (m, plan.stride if plan.blend == "trim" else plan.crop)
        self.autocast = device.type == "cuda" and precision == "bf16"
        self.crops_run = 0

    @property
    def bands(self) -> int:
        return output_bands(self.fm, self.kind)

    @property
    def channels(self) -> int:
        """Channels blended per pixel (class probabilities, a value, or features)."""
        if self.kind == "class":
            return self.fm.classes.num_classes  # type: ignore[union-attr]
        return self.bands

    @torch.inference_mode()
    def _run(self, crops: dict[str, torch.Tensor], ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(values [N, K, co, co], valid [N, co, co])`` in output units for a batch of
        crops ``{m: [N, c, c, T, C]}`` (normalized; raw for a plain model's embedding map)."""
        fm, q = self.fm, self.plan.out_scale
        if self.kind == "embedding":  # the encoder's feature map, as geolatent.embed gives it
            ts_b = np.repeat(np.asarray(ts)[None], len(next(iter(crops.values()))), axis=0)
            feat = embed(fm.model, crops, timestamps=ts_b, patch_size=self.p,
                         check_units=False).feature_map.float()  # [N, h, w, D], NaN: no token
            valid = ~torch.isnan(feat[..., 0])
            return (torch.nan_to_num(feat).permute(0, 3, 1, 2).cpu().numpy(),
                    valid.cpu().numpy())
        batch = batch_from_normalized(crops, ts, self.p, fm.model.encoder.model_config)
        batch = batch.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            feats = fm.model.encode(batch)
            out = fm.model.head(feats, batch).float()
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
        if self.kind == "embedding":
            arrays = self._inside_bounds(arrays, tile)
            for m in mods:  # the whole tile: the inputs are the user's files
                check_values(m, arrays[m], what=m, fix=self.fix.get(m, Fix("config")))
            normed = {m: torch.from_numpy(arrays[m]) for m in mods}  # embed normalizes
        else:
            for m in mods:  # once per tile, on a subsample: crops overlap, the check need not
                check_values(m, arrays[m][::4, ::4], what=f"tile {tile.index} ({m})",
                             fix=self.fix.get(m, Fix("config")))
            # Normalized once per tile rather than once per overlapping crop.
            normed = normalize_arrays(arrays, mods, check_units=False) if mods else {}
        if mods:  # crops with no valid input under their weighted block are not run
            present = np.zeros(len(rows), dtype=bool)
            bm, bw = self.block
            for m in mods:
                has = (arrays[m] != MISSING_VALUE).any(axis=(2, 3))  # [H, W]
                integral = np.pad(has.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
                r, cc = rows - er0 + bm, cols - ec0 + bm
                present |= (integral[r + bw, cc + bw] - integral[r, cc + bw]
                            - integral[r + bw, cc] + integral[r, cc]) > 0
            rows, cols = rows[present], cols[present]
        else:
            rows, cols = rows[:0], cols[:0]
        self.crops_run += len(rows)
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

    def _inside_bounds(self, arrays: dict[str, np.ndarray], tile: AreaTile
                       ) -> dict[str, np.ndarray]:
        """``arrays`` with the pixels outside the plan's bounds set missing."""
        ec0, er0, ec1, er1 = tile.window.pixel_bounds
        bc0, br0, bc1, br1 = self.plan.bounds
        if bc0 <= ec0 and br0 <= er0 and ec1 <= bc1 and er1 <= br1:
            return arrays
        inside = np.zeros((er1 - er0, ec1 - ec0), bool)
        inside[max(br0 - er0, 0) : max(br1 - er0, 0), max(bc0 - ec0, 0) : max(bc1 - ec0, 0)] = True
        return {m: np.where(inside[:, :, None, None], a, np.float32(MISSING_VALUE))
                for m, a in arrays.items()}

    def _area_mask(self, tile: AreaTile) -> np.ndarray:
        """bool ``[h, w]``: output pixels of the core whose centre is inside the area."""
        plan, q = self.plan, self.plan.out_scale
        c0, r0, c1, r1 = tile.core
        res = plan.resolution
        x0, y0 = plan.origin
        transform = Affine(res * q, 0, x0 + c0 * res, 0, -res * q, y0 - r0 * res)
        shape = ((r1 - r0) // q, (c1 - c0) // q)
        return rasterio.features.geometry_mask([plan.area], shape, transform, invert=True)
