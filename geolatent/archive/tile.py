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
                 patch_size: int, location_patch_size: int | None = None) -> np.ndarray:
    """Vectors of one tile: float32 ``[H/c, W/c, F]`` with ``c`` the output cell side; NaN where
    no input was valid.

    Without ``location_patch_size``: the feature map (``c = p``, ``F = D_model``), the mean over
    time steps and bandsets of the encoder's tokens of each ``p x p`` patch. With it (v1.3, an
    attention pooler): ``c = location_patch_size`` and the model's own location vectors, the
    distilled ``location_embedding`` (``F`` = its widest student dim) or, for a pooler without
    a student, ``location_tokens``: one learned query per ``c x c`` pixels at their centre reads
    the patch tokens (:meth:`geolatent.model.embed.embed`, ``location_patch_size``). A cell is
    NaN where its patch has no encoded token (the feature map's rule), never filled from
    neighbours.

    Args:
        model: a :class:`~geolatent.model.latent_mim.LatentMIM`.
        arrays: per modality raw ``[H, W, T, C]`` (registry band order and units, -99999
            missing), as :func:`geolatent.data.materialize_window` gives them.
        timestamps: int ``[T, 3]``.
        patch_size: p.
        location_patch_size: s (divides p), or None for the feature map.
    """
    if not arrays:
        raise ValueError(f"no imagery for any of the model's modalities {model.config.modalities}")
    first = next(iter(arrays.values()))
    h, w = first.shape[:2]
    cell = location_patch_size or patch_size
    if location_patch_size is None:
        width = model.config.embedding_size
    else:
        pooler = model.config.pooler
        width = max(pooler.student_dims) if pooler.student_dims else pooler.pooler_dim
    if not any((a != MISSING_VALUE).any() for a in arrays.values()):
        return np.full((h // cell, w // cell, width), np.nan, dtype=np.float32)
    with torch.inference_mode():
        e = embed(model, {m: a[None] for m, a in arrays.items()}, timestamps, patch_size,
                  location_patch_size=location_patch_size)  # fmt: skip
    fmap = e.feature_map[0].float().cpu().numpy()
    if location_patch_size is None:
        return fmap
    loc = e.location_embedding if e.location_embedding is not None else e.location_tokens
    out = loc[0].float().cpu().numpy()
    # the patch's validity for each of its (p/s)^2 cells (a mask, not the vectors, is repeated)
    k = patch_size // location_patch_size
    empty = np.isnan(fmap).any(axis=-1).repeat(k, axis=0).repeat(k, axis=1)
    out[empty] = np.nan
    return out


def project(features: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """PCA coordinates ``[..., dims]`` of features ``[..., D_model]`` (NaN rows stay NaN)."""
    return ((features - mean) @ components.T).astype(np.float32)


def encode_block(features: np.ndarray, mean: np.ndarray, components: np.ndarray,
                 dtype: str) -> np.ndarray:
    """Feature map ``[h, w, D_model]`` -> stored block ``[h, w, dims]`` (projected, unit,
    encoded)."""
    return encode(project(features, mean, components), dtype)
