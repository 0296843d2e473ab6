"""Per-band normalization with the v1 pretraining statistics shipped in the package.

COMPUTED modalities: ``x' = (x - (mean - 2*std)) / (4*std)``; PREDEFINED ones:
``x' = (x - min) / (max - min)``. Both are the affine map ``(x - lo) / (hi - lo)`` with
``lo``/``hi`` taken from ``resources/normalization_stats.json`` (for COMPUTED, ``lo = mean - 2*std``
and ``hi = mean + 2*std``). Nothing is clipped. Missing entries (-99999, and NaN) are never
normalized: they come back as -99999 so every later stage can still see them.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from importlib import resources

import numpy as np
import torch

from geolatent.modalities import MISSING_VALUE, get_modality


@lru_cache(maxsize=1)
def normalization_stats() -> dict:
    """The stats file: per modality strategy, band order, mean / std or min / max."""
    text = resources.files("geolatent").joinpath("resources/normalization_stats.json").read_text()
    return json.loads(text)


@cache
def band_affine(modality: str) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` float64 arrays ``[C]`` such that normalized = ``(x - lo) / (hi - lo)``."""
    mod = get_modality(modality)
    stats = normalization_stats().get(modality)
    if stats is None:
        raise KeyError(f"no normalization statistics for modality {modality!r}")
    if list(stats["band_order"]) != list(mod.bands):
        raise ValueError(
            f"normalization stats band order {stats['band_order']} differs from the registry "
            f"{list(mod.bands)} for {modality!r}"
        )
    if stats["strategy"] == "computed":
        mean = np.asarray(stats["mean"], dtype=np.float64)
        std = np.asarray(stats["std"], dtype=np.float64)
        k = float(stats.get("std_multiplier", 2))
        lo, hi = mean - k * std, mean + k * std
    elif stats["strategy"] == "predefined":
        lo = np.asarray(stats["min"], dtype=np.float64)
        hi = np.asarray(stats["max"], dtype=np.float64)
    else:
        raise ValueError(f"unknown normalization strategy {stats['strategy']!r} for {modality!r}")
    return lo, hi


def is_missing(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Boolean mask of entries that are the missing value (-99999) or NaN."""
    if isinstance(x, torch.Tensor):
        return (x == MISSING_VALUE) | torch.isnan(x)
    return (x == MISSING_VALUE) | np.isnan(x)


def normalize(modality: str, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Normalize raw values of one modality.

    Args:
        modality: registry name.
        x: raw values ``[..., C]`` with ``C`` in registry band order, in the modality's units
            (Sentinel-2 L2A DN 0-10000, Sentinel-1 dB, Landsat L1 DN, ...).

    Returns:
        float32 array / tensor of the same shape and kind; missing entries (-99999 or NaN) are
        returned as -99999. Computed in float64, as the reference does.
    """
    lo, hi = band_affine(modality)
    if x.shape[-1] != lo.shape[0]:
        raise ValueError(
            f"{modality}: expected {lo.shape[0]} bands in the last axis, got {x.shape[-1]}"
        )
    if isinstance(x, torch.Tensor):
        lo_t = torch.as_tensor(lo, device=x.device)
        scale = torch.as_tensor(hi - lo, device=x.device)
        x64 = x.to(torch.float64)
        out = ((x64 - lo_t) / scale).to(torch.float32)
        return torch.where(is_missing(x), torch.tensor(MISSING_VALUE, device=x.device), out)
    x64 = np.asarray(x, dtype=np.float64)
    out = ((x64 - lo) / (hi - lo)).astype(np.float32)
    out[is_missing(x64)] = MISSING_VALUE
    return out
