"""What the linear probe and fine-tuning share: heads, predictions and the learning-rate sweep
(the loss is :func:`geolatent.supervised.task_loss`, the LR schedule :mod:`geolatent.schedules`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from geolatent.evals.metrics import HIGHER_IS_BETTER, PRIMARY_METRIC, compute_metrics


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


class LrSelection:
    """The learning-rate sweep of both protocols: keeps the model whose validation score (the
    task's primary metric, :data:`~geolatent.evals.metrics.PRIMARY_METRIC`) is best.

    Attributes:
        scores: ``{str(lr): validation score}`` of every offered learning rate.
        best, best_lr: the kept model and its learning rate (None before the first offer).
    """

    def __init__(self, task_type: str, num_classes: int, ignore_index: int = -1):
        self.task_type, self.num_classes, self.ignore_index = task_type, num_classes, ignore_index
        self.metric = PRIMARY_METRIC[task_type]
        self.sign = 1 if HIGHER_IS_BETTER.get(self.metric, True) else -1
        self.scores: dict[str, float] = {}
        self.best, self.best_lr, self._key = None, None, -math.inf

    def keep(self, lr: float, model) -> None:
        """Keep ``model`` without scoring it (a sweep of one learning rate)."""
        self.best, self.best_lr = model, lr

    def offer(self, lr: float, model, y_true, y_pred) -> None:
        """Score ``y_pred`` against ``y_true`` (as ``compute_metrics`` takes them); keep
        ``model`` when it beats every earlier offer (the first of equals wins)."""
        score = compute_metrics(self.task_type, y_true, y_pred, self.num_classes,
                                self.ignore_index)[self.metric]  # fmt: skip
        self.scores[str(lr)] = score
        if self.best is None or self.sign * score > self._key:
            self.best, self.best_lr, self._key = model, lr, self.sign * score
