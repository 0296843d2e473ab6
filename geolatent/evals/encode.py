"""Running the encoder on benchmark batches: frozen embeddings (through ``embed``) and the
differentiable forward that fine-tuning needs.

``embed`` runs under ``torch.no_grad``; fine-tuning needs gradients, so :func:`prepare_eval_batch`
rebuilds the same encoder inputs (registry band order, -99999 for bands not given, pretraining
normalization, per-token missing mask) with ``prepare_inputs``, the function ``embed`` uses, and
:func:`encoder_features` calls the encoder. A test checks that both paths agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from geolatent.evals.datasets.base import Batch, SplitData
from geolatent.model.embed import EncoderBatch, prepare_inputs


def prepare_eval_batch(batch: Batch, patch_size: int, device: torch.device | str = "cpu",
                  check_units: bool = True, config=None) -> EncoderBatch:  # fmt: skip
    """Normalize a raw :class:`Batch` and build its token masks (bands not given -> missing),
    through :func:`geolatent.model.embed.prepare_inputs`, the same path as ``embed``
    (``config``: the model's ModelConfig, whose version decides the missing-band fill)."""
    prepared = prepare_inputs(
        dict(batch.inputs), batch.timestamps, patch_size, bands=batch.bands,
        check_units=check_units, config=config,
    )  # fmt: skip
    return prepared.to(device)


def encoder_features(
    encoder: torch.nn.Module, prepared: EncoderBatch, pooled: bool
) -> torch.Tensor:
    """Differentiable features: ``[B, D]`` (mean over encoded tokens) or the feature map
    ``[B, h, w, D]`` (NaN where no input was valid)."""
    out = encoder(prepared.inputs, prepared.timestamps, prepared.patch_size, prepared.token_mask)
    return out.pooled if pooled else out.feature_map


def iter_chunks(n: int, size: int) -> Iterator[np.ndarray]:
    for s in range(0, n, size):
        yield np.arange(s, min(n, s + size))


def embed_split(
    model,
    split: SplitData,
    patch_size: int,
    pooled: bool,
    batch_size: int = 64,
    on_chunk: Callable[[int], None] | None = None,
) -> Iterator[np.ndarray]:
    """Frozen embeddings of a split in chunks (``[b, D]`` or ``[b, h, w, D]`` float32), through
    ``model.embed`` (normalization, unit checks, masking of bands not given)."""
    for idx in iter_chunks(len(split), batch_size):
        b = split.load(idx)
        e = model.embed(b.inputs, timestamps=b.timestamps, patch_size=patch_size, bands=b.bands,
                        batch_size=batch_size)  # fmt: skip
        out = e.pooled if pooled else e.feature_map
        if on_chunk:
            on_chunk(len(idx))
        yield out.detach().cpu().float().numpy()
