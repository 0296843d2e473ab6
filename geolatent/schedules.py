"""The one learning-rate schedule helper: linear warm-up, then cosine decay.

Pretraining uses it with the config's ``warmup_steps`` / ``max_steps`` / ``final_lr_ratio``;
the evals' linear probe with a warm-up of 10 % of its steps decaying to 0. Fine-tuning (platform
and evals) steps on the validation loss instead (``ReduceLROnPlateau``), which is a different
rule, not a second copy of this one.
"""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, warmup_steps: int, max_steps: int, final_ratio: float = 0.1) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Linear warm-up reaching the peak at step ``warmup_steps - 1``, then a cosine from the peak
    to ``final_ratio`` x peak at ``max_steps`` (held there afterwards).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int,
                  final_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler applying :func:`lr_factor` to every parameter group of ``optimizer``
    (call ``step()`` once per optimizer step)."""
    if warmup_steps < 0 or max_steps < 1:
        raise ValueError(f"warmup_steps must be >= 0 and max_steps >= 1, got {warmup_steps}, "
                         f"{max_steps}")

    def factor(step: int) -> float:
        return lr_factor(step, warmup_steps, max_steps, final_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
