"""One tile of a prediction: materialize its window (in a worker) and run the model on its
overlapping crops, blended into the tile core."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio.features
import torch
from affine import Affine

from geolatent.data.materialize import materialize_window
from geolatent.data.sources import Source
from geolatent.data.window import Window
from geolatent.modalities import MISSING_VALUE
from geolatent.platform.area import AreaTile, BlendMode, PredictionPlan, blend_weights
from geolatent.platform.bundle import FinetunedModel
from geolatent.platform.classes import NODATA_CLASS
from geolatent.platform.encoder_inputs import batch_from_normalized, normalize_arrays
from geolatent.platform.predict.plan import output_bands, output_kind
from geolatent.units import Fix, check_values


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
        normalized crops ``{m: [N, c, c, T, C]}``."""
        fm, q = self.fm, self.plan.out_scale
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
        for m in mods:  # once per tile, on a subsample: crops overlap, the check need not
            check_values(m, arrays[m][::4, ::4], what=f"tile {tile.index} ({m})",
                         fix=Fix("config"))
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
        x0, y0 = plan.origin
        transform = Affine(res * q, 0, x0 + c0 * res, 0, -res * q, y0 - r0 * res)
        shape = ((r1 - r0) // q, (c1 - c0) // q)
        return rasterio.features.geometry_mask([plan.area], shape, transform, invert=True)
