"""The one missing-data rule, used by ``embed``, fine-tuning, prediction, evals (all through
:func:`geolatent.model.embed.prepare_inputs`), pretraining masking and the pretraining dataset.

A raw value is *missing* when it is -99999, NaN, +inf or -inf. Per modality, timestep and pixel:

1. A band missing while another band of the same bandset is present is filled by the model
   version's rule (:func:`fill_missing_bands`): v1 copies the present band nearest in wavelength
   (the reference v1 normalizer); v1.1+ use 0 after normalization (those models were trained with
   band dropout, which zeroes bands).
2. A token (patch x timestep x bandset) is missing only when its bandset has no valid value
   anywhere in the patch (:func:`token_missing`); missing tokens take no part in attention or
   pooling.
3. Pixels whose whole bandset is missing inside a token that has data are filled with the mean of
   the plane's valid pixels before resizing (``patch_embed.fill_missing_pixels``), so the fill
   never smears into valid neighbours.
"""

from __future__ import annotations

from functools import cache

import torch

from geolatent.modalities import MISSING_VALUE, Modality
from geolatent.model.versions import version_spec


def is_missing(x: torch.Tensor) -> torch.Tensor:
    """Bool mask of missing entries: -99999, NaN, +inf, -inf."""
    return (x == MISSING_VALUE) | ~torch.isfinite(x)


@cache
def _nearest_order(wavelengths: tuple[float, ...]) -> tuple[tuple[int, ...], ...]:
    """Per band, the other bands ordered by wavelength distance (ties: channel order)."""
    n = len(wavelengths)
    return tuple(
        tuple(sorted((j for j in range(n) if j != c),
                     key=lambda j: (abs(wavelengths[j] - wavelengths[c]), j)))
        for c in range(n)
    )  # fmt: skip


def bandset_present(missing: torch.Tensor, modality: Modality) -> torch.Tensor:
    """``[..., C]`` True where the band's bandset has at least one valid band at that entry."""
    out = torch.empty_like(missing)
    for sl in modality.bandset_slices():
        any_valid = (~missing[..., sl]).any(dim=-1, keepdim=True)
        out[..., sl] = any_valid.expand_as(missing[..., sl])
    return out


def fill_missing_bands(
    normalized: torch.Tensor, missing: torch.Tensor, modality: Modality, version: str
) -> torch.Tensor:
    """Rule 1: fill bands missing inside a present bandset.

    Args:
        normalized: ``[..., C]`` normalized values (missing entries hold anything).
        missing: ``[..., C]`` bool, from :func:`is_missing` on the raw values.
        modality: the model's view of the modality (its bandsets).
        version: model version (decides the fill).

    Returns:
        ``[..., C]`` float32: filled where the bandset is present, -99999 where the whole bandset
        is missing at that entry, the input elsewhere.
    """
    present = bandset_present(missing, modality)
    to_fill = missing & present
    out = torch.where(missing, torch.tensor(MISSING_VALUE, dtype=normalized.dtype), normalized)
    if not bool(to_fill.any()):
        return out
    if version_spec(version).missing_band_fill == "zero":
        return torch.where(to_fill, torch.zeros((), dtype=out.dtype), out)
    if not modality.wavelengths_nm:
        raise ValueError(f"{modality.name}: no band wavelengths for the v1 nearest-band fill")
    order = _nearest_order(tuple(modality.wavelengths_nm))
    filled = out.clone()
    for c in range(out.shape[-1]):
        need = to_fill[..., c]
        if not bool(need.any()):
            continue
        col = filled[..., c]
        for j in order[c]:
            take = need & ~missing[..., j]
            col = torch.where(take, out[..., j], col)
            need = need & ~take
            if not bool(need.any()):
                break
        filled[..., c] = col
    return filled


def token_missing(
    missing: torch.Tensor, patch_size: int, bandset_slices: list[slice]
) -> torch.Tensor:
    """Rule 2: ``[B, H/p, W/p, T, S]`` True where a bandset has no valid value in the patch.

    ``missing`` is ``[B, H, W, T, C]`` bool (:func:`is_missing` of the raw values).
    """
    b, h, w, t, c = missing.shape
    p = patch_size
    gone = missing.reshape(b, h // p, p, w // p, p, t, c).all(dim=4).all(dim=2)
    return torch.stack([gone[..., sl].all(-1) for sl in bandset_slices], dim=-1)


def normalize_and_fill(
    name: str, raw: torch.Tensor, modality: Modality, version: str, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole rule for one modality's values, as every path applies it.

    Args:
        name: registry name (decides the normalization statistics).
        raw: ``[..., C]`` values in the modality's units (or normalized, ``normalize=False``).
        modality: the model's view of the modality (its bandsets).
        version: model version.
        normalize: normalize with the pretraining statistics first.

    Returns:
        ``(values, missing)``: float32 ``[..., C]`` normalized and filled (rule 1; -99999 where
        the whole bandset is missing) and the bool ``[..., C]`` missing mask of ``raw``.
    """
    from geolatent.normalize import normalize as normalize_values

    missing = is_missing(raw)
    clean = torch.where(missing, torch.tensor(MISSING_VALUE, dtype=raw.dtype), raw)
    values = normalize_values(name, clean) if normalize else clean
    return fill_missing_bands(values, missing, modality, version), missing
