"""Latent MIM Lite losses: modality patch discrimination and InfoNCE, vectorized over the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from geolatent.model.tokens import MaskValue, Packing

PATCH_DISC_TAU = 0.1
INFONCE_TAU = 0.1
INFONCE_WEIGHT = 0.1


def patch_discrimination_loss(
    predictions: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    token_mask: dict[str, torch.Tensor],
    tau: float = PATCH_DISC_TAU,
) -> torch.Tensor:
    """v1 ``modality_patch_discrimination_new``.

    For each modality and each sample with at least one ``DECODER`` token, the sample's decoded
    predictions ``p_i`` and targets ``z_j`` (all bandsets together) are L2-normalized; the loss is
    ``2*tau * mean_i CE(<p_i, z_j>/tau, i)``. Averaged over those samples, then **summed** over
    modalities. All samples are handled at once (packed, padded columns masked out).

    Args:
        predictions, targets: per modality ``[B, h, w, T, S, D]``.
        token_mask: per modality ``[B, h, w, T, S]`` roles.

    Returns:
        0-d loss tensor.
    """
    total = None
    for m, pred in predictions.items():
        b, d = pred.shape[0], pred.shape[-1]
        sel = (token_mask[m] == MaskValue.DECODER).reshape(b, -1)
        if not bool(sel.any()):
            continue
        pack = Packing.from_selection(sel)
        # 1/tau is folded into the [B, L, D] predictions instead of the [B, L, L] logits.
        p = F.normalize(pack.gather(pred.reshape(b, -1, d)), dim=-1) / tau
        z = F.normalize(pack.gather(targets[m].reshape(b, -1, d).to(p.dtype)), dim=-1)
        logits = torch.bmm(p, z.transpose(1, 2))  # [B, L, L]
        # Padded columns never compete. `attend` keeps one column of a sample without decoded
        # tokens, so every row has a finite entry; padded rows get that column as a finite
        # label and zero weight below (no inf/NaN, even in the backward pass).
        logits = logits.masked_fill(~pack.attend[:, None, :], float("-inf"))
        width = logits.shape[1]
        labels = torch.where(pack.valid, torch.arange(width, device=pred.device), 0)
        ce = F.cross_entropy(
            logits.reshape(b * width, width), labels.reshape(-1), reduction="none"
        ).reshape(b, width)
        ce = torch.where(pack.valid, ce, torch.zeros_like(ce))
        counts = pack.valid.sum(1)
        has = counts > 0
        per_sample = ce.sum(1)[has] / counts[has]
        loss = per_sample.mean() * (2 * tau)
        total = loss if total is None else total + loss
    if total is None:
        # No decoded token anywhere: a zero that still belongs to the graph.
        return sum(p.sum() * 0.0 for p in predictions.values())
    return total


def infonce_loss(a: torch.Tensor, b: torch.Tensor, tau: float = INFONCE_TAU) -> torch.Tensor:
    """InfoNCE between views: ``mean_b CE(<a_b, b_b'>/tau, b)``, ``[B, D]`` inputs L2-normalized."""
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    logits = a @ b.t() / tau
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


def total_loss(
    patch_disc_a: torch.Tensor, patch_disc_b: torch.Tensor, infonce: torch.Tensor,
    infonce_weight: float = INFONCE_WEIGHT,
) -> torch.Tensor:  # fmt: skip
    """v1 total: ``(L_patch(a) + L_patch(b)) / 2 + 0.1 * InfoNCE(a, b)``."""
    return (patch_disc_a + patch_disc_b) / 2 + infonce_weight * infonce
