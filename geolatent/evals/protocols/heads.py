"""What the linear probe and fine-tuning share: heads and predictions (the loss is
:func:`geolatent.supervised.task_loss`, the LR schedule :mod:`geolatent.schedules`)."""

from __future__ import annotations

import torch
from torch import nn


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


def to_predictions(task_type: str, logits: torch.Tensor) -> torch.Tensor:
    """Class ids ``[B]`` / ``[B, H, W]``, 0/1 ``[B, K]``, or values ``[B]``."""
    if task_type in ("classification", "segmentation"):
        return logits.argmax(1)
    if task_type == "multilabel":
        return (logits > 0).long()
    return logits.reshape(-1)


def head_outputs(task_type: str, num_classes: int) -> int:
    return 1 if task_type == "regression" else num_classes
