"""The pure per-tile step of a build: a window's materialized imagery -> an embedding block.

Kept free of any store or loop so that the tiled run driver can call it per tile
(materialize in a worker, :func:`embed_arrays` next to the model, :func:`encode_block` before the
writer).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from geolatent.archive.quantize import encode
from geolatent.data.materialize import materialize_window
from geolatent.data.sources import Source
from geolatent.data.window import Window
from geolatent.modalities import MISSING_VALUE
from geolatent.model.embed import embed


def materialize_tile(job: tuple[Window, list[Source], list[str]]) -> dict:
    """``(window, sources, model modalities)`` -> ``{"arrays": {m: [H, W, T, C]}, "timestamps":
    [T, 3]}`` (picklable; runs in an executor worker)."""
    window, sources, modalities = job
    mw = materialize_window(window, sources)
    arrays = {m: a for m, a in mw.arrays.items() if m in modalities}
    return {"arrays": arrays, "timestamps": mw.timestamps}


def embed_arrays(model, arrays: Mapping[str, np.ndarray], timestamps: np.ndarray,
                 patch_size: int) -> np.ndarray:
    """Feature map of one tile: float32 ``[H/p, W/p, D_model]``; NaN where no input was valid.

    Args:
        model: a :class:`~geolatent.model.latent_mim.LatentMIM`.
        arrays: per modality raw ``[H, W, T, C]`` (registry band order and units, -99999
            missing), as :func:`geolatent.data.materialize_window` gives them.
        timestamps: int ``[T, 3]``.
        patch_size: p.
    """
    if not arrays:
        raise ValueError(f"no imagery for any of the model's modalities {model.config.modalities}")
    first = next(iter(arrays.values()))
    h, w = first.shape[:2]
    if not any((a != MISSING_VALUE).any() for a in arrays.values()):
        return np.full((h // patch_size, w // patch_size, model.config.embedding_size), np.nan,
                       dtype=np.float32)  # fmt: skip
    with torch.inference_mode():
        e = embed(model, {m: a[None] for m, a in arrays.items()}, timestamps, patch_size)
    return e.feature_map[0].float().cpu().numpy()


def project(features: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """PCA coordinates ``[..., dims]`` of features ``[..., D_model]`` (NaN rows stay NaN)."""
    return ((features - mean) @ components.T).astype(np.float32)


def encode_block(features: np.ndarray, mean: np.ndarray, components: np.ndarray,
                 dtype: str) -> np.ndarray:
    """Feature map ``[h, w, D_model]`` -> stored block ``[h, w, dims]`` (projected, unit,
    encoded)."""
    return encode(project(features, mean, components), dtype)
