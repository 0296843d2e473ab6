"""Augmentations shared by pretraining and fine-tuning: one dihedral transform for both.

Pretraining applies it to a batch tensor ``[B, H, W, T, C]`` (spatial axes 1, 2); fine-tuning
to one sample's numpy array ``[H, W, T, C]`` or target ``[H, W]`` (spatial axes 0, 1). Both go
through :func:`dihedral` so the 8 transforms are numbered the same everywhere.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def dihedral(x: ArrayT, k: int, axes: tuple[int, int] = (1, 2)) -> ArrayT:
    """One of the 8 dihedral transforms of two square spatial axes of ``x``.

    ``k`` in 0..7: ``k % 4`` quarter turns (from the first axis toward the second), then a
    flip of the second axis when ``k >= 4``. ``axes`` defaults to ``(1, 2)``, the spatial axes
    of a batch ``[B, H, W, ...]``; pass ``(0, 1)`` for one sample ``[H, W, ...]``. A numpy
    input comes back as a C-contiguous copy (it is stacked and handed to torch next).
    """
    if not 0 <= k < 8:
        raise ValueError(f"dihedral transform index must be in 0..7, got {k}")
    if isinstance(x, torch.Tensor):
        x = torch.rot90(x, k % 4, dims=axes) if k % 4 else x
        return torch.flip(x, dims=(axes[1],)) if k >= 4 else x
    out = np.rot90(x, k % 4, axes=axes)
    return np.ascontiguousarray(np.flip(out, axis=axes[1]) if k >= 4 else out)
