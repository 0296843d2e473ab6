"""User-facing embedding: raw arrays in, tokens / feature map / pooled vector out.

Checks everything a user can get wrong (modality names, band count and order, units, shapes,
dates, patch size), normalizes with the pretraining statistics, masks missing data, and runs the
encoder. Missing data (-99999 or NaN) never reaches attention or pooling: a token is excluded
when a band of its bandset has no valid pixel in the patch; bandsets a user does not provide are
excluded the same way (never zero-filled). With complete inputs the result equals v1's
inference pass exactly.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from geolatent.modalities import MAX_TIMESTEPS, MISSING_VALUE, get_modality
from geolatent.model.encoder import EncoderOutput, spatial_mean
from geolatent.model.precision import encoder_at
from geolatent.model.tokens import MaskValue
from geolatent.normalize import normalize as normalize_values

ArrayLike = np.ndarray | torch.Tensor


class InputError(ValueError):
    """Inputs that cannot be embedded as given; the message says what to change."""


@dataclass
class Embedding:
    """Result of :func:`embed`.

    Attributes:
        tokens: per modality ``[B, H/p, W/p, T, S, D]`` (exactly 0 at excluded tokens).
        token_mask: per modality ``[B, H/p, W/p, T, S]``; 0 = encoded, 3 = missing.
        feature_map: ``[B, H/p, W/p, D]``: per modality the mean over (T, S) of encoded tokens,
            then the mean over modalities with data there; NaN where no input was valid.
        pooled: ``[B, D]`` mean over all encoded tokens (NaN for a sample without valid data).
        project_aggregated: ``[B, D]`` contrastive-head projection of ``pooled``.
        patch_size: p.
    """

    tokens: dict[str, torch.Tensor]
    token_mask: dict[str, torch.Tensor]
    feature_map: torch.Tensor
    pooled: torch.Tensor
    project_aggregated: torch.Tensor
    patch_size: int


@dataclass
class EncoderBatch:
    """Inputs exactly as the encoder takes them (what :func:`prepare_inputs` returns).

    Attributes:
        inputs: per modality normalized float32 ``[B, H, W, T, C]`` in registry band order
            (missing = -99999).
        timestamps: int64 ``[B, T, 3]`` (day, month 0-11, year).
        token_mask: per modality ``[B, H/p, W/p, T, S]`` (0 encoded, 3 missing), or None when
            nothing is missing (the encoder's full pass, identical to v1's fast pass).
        patch_size: p.
    """

    inputs: dict[str, torch.Tensor]
    timestamps: torch.Tensor
    token_mask: dict[str, torch.Tensor] | None
    patch_size: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(B, H, W)``."""
        b, h, w = next(iter(self.inputs.values())).shape[:3]
        return b, h, w

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> EncoderBatch:
        inputs = {m: x.to(device=device, dtype=dtype) for m, x in self.inputs.items()}
        masks = self.token_mask
        if masks is not None:
            masks = {m: t.to(device) for m, t in masks.items()}
        return EncoderBatch(inputs, self.timestamps.to(device), masks, self.patch_size)

    def slice(self, rows: slice) -> EncoderBatch:
        """The samples ``rows`` of the batch."""
        masks = self.token_mask
        if masks is not None:
            masks = {m: t[rows] for m, t in masks.items()}
        return EncoderBatch(
            {m: x[rows] for m, x in self.inputs.items()}, self.timestamps[rows], masks,
            self.patch_size,
        )  # fmt: skip


def _to_tensor(x, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float32)
    try:
        arr = np.asarray(x)
    except Exception as e:
        raise InputError(f"{what}: cannot convert {type(x).__name__} to an array") from e
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{what}: expected numeric values, got dtype {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def _assemble(name: str, value, band_list: Sequence[str] | None) -> tuple[torch.Tensor, list[bool]]:
    """Full ``[B, H, W, T, C]`` tensor in registry order, and per-bandset presence."""
    mod = get_modality(name)
    if isinstance(value, Mapping):
        if band_list is not None:
            raise InputError(f"{name}: give bands either as a dict or with `bands=`, not both")
        band_list = list(value.keys())
        planes = [_to_tensor(v, f"{name}.{b}") for b, v in value.items()]
        shapes = {tuple(p.shape) for p in planes}
        if len(shapes) != 1:
            raise InputError(f"{name}: band arrays have different shapes {sorted(shapes)}")
        if planes[0].ndim != 4:
            raise InputError(
                f"{name}: each band array must be [B, H, W, T], got shape {tuple(planes[0].shape)}"
            )
        x = torch.stack(planes, dim=-1)
    else:
        x = _to_tensor(value, name)
    if x.ndim != 5:
        raise InputError(
            f"{name}: expected a [B, H, W, T, C] array, got shape {tuple(x.shape)} "
            "(add a batch axis for one sample, and a T axis of 1 for a single date)"
        )
    if band_list is None:
        if x.shape[-1] != mod.num_bands:
            raise InputError(
                f"{name}: expected {mod.num_bands} bands in the order {list(mod.bands)}, got "
                f"{x.shape[-1]}; pass bands={{'{name}': [...]}} to name the bands you have, or a "
                "dict of band name -> [B, H, W, T] array"
            )
        return x, [True] * mod.num_bandsets
    band_list = list(band_list)
    if len(band_list) != x.shape[-1]:
        raise InputError(f"{name}: {len(band_list)} band names given for {x.shape[-1]} channels")
    try:
        idx = [mod.band_index(b) for b in band_list]
    except KeyError as e:
        raise InputError(str(e.args[0])) from None
    if len(set(idx)) != len(idx):
        raise InputError(f"{name}: duplicate bands in {band_list}")
    full = torch.full((*x.shape[:-1], mod.num_bands), MISSING_VALUE, dtype=torch.float32)
    full[..., idx] = x
    have = set(idx)
    present = []
    for bs, sl in zip(mod.bandsets, mod.bandset_slices(), strict=True):
        chans = set(range(sl.start, sl.stop))
        if chans <= have:
            present.append(True)
        elif chans & have:
            lacking = [b for b, c in zip(bs, sorted(chans), strict=True) if c not in have]
            raise InputError(
                f"{name}: bandset {list(bs)} is incomplete (missing {lacking}); a bandset is "
                "tokenized as a whole, so give all of its bands or none of them"
            )
        else:
            present.append(False)
    return full, present


def _timestamps(ts, batch: int, steps: int) -> torch.Tensor:
    if ts is None:
        raise InputError("timestamps are required: [B, T, 3] (day, month 0-11, year) or T dates")
    if isinstance(ts, Sequence) and ts and isinstance(ts[0], (_dt.date, np.datetime64, str)):
        dates = [
            _dt.date.fromisoformat(d) if isinstance(d, str)
            else (d.astype("datetime64[D]").item() if isinstance(d, np.datetime64) else d)
            for d in ts
        ]  # fmt: skip
        ts = np.array([[d.day, d.month - 1, d.year] for d in dates], dtype=np.int64)
    t = torch.as_tensor(np.asarray(ts) if not isinstance(ts, torch.Tensor) else ts).long()
    if t.ndim == 2:
        t = t[None].expand(batch, -1, -1)
    if t.ndim != 3 or t.shape[-1] != 3:
        raise InputError(f"timestamps must be [B, T, 3] (day, month, year), got {tuple(t.shape)}")
    if t.shape[0] != batch or t.shape[1] != steps:
        raise InputError(
            f"timestamps shape {tuple(t.shape)} does not match B={batch}, T={steps} of the inputs"
        )
    months, days = t[..., 1], t[..., 0]
    if bool(((months < 0) | (months > 11)).any()):
        raise InputError(
            "timestamp months must be 0-11 (January = 0); got values outside that range "
            f"({sorted(set(months.flatten().tolist()))})"
        )
    if bool(((days < 1) | (days > 31)).any()):
        raise InputError("timestamp days must be 1-31")
    return t


def check_value_units(name: str, x: torch.Tensor, normalized: bool) -> None:
    """Reject values whose range says they are in the wrong units (vectorized, cheap).

    ``x`` is ``[..., C]`` in the modality's raw units, missing entries -99999 / NaN.
    """
    valid = ~((x == MISSING_VALUE) | torch.isnan(x))
    n = int(valid.sum())
    if n == 0:
        return
    vals = x[valid]
    if normalized:
        if float((vals.abs() > 50).float().mean()) > 0.5:
            raise InputError(
                f"{name}: normalize=False expects normalized values (about 0-1), but most values "
                "exceed 50: these look like raw units; use normalize=True"
            )
        return
    small = float((vals.abs() <= 1.5).float().mean())
    if name in ("sentinel2_l2a", "landsat") and small > 0.99:
        unit = (
            "Sentinel-2 L2A digital numbers (0-10000)"
            if name == "sentinel2_l2a"
            else ("Landsat Level-1 digital numbers")
        )
        raise InputError(
            f"{name}: {small:.1%} of values are within [-1.5, 1.5]: this looks like reflectance "
            f"in 0-1 (or already-normalized values), but geolatent expects {unit}. Multiply "
            "reflectance by 10000, pass normalize=False for normalized values, or "
            "check_units=False to override."
        )
    if name == "sentinel1" and float((vals >= 0).float().mean()) > 0.95:
        raise InputError(
            "sentinel1: values are almost all >= 0: this looks like linear backscatter, but "
            "geolatent expects decibels (10*log10(linear)); convert, or pass check_units=False"
        )


def token_missing(x: torch.Tensor, patch_size: int, bandset_slices: list[slice]) -> torch.Tensor:
    """``[B, H/p, W/p, T, S]`` True where a token cannot be formed faithfully.

    A token is missing when some band of its bandset has no valid pixel in the patch (a bandset
    is tokenized as a whole, so a half-present bandset, e.g. Sentinel-1 VV without VH, is masked
    rather than having the absent band invented). Pixels missing in only part of a patch are
    filled before patch embedding. With whole bandsets missing (the v1 convention) this is v1's
    rule: every pixel of the patch in every band is missing. ``x`` is ``[B, H, W, T, C]``.
    """
    b, h, w, t, c = x.shape
    p = patch_size
    miss = (x == MISSING_VALUE) | torch.isnan(x)
    band_gone = miss.reshape(b, h // p, p, w // p, p, t, c).all(dim=4).all(dim=2)
    return torch.stack([band_gone[..., sl].any(-1) for sl in bandset_slices], dim=-1)


def prepare_inputs(
    inputs: Mapping[str, ArrayLike | Mapping[str, ArrayLike]],
    timestamps=None,
    patch_size: int = 4,
    normalize: bool = True,
    bands: Mapping[str, Sequence[str]] | None = None,
    check_units: bool = True,
    supported: Sequence[str] | None = None,
) -> EncoderBatch:
    """Check, assemble, normalize and mask raw inputs: everything :func:`embed` does before the
    encoder runs. Training code (fine-tuning, evaluation) uses it to feed the encoder with
    gradients exactly what ``embed`` would.

    Args: as :func:`embed`; ``supported`` lists the modalities the model accepts.

    Returns:
        :class:`EncoderBatch` on the CPU.
    """
    if not isinstance(inputs, Mapping) or not inputs:
        raise InputError("inputs must be a non-empty dict of modality name -> array")
    if not isinstance(patch_size, (int, np.integer)) or not 1 <= int(patch_size) <= 8:
        raise InputError(f"patch_size must be an integer in 1..8, got {patch_size!r}")
    p = int(patch_size)
    tensors, presence = {}, {}
    for name, value in inputs.items():
        try:
            mod = get_modality(name)
        except KeyError as e:
            raise InputError(str(e.args[0])) from None
        if mod.decode_only:
            raise InputError(
                f"{name} is a decode-only map product: maps are pretraining targets, never "
                "encoder inputs; give satellite imagery (e.g. sentinel2_l2a, sentinel1, landsat)"
            )
        if supported is not None and name not in supported:
            raise InputError(f"{name} is not supported by this checkpoint ({sorted(supported)})")
        x, present = _assemble(name, value, (bands or {}).get(name))
        tensors[name], presence[name] = x, present
    if bands:
        extra = set(bands) - set(inputs)
        if extra:
            raise InputError(f"bands given for modalities that are not inputs: {sorted(extra)}")

    shapes = {n: tuple(x.shape) for n, x in tensors.items()}
    b, h, w, t = next(iter(shapes.values()))[:4]
    for s in shapes.values():
        if s[:3] != (b, h, w):
            raise InputError(f"all inputs must share [B, H, W]; got {shapes}")
        if s[3] != t:
            raise InputError(f"all multitemporal inputs must share T; got {shapes}")
    if not 1 <= t <= MAX_TIMESTEPS:
        raise InputError(f"T must be 1..{MAX_TIMESTEPS} (monthly timesteps), got {t}")
    if h % p or w % p:
        raise InputError(
            f"H={h} and W={w} must be divisible by patch_size={p}; crop or pad (with -99999, "
            "which is masked) to a multiple of p"
        )
    ts = _timestamps(timestamps, b, t)

    token_mask, normed = {}, {}
    for n, x in tensors.items():
        mod = get_modality(n)
        if check_units:
            check_value_units(n, x, normalized=not normalize)
        missing = token_missing(x, p, mod.bandset_slices())
        missing = missing | torch.tensor([not q for q in presence[n]])
        token_mask[n] = torch.where(missing, MaskValue.MISSING, MaskValue.ONLINE_ENCODER).long()
        if normalize:
            normed[n] = normalize_values(n, x)
        else:
            normed[n] = torch.where(torch.isnan(x), torch.tensor(MISSING_VALUE), x)
    any_missing = any(bool(m.any()) for m in token_mask.values())
    return EncoderBatch(normed, ts, token_mask if any_missing else None, p)


def embed(
    model,
    inputs: Mapping[str, ArrayLike | Mapping[str, ArrayLike]],
    timestamps=None,
    patch_size: int = 4,
    normalize: bool = True,
    bands: Mapping[str, Sequence[str]] | None = None,
    check_units: bool = True,
    batch_size: int | None = None,
    precision: str | None = None,
) -> Embedding:
    """Embed raw satellite inputs with the encoder of ``model``.

    Args:
        model: a :class:`~geolatent.model.latent_mim.LatentMIM`.
        inputs: per modality ``[B, H, W, T, C]`` (numpy or torch) in registry band order, or a
            dict of band name -> ``[B, H, W, T]``. Units: Sentinel-2 L2A DN (0-10000), Sentinel-1
            dB, Landsat L1 DN. Missing values: -99999 or NaN. Decode-only maps are rejected.
        timestamps: ``[B, T, 3]`` or ``[T, 3]`` ints (day 1-31, month 0-11, year), or T dates.
        patch_size: p in 1..8; H and W must be divisible by p.
        normalize: normalize raw values (default); False takes already-normalized values.
        bands: optional per modality band names of the last axis when it is not the full
            registry order (e.g. ``{"sentinel2_l2a": ["B04", "B03", "B02", "B08"]}``). Bandsets
            that are not given are masked.
        check_units: reject values whose range says they are in the wrong units.
        batch_size: encode at most this many samples at once (bounds memory).
        precision: ``fp32`` | ``bf16`` | ``int8`` | ``auto``; None keeps the model's own
            (``fp32`` unless loaded otherwise). Another precision runs a converted copy of the
            encoder and leaves ``model`` unchanged (:mod:`geolatent.model.precision`).

    Returns:
        :class:`Embedding` on the model's device.
    """
    batch = prepare_inputs(
        inputs, timestamps, patch_size, normalize, bands, check_units, model.config.modalities
    )
    encoder, _ = encoder_at(model, precision)
    param = next(encoder.parameters())  # patch embeddings: fp32 in every precision
    b = batch.shape[0]
    step = batch_size or b
    was_training = model.training
    model.eval()
    outs: list[EncoderOutput] = []
    try:
        with torch.no_grad():
            for s in range(0, b, step):
                part = batch.slice(slice(s, s + step)).to(param.device, param.dtype)
                outs.append(
                    encoder(part.inputs, part.timestamps, part.patch_size, part.token_mask)
                )
    finally:
        model.train(was_training)
    names = list(batch.inputs)
    tokens = {n: torch.cat([o.tokens[n] for o in outs]) for n in names}
    masks = {n: torch.cat([o.token_mask[n] for o in outs]) for n in names}
    return Embedding(
        tokens=tokens,
        token_mask=masks,
        feature_map=spatial_mean(tokens, masks),
        pooled=torch.cat([o.pooled for o in outs]),
        project_aggregated=torch.cat([o.project_aggregated for o in outs]),
        patch_size=batch.patch_size,
    )
