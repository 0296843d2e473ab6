"""What the linear probe and fine-tuning share: heads, losses, predictions, the LR schedule."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class LinearHead(nn.Module):
    """``Linear(D, out)`` on pooled vectors, or per token ``Linear(D, classes * p^2)``
    rearranged to pixels for segmentation.

    Args:
        dim: D.
        out: classes (classification / multilabel / segmentation) or 1 (regression).
        pixels_per_token: p for segmentation (each token predicts its p x p pixels), else None.
    """

    def __init__(self, dim: int, out: int, pixels_per_token: int | None = None):
        super().__init__()
        self.out, self.p = out, pixels_per_token
        self.linear = nn.Linear(dim, out * (pixels_per_token or 1) ** 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` -> ``[B, out]``, or ``[B, h, w, D]`` -> ``[B, out, h*p, w*p]``."""
        y = self.linear(x)
        if self.p is None:
            return y
        b, h, w, _ = y.shape
        p = self.p
        y = y.reshape(b, h, w, self.out, p, p).permute(0, 3, 1, 4, 2, 5)
        return y.reshape(b, self.out, h * p, w * p)


def task_loss(task_type: str, logits: torch.Tensor, target: torch.Tensor,
              ignore_index: int = -1) -> torch.Tensor:  # fmt: skip
    """Cross-entropy (classification, segmentation), BCE (multilabel), MSE (regression;
    targets standardized by the caller)."""
    if task_type in ("classification", "segmentation"):
        return F.cross_entropy(logits, target.long(), ignore_index=ignore_index)
    if task_type == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, target.float())
    return F.mse_loss(logits.reshape(-1), target.float().reshape(-1))


def to_predictions(task_type: str, logits: torch.Tensor) -> torch.Tensor:
    """Class ids ``[B]`` / ``[B, H, W]``, 0/1 ``[B, K]``, or values ``[B]``."""
    if task_type in ("classification", "segmentation"):
        return logits.argmax(1)
    if task_type == "multilabel":
        return (logits > 0).long()
    return logits.reshape(-1)


def head_outputs(task_type: str, num_classes: int) -> int:
    return 1 if task_type == "regression" else num_classes


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_frac: float = 0.1):
    """Linear warm-up over ``warmup_frac`` of the steps, then cosine decay to 0."""
    warm = max(1, int(round(total_steps * warmup_frac)))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
