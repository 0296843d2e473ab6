"""User-facing embedding: raw arrays in, tokens / feature map / pooled vector out.

Checks everything a user can get wrong (modality names, band count and order, units, shapes,
dates, patch size), normalizes with the pretraining statistics, applies the one missing-data
rule (:mod:`geolatent.model.missing`: -99999, NaN and +-inf are missing; a band missing inside a
present bandset is filled by the version's rule; a token is excluded only when its bandset has
no valid value in the patch), and runs the encoder. With complete inputs the result equals the
reference's inference pass.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from geolatent.modalities import MISSING_VALUE, get_modality
from geolatent.model import missing as missing_rule
from geolatent.model.encoder import EncoderOutput
from geolatent.model.precision import encoder_at
from geolatent.model.tokens import MaskValue
from geolatent.model.versions import version_spec

ArrayLike = np.ndarray | torch.Tensor


class InputError(ValueError):
    """Inputs that cannot be embedded as given; the message says what to change."""


@dataclass
class EncoderBatch:
    """Inputs exactly as the encoder takes them (what :func:`prepare_inputs` returns).

    Attributes:
        inputs: per modality normalized float32 ``[B, H, W, T, C]`` in registry band order;
            bands missing inside a present bandset already filled by the version's rule, pixels
            whose whole bandset is missing = -99999.
        timestamps: int64 ``[B, T, 3]`` (day, month 0-11, year).
        token_mask: per modality ``[B, H/p, W/p, T, S]`` (0 encoded, 3 missing), or None when
            nothing is missing (the encoder's full pass, identical to v1's fast pass).
        patch_size: p.
    """

    inputs: dict[str, torch.Tensor]
    timestamps: torch.Tensor
    token_mask: dict[str, torch.Tensor] | None
    patch_size: int
    nonfinite: dict[str, int] = field(default_factory=dict)

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
        return EncoderBatch(
            inputs, self.timestamps.to(device), masks, self.patch_size, self.nonfinite
        )

    def slice(self, rows: slice) -> EncoderBatch:
        """The samples ``rows`` of the batch."""
        masks = self.token_mask
        if masks is not None:
            masks = {m: t[rows] for m, t in masks.items()}
        return EncoderBatch(
            {m: x[rows] for m, x in self.inputs.items()}, self.timestamps[rows], masks,
            self.patch_size, self.nonfinite,
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
    # Bands not given are missing everywhere: the missing-data rule fills them inside a present
    # bandset and masks bandsets given not at all.
    return full, [True] * mod.num_bandsets


def _parse_date(d, i: int) -> _dt.date:
    if isinstance(d, _dt.datetime):
        return d.date()
    if isinstance(d, _dt.date):
        return d
    if isinstance(d, np.datetime64):
        if np.isnat(d):
            raise InputError(f"timestamps[{i}] is NaT; give a real date")
        return d.astype("datetime64[D]").item()
    if isinstance(d, str):
        try:
            return _dt.date.fromisoformat(d.strip())
        except ValueError:
            raise InputError(
                f"timestamps[{i}] = {d!r} is not a valid date; use YYYY-MM-DD (e.g. 2024-03-15)"
            ) from None
    raise InputError(f"timestamps[{i}] = {d!r}: expected a date, a YYYY-MM-DD string or datetime64")


def _timestamps(ts, batch: int, steps: int, version: str = "v1") -> torch.Tensor:
    """Check and convert timestamps to int64 ``[B, T, 3]`` (day, month 0-11, year).

    Accepted: ``[B, T, 3]`` / ``[T, 3]`` integers, or a sequence of T dates (``datetime.date``,
    ``YYYY-MM-DD`` strings, ``numpy.datetime64``). Dates must be real calendar dates with years
    >= 1, strictly increasing along T (unsorted or duplicate dates are an error, as in the CLI's
    ``--dates``: geolatent never reorders a user's timesteps, which would silently mismatch the
    data's T axis).
    """
    if ts is None:
        extra = (
            f" ({version} uses the real dates as its time coordinate)"
            if version_spec(version).dates_required else ""
        )  # fmt: skip
        raise InputError(
            "timestamps are required: [B, T, 3] (day, month 0-11, year) or T dates" + extra
        )
    if isinstance(ts, (str, bytes)):
        raise InputError("timestamps: give a list of dates, not a single string")
    if isinstance(ts, Sequence) and ts and isinstance(ts[0], (_dt.date, np.datetime64, str)):
        dates = [_parse_date(d, i) for i, d in enumerate(ts)]
        ts = np.array([[d.day, d.month - 1, d.year] for d in dates], dtype=np.int64)
    elif isinstance(ts, np.ndarray) and np.issubdtype(ts.dtype, np.datetime64):
        dates = [_parse_date(d, i) for i, d in enumerate(ts.reshape(-1))]
        ts = np.array([[d.day, d.month - 1, d.year] for d in dates], dtype=np.int64)
    if isinstance(ts, torch.Tensor):
        if ts.is_floating_point() or ts.is_complex() or ts.dtype == torch.bool:
            raise InputError(
                f"timestamps must be integers (day, month 0-11, year), got dtype {ts.dtype}"
            )
        t = ts.detach().cpu().long()
    else:
        try:
            arr = np.asarray(ts)
        except Exception as e:
            raise InputError(f"timestamps: cannot convert {type(ts).__name__} to an array") from e
        if arr.dtype == object or arr.dtype.kind not in "iu":
            raise InputError(
                "timestamps must be integers (day, month 0-11, year) or dates, got dtype "
                f"{arr.dtype}" + (" (float or complex values are not dates)"
                                  if arr.dtype.kind in "fc" else "")
            )  # fmt: skip
        t = torch.from_numpy(arr.astype(np.int64))
    if t.ndim == 2:
        t = t[None].expand(batch, -1, -1)
    if t.ndim != 3 or t.shape[-1] != 3:
        raise InputError(f"timestamps must be [B, T, 3] (day, month, year), got {tuple(t.shape)}")
    if t.shape[0] != batch or t.shape[1] != steps:
        raise InputError(
            f"timestamps shape {tuple(t.shape)} does not match B={batch}, T={steps} of the inputs"
        )
    months, days, years = t[..., 1], t[..., 0], t[..., 2]
    if bool(((months < 0) | (months > 11)).any()):
        raise InputError(
            "timestamp months must be 0-11 (January = 0); got values outside that range "
            f"({sorted(set(months.flatten().tolist()))})"
        )
    if bool((years < 1).any()):
        bad = sorted(set(years[years < 1].tolist()))
        raise InputError(f"timestamp years must be >= 1, got {bad}")
    for bi, ti in torch.nonzero((days < 1) | (days > 28)).tolist():
        d, m, y = t[bi, ti].tolist()
        try:
            _dt.date(y, m + 1, d)
        except ValueError:
            raise InputError(
                f"timestamps[{bi}, {ti}] = (day {d}, month {m}, year {y}) is not a real date "
                f"({y:04d}-{m + 1:02d}-{d:02d})"
            ) from None
    if steps > 1:
        key = years * 400 + months * 32 + days
        step = key[:, 1:] - key[:, :-1]
        if bool((step <= 0).any()):
            bi, ti = torch.nonzero(step <= 0)[0].tolist()
            a, b2 = t[bi, ti].tolist(), t[bi, ti + 1].tolist()
            what = "duplicate" if key[bi, ti] == key[bi, ti + 1] else "unsorted"
            raise InputError(
                f"timestamps: {what} dates in sample {bi}: step {ti + 1} "
                f"({b2[2]:04d}-{b2[1] + 1:02d}-{b2[0]:02d}) does not come after step {ti} "
                f"({a[2]:04d}-{a[1] + 1:02d}-{a[0]:02d}); give strictly increasing dates and "
                "order the data's T axis the same way"
            )
    return t


def check_value_units(name: str, x: torch.Tensor, normalized: bool) -> None:
    """Reject values whose range says they are in the wrong units (vectorized, cheap).

    ``x`` is ``[..., C]`` in the modality's raw units, missing entries -99999 / NaN.
    """
    valid = ~missing_rule.is_missing(x)
    n = int(valid.sum())
    if n == 0:  # every token masked: alone, this input gives NaN embeddings
        warnings.warn(f"{name}: every value is missing (NaN / {MISSING_VALUE:g} / nodata); its "
                      "tokens are all masked", UserWarning, stacklevel=4)
        return
    vals = x[valid]
    if normalized:
        if float((vals.abs() > 50).float().mean()) > 0.5:
            raise InputError(
                f"{name}: normalize=False expects normalized values (about 0-1), but most values "
                "exceed 50: these look like raw units; use normalize=True"
            )
        return
    # Raw units: the registry's rules, shared with every other entry (geolatent.units).
    from geolatent.units import UnitError, check_values

    try:
        check_values(name, x)
    except UnitError as e:
        raise InputError(str(e)) from None


def prepare_inputs(
    inputs: Mapping[str, ArrayLike | Mapping[str, ArrayLike]],
    timestamps=None,
    patch_size: int = 4,
    normalize: bool = True,
    bands: Mapping[str, Sequence[str]] | None = None,
    check_units: bool = True,
    supported: Sequence[str] | None = None,
    config=None,
) -> EncoderBatch:
    """Check, assemble, normalize and mask raw inputs: everything :func:`embed` does before the
    encoder runs. Training code (fine-tuning, evaluation) uses it to feed the encoder with
    gradients exactly what ``embed`` would.

    Args: as :func:`embed`; ``supported`` lists the modalities the model accepts; ``config`` is
    the model's :class:`~geolatent.model.config.ModelConfig` (its version decides the
    missing-band fill, the T limit and the bandsets; None: v1 with the registry's bandsets).

    Returns:
        :class:`EncoderBatch` on the CPU.
    """
    from geolatent.model.config import model_modalities

    version = config.version if config is not None else "v1"
    spec = version_spec(version)
    model_mods = {m.name: m for m in model_modalities(config)} if config is not None else {}
    if supported is None and config is not None:
        supported = config.modalities
    if not isinstance(inputs, Mapping) or not inputs:
        raise InputError("inputs must be a non-empty dict of modality name -> array")
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or \
            not 1 <= int(patch_size) <= 8:  # fmt: skip
        raise InputError(f"patch_size must be an integer in 1..8, got {patch_size!r}")
    p = int(patch_size)
    tensors = {}
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
        x, _ = _assemble(name, value, (bands or {}).get(name))
        tensors[name] = x
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
    if t < 1 or (spec.max_timesteps is not None and t > spec.max_timesteps):
        limit = f"1..{spec.max_timesteps}" if spec.max_timesteps else ">= 1"
        raise InputError(
            f"T must be {limit} for a {version} model, got {t}"
            + (" (v1.2+ models take any number of dates)" if spec.max_timesteps else "")
        )
    if h % p or w % p:
        raise InputError(
            f"H={h} and W={w} must be divisible by patch_size={p}; crop or pad (with -99999, "
            "which is masked) to a multiple of p"
        )
    ts = _timestamps(timestamps, b, t, version)

    token_mask, normed, nonfinite = {}, {}, {}
    for n, x in tensors.items():
        mod = model_mods.get(n) or get_modality(n)
        if check_units:
            check_value_units(n, x, normalized=not normalize)
        inf = int(torch.isinf(x).sum())
        if inf:
            nonfinite[n] = inf
        normed[n], missing = missing_rule.normalize_and_fill(n, x, mod, version, normalize)
        gone = missing_rule.token_missing(missing, p, mod.bandset_slices())
        token_mask[n] = torch.where(gone, MaskValue.MISSING, MaskValue.ONLINE_ENCODER).long()
    any_missing = any(bool(m.any()) for m in token_mask.values())
    return EncoderBatch(normed, ts, token_mask if any_missing else None, p, nonfinite)


def embed(
    model,
    inputs: Mapping[str, ArrayLike | Mapping[str, ArrayLike]],
    timestamps=None,
    patch_size: int = 4,
    normalize: bool = True,
    bands: Mapping[str, Sequence[str]] | None = None,
    check_units: bool = True,
    batch_size: int | None = None,
    location_patch_size: int | None = None,
    precision: str | None = None,
) -> EncoderOutput:
    """Embed raw satellite inputs with the encoder of ``model``.

    Args:
        model: a :class:`~geolatent.model.latent_mim.LatentMIM` (any version).
        inputs: per modality ``[B, H, W, T, C]`` (numpy or torch) in registry band order, or a
            dict of band name -> ``[B, H, W, T]``. Units: Sentinel-2 L2A DN (0-10000), Sentinel-1
            dB, Landsat L1 DN. Missing values: -99999, NaN or +-inf. Decode-only maps are
            rejected.
        timestamps: ``[B, T, 3]`` or ``[T, 3]`` ints (day 1-31, month 0-11, year), or T dates
            (strictly increasing). Required; v1.2+ use the real dates.
        patch_size: p in 1..8; H and W must be divisible by p.
        normalize: normalize raw values (default); False takes already-normalized values.
        bands: optional per modality band names of the last axis when it is not the full
            registry order (e.g. ``{"sentinel2_l2a": ["B04", "B03", "B02", "B08"]}``). Bands not
            given are missing: filled by the version's rule inside a present bandset, masked
            when their whole bandset is absent.
        check_units: reject values whose range says they are in the wrong units.
        batch_size: encode at most this many samples at once (bounds memory).
        location_patch_size: v1.3 only: pixels per location token (divides p; default p; 1 gives
            one vector per pixel).
        precision: ``fp32`` | ``bf16`` | ``int8`` | ``auto``; None keeps the model's own
            (``fp32`` unless loaded otherwise). Another precision runs a converted copy of the
            encoder and leaves ``model`` unchanged (:mod:`geolatent.model.precision`).

    Returns:
        :class:`~geolatent.model.encoder.EncoderOutput` on the model's device (with
        ``patch_size`` and ``nonfinite`` set).
    """
    config = model.config
    if location_patch_size is not None:
        if config.pooler is None:
            raise InputError(
                "location_patch_size needs a v1.3 model (attention pooler); this is "
                f"{config.version}"
            )
        lp = location_patch_size
        if isinstance(lp, bool) or not isinstance(lp, (int, np.integer)) or lp < 1 or \
                int(patch_size) % int(lp):  # fmt: skip
            raise InputError(
                f"location_patch_size must be a positive integer dividing patch_size={patch_size}, "
                f"got {lp!r}"
            )
    batch = prepare_inputs(
        inputs, timestamps, patch_size, normalize, bands, check_units, config.modalities, config
    )
    if batch.nonfinite:
        warnings.warn(
            f"{batch.nonfinite} infinite input values were treated as missing data", stacklevel=2
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
                    encoder(part.inputs, part.timestamps, part.patch_size, part.token_mask,
                            location_patch_size)  # fmt: skip
                )
    finally:
        model.train(was_training)
    names = list(batch.inputs)
    tokens = {n: torch.cat([o.tokens[n] for o in outs]) for n in names}
    masks = {n: torch.cat([o.token_mask[n] for o in outs]) for n in names}
    loc = emb = None
    if outs[0].location_tokens is not None:
        loc = torch.cat([o.location_tokens for o in outs])
        if outs[0].location_embedding is not None:
            emb = torch.cat([o.location_embedding for o in outs])
    return EncoderOutput(
        tokens=tokens,
        token_mask=masks,
        pooled=torch.cat([o.pooled for o in outs]),
        project_aggregated=torch.cat([o.project_aggregated for o in outs]),
        patch_size=batch.patch_size,
        location_tokens=loc,
        location_embedding=emb,
        nonfinite=dict(batch.nonfinite),
    )
