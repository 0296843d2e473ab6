"""Materialized arrays -> what the encoder takes, shared by fine-tuning and prediction.

One path for both, so a fine-tuned model sees at prediction time exactly what it saw in
training: raw values in registry band order (``[B, H, W, T, C]``, -99999 missing, as
:func:`geolatent.data.materialize_window` gives them) are unit-checked and normalized with
:func:`geolatent.normalize.normalize`; a token whose whole patch is missing in its bandset is
marked MISSING (the same rule as :func:`geolatent.model.embed.embed`), so missing data never
reaches attention or pooling; partly missing patches are filled inside the patch embedding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from geolatent.modalities import MISSING_VALUE, get_modality
from geolatent.model.embed import EncoderBatch, check_value_units, prepare_inputs
from geolatent.normalize import normalize


def normalize_arrays(
    arrays: Mapping[str, np.ndarray | torch.Tensor],
    modalities: Sequence[str] | None = None,
    check_units: bool = True,
) -> dict[str, torch.Tensor]:
    """Raw arrays ``[..., C]`` (registry band order and units, -99999 / NaN missing) ->
    normalized float32 tensors of the same shape (missing stays -99999), per modality.

    ``modalities`` selects and orders the modalities kept (default: all given);
    ``check_units`` rejects values whose range says they are in the wrong units.
    """
    names = [m for m in (modalities or list(arrays)) if m in arrays]
    if not names:
        raise ValueError(f"none of the model's modalities {list(modalities or [])} is in the "
                         f"inputs {list(arrays)}")
    out = {}
    for m in names:
        a = arrays[m]
        x = a.float() if isinstance(a, torch.Tensor) else torch.from_numpy(
            np.asarray(a, dtype=np.float32))
        if check_units:
            check_value_units(m, x, normalized=False)
        out[m] = normalize(m, x)
    return out


def batch_from_normalized(
    inputs: Mapping[str, torch.Tensor], timestamps: np.ndarray | torch.Tensor, patch_size: int,
    config=None,
) -> EncoderBatch:
    """An :class:`EncoderBatch` from normalized ``[B, H, W, T, C]`` tensors (token masks by the
    rule of :func:`geolatent.model.embed.prepare_inputs`; ``config``: the model's ModelConfig)."""
    return prepare_inputs(
        dict(inputs), np.asarray(timestamps), patch_size, normalize=False, check_units=False,
        config=config,
    )


def prepare_batch(
    arrays: Mapping[str, np.ndarray | torch.Tensor],
    timestamps: np.ndarray | torch.Tensor,
    patch_size: int,
    modalities: Sequence[str] | None = None,
    check_units: bool = True,
    config=None,
) -> EncoderBatch:
    """Normalize raw arrays and build token masks (:func:`geolatent.model.embed.prepare_inputs`;
    ``config``: the model's ModelConfig, whose version decides the missing-band fill).

    Args:
        arrays: per modality raw float32 ``[B, H, W, T, C]`` in registry band order and units
            (Sentinel-2 L2A DN, Sentinel-1 dB, Landsat L1 DN); -99999 / NaN missing.
        timestamps: int ``[B, T, 3]`` or ``[T, 3]`` (shared by the batch).
        patch_size: p; H and W must be multiples of p.
        modalities: the modalities to keep (others in ``arrays`` are ignored); default all.
        check_units: reject values whose range says they are in the wrong units.
    """
    names = [m for m in (modalities or list(arrays)) if m in arrays]
    if not names:
        raise ValueError(f"none of the model's modalities {list(modalities or [])} is in the "
                         f"inputs {list(arrays)}")
    ts = timestamps if isinstance(timestamps, torch.Tensor) else np.asarray(timestamps)
    return prepare_inputs({m: arrays[m] for m in names}, ts, patch_size, check_units=check_units,
                          config=config)  # fmt: skip


def pixel_summary(batch: EncoderBatch, modalities: Sequence[str]) -> torch.Tensor:
    """Full-resolution skip features for pixel decoders: ``[B, sum(C_m + 1), H, W]``.

    Per modality the mean over time of the valid normalized values of each band (0 where none)
    and the fraction of valid timesteps; a modality the batch lacks contributes zeros, so the
    channel layout depends only on ``modalities``.
    """
    b, h, w = batch.shape
    ref = next(iter(batch.inputs.values()))
    parts = []
    for m in modalities:
        c = get_modality(m).num_bands
        x = batch.inputs.get(m)
        if x is None:
            parts.append(ref.new_zeros(b, c + 1, h, w))
            continue
        valid = (x != MISSING_VALUE).to(x.dtype)  # [B, H, W, T, C]
        count = valid.sum(3)
        mean = (torch.where(valid.bool(), x, 0.0).sum(3) / count.clamp_min(1)).permute(0, 3, 1, 2)
        frac = (count.amax(-1) / x.shape[3]).unsqueeze(1)
        parts += [mean, frac]
    return torch.cat(parts, dim=1)
