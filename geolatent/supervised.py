"""The one supervised task loss, shared by platform fine-tuning and the evals' linear probe and
fine-tuning protocols.

Task names are the union of both: ``classification`` / ``segmentation`` (cross-entropy with an
ignore index and optional class weights), ``multilabel`` (BCE on logits), ``regression`` /
``pixel_regression`` (MSE on standardized targets; non-finite targets are unlabelled).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

CLASS_LOSS_TASKS = ("classification", "segmentation")
REGRESSION_LOSS_TASKS = ("regression", "pixel_regression")


def task_loss(task: str, out: torch.Tensor, target: torch.Tensor, *, ignore_index: int = -1,
              class_weight: torch.Tensor | None = None, target_mean: float = 0.0,
              target_std: float = 1.0) -> torch.Tensor | None:
    """The mean loss of a batch, or ``None`` when the batch holds no labelled target (every
    class is ``ignore_index``, every regression target non-finite): such a batch is skipped,
    never turned into a NaN step.

    Args:
        task: one of :data:`CLASS_LOSS_TASKS`, ``"multilabel"``, :data:`REGRESSION_LOSS_TASKS`.
        out: logits ``[B, K]`` / ``[B, K, H, W]``, or regression outputs ``[B]`` / ``[B, 1]`` /
            ``[B, 1, H, W]`` (standardized units).
        target: class ids ``[B]`` / ``[B, H, W]``, 0/1 ``[B, K]``, or values in the target's
            units ``[B]`` / ``[B, H, W]``.
        class_weight: ``[K]`` cross-entropy weights (classification tasks only).
        target_mean, target_std: regression targets are standardized as
            ``(target - target_mean) / target_std`` before the MSE.
    """
    if task in CLASS_LOSS_TASKS:
        y = target.long()
        if not bool((y != ignore_index).any()):
            return None
        w = None if class_weight is None else class_weight.to(out.device)
        return F.cross_entropy(out.float(), y, weight=w, ignore_index=ignore_index)
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(out.float(), target.float())
    if task not in REGRESSION_LOSS_TASKS:
        known = (*CLASS_LOSS_TASKS, "multilabel", *REGRESSION_LOSS_TASKS)
        raise ValueError(f"task must be one of {known}, got {task!r}")
    pred = out[:, 0] if out.ndim == 4 else out.reshape(-1)
    y = ((target.float() - target_mean) / target_std).reshape(pred.shape)
    ok = torch.isfinite(y)
    if not bool(ok.any()):
        return None
    return F.mse_loss(pred.float()[ok], y[ok])
