"""Pixel arithmetic of materialization: mosaics, monthly median composites, masks, units.

All functions work on float32 stacks where NaN marks an invalid pixel (outside the scene,
nodata, cloud); the conversion to the public missing value (-99999) happens once, at the end of
materialization.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from geolatent.data.config import CloudMaskConfig


def mosaic_first_valid(
    layers: Iterable[np.ndarray], channels: Sequence[int] | None = None
) -> np.ndarray | None:
    """Mosaic ``[C, H, W]`` layers: each pixel and band takes the first layer that is valid.

    Returns None for no layers. Stops reading the iterator once every pixel of ``channels``
    (all channels when None; pass the bands the sources provide) is filled, so callers can pass
    a lazy generator of scene reads.
    """
    out: np.ndarray | None = None
    for layer in layers:
        if out is None:
            out = layer.astype(np.float32, copy=True)
        else:
            gap = np.isnan(out)
            out[gap] = layer[gap]
        check = out if channels is None else out[list(channels)]
        if not np.isnan(check).any():
            break
    return out


def nanmedian_stack(stack: np.ndarray) -> np.ndarray:
    """Median over axis 0 of the valid (non-NaN) values; NaN where no value is valid.

    Args:
        stack: float ``[N, ...]`` observations.

    Returns:
        float32 ``[...]``; for an even number of valid values, the mean of the middle two.
    """
    if stack.shape[0] == 1:
        return stack[0].astype(np.float32, copy=True)
    ordered = np.sort(stack, axis=0)  # NaN sorts last
    count = (~np.isnan(stack)).sum(axis=0)
    n = stack.shape[0]
    lo = np.clip((count - 1) // 2, 0, n - 1)[None]
    hi = np.clip(count // 2, 0, n - 1)[None]
    a = np.take_along_axis(ordered, lo, axis=0)[0]
    b = np.take_along_axis(ordered, hi, axis=0)[0]
    out = ((a + b) * 0.5).astype(np.float32)
    out[count == 0] = np.nan
    return out


def cloud_invalid(mask_values: np.ndarray, cfg: CloudMaskConfig) -> np.ndarray:
    """Boolean ``[H, W]``: True where the mask band says the pixel is not a clear observation.

    Pixels where the mask itself is NaN (outside the mask raster) count as invalid.
    """
    invalid = np.isnan(mask_values)
    if cfg.kind == "bits":
        qa = np.nan_to_num(mask_values).astype(np.int64)
        return invalid | ((qa & cfg.bit_mask()) != 0)
    values = cfg.invalid()
    if values is None:
        return invalid | (np.nan_to_num(mask_values) != 0)
    return invalid | np.isin(mask_values, np.asarray(values, dtype=np.float32))


def linear_to_db(x: np.ndarray) -> np.ndarray:
    """``10 * log10(x)`` for linear backscatter; non-positive values become NaN (invalid)."""
    out = np.full(x.shape, np.nan, dtype=np.float32)
    ok = x > 0
    out[ok] = 10.0 * np.log10(x[ok])
    return out
