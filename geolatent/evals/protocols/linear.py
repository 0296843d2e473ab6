"""Linear probe on frozen embeddings (or on any fixed features, e.g. the band-statistics
baseline, where it is a multinomial logistic / least-squares regression).

Classification / multilabel / regression: ``Linear(D, out)`` on pooled vectors ``[N, D]``.
Segmentation: per token ``Linear(D, classes * p^2)`` on feature maps ``[N, h, w, D]``,
rearranged to pixels ``[N, classes, h*p, w*p]``. AdamW, 50 epochs, cosine schedule with 10%
warm-up (spec defaults; all overridable). Features are standardized with training statistics
(missing features, NaN, become the training mean); regression targets are standardized too.
When several learning rates are given, the one with the best validation score is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import Field

from geolatent.config import StrictModel
from geolatent.evals.protocols.heads import (
    LinearHead,
    LrSelection,
    head_outputs,
    to_predictions,
)
from geolatent.schedules import warmup_cosine
from geolatent.supervised import task_loss


class LinearProbeConfig(StrictModel):
    """Spec defaults (AdamW, 50 epochs, cosine with 10% warm-up). The spec fixes no learning
    rate: by default three are tried and the best on the validation split is kept, because one
    fixed rate under- or over-shoots depending on how many steps a dataset gives (a few hundred
    samples give ~10 steps per epoch)."""

    epochs: int = 50
    lr: float | list[float] = Field(default_factory=lambda: [1e-3, 1e-2, 1e-1])
    weight_decay: float = 0.01
    batch_size: int = 32
    warmup_frac: float = 0.1
    standardize: bool = True


@dataclass
class LinearProbe:
    """A trained probe: standardization plus head."""

    head: LinearHead
    task_type: str
    mean: torch.Tensor
    std: torch.Tensor
    y_mean: float = 0.0
    y_std: float = 1.0
    history: list[float] = field(default_factory=list)

    @torch.no_grad()
    def predict(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        self.head.eval()
        out = []
        for s in range(0, len(x), batch_size):
            chunk = torch.tensor(np.asarray(x[s : s + batch_size], dtype=np.float32))
            xb = _standardized(chunk, self.mean, self.std)
            out.append(to_predictions(self.task_type, self.head(xb)))
        pred = torch.cat(out).numpy()
        if self.task_type == "regression":
            pred = pred * self.y_std + self.y_mean
        return pred


def _standardized(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    z = (x.float() - mean) / std
    return torch.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)


def fit_linear_probe(
    x: np.ndarray,
    y: np.ndarray,
    task_type: str,
    num_classes: int,
    config: LinearProbeConfig | None = None,
    seed: int = 0,
    lr: float | None = None,
    ignore_index: int = -1,
) -> LinearProbe:
    """Train a probe on features ``x`` (``[N, D]`` or ``[N, h, w, D]``) and labels ``y``."""
    cfg = config or LinearProbeConfig()
    lr = lr if lr is not None else (cfg.lr if not isinstance(cfg.lr, list | tuple) else cfg.lr[0])
    g = torch.Generator().manual_seed(seed)
    xt = torch.tensor(np.asarray(x, dtype=np.float32))  # a copy: x may be a read-only memmap
    yt = torch.as_tensor(np.asarray(y))
    feat = xt.reshape(-1, xt.shape[-1])
    if cfg.standardize:
        mean = torch.nanmean(feat, 0)
        std = torch.sqrt(torch.nanmean((feat - mean) ** 2, 0)).clamp_min(1e-6)
        std = torch.nan_to_num(std, nan=1.0)
        mean = torch.nan_to_num(mean, nan=0.0)
    else:
        mean, std = torch.zeros(feat.shape[1]), torch.ones(feat.shape[1])
    y_mean, y_std = 0.0, 1.0
    if task_type == "regression":
        y_mean, y_std = float(yt.float().mean()), float(yt.float().std().clamp_min(1e-6))
        yt = (yt.float() - y_mean) / y_std
    p = None
    if task_type == "segmentation":
        p = yt.shape[-1] // xt.shape[2]
    torch.manual_seed(seed)  # head init
    head = LinearHead(xt.shape[-1], head_outputs(task_type, num_classes), p)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    n = xt.shape[0]
    steps_per_epoch = max(1, -(-n // cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    sched = warmup_cosine(opt, max(1, round(total * cfg.warmup_frac)), total)
    xs = _standardized(xt, mean, std)
    history = []
    head.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for s in range(0, n, cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            loss = task_loss(task_type, head(xs[idx]), yt[idx], ignore_index=ignore_index)
            if loss is None:  # no labelled target in this batch
                sched.step()
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / n)
    return LinearProbe(head, task_type, mean, std, y_mean, y_std, history)


def linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    task_type: str,
    num_classes: int,
    config: LinearProbeConfig | None = None,
    seed: int = 0,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    ignore_index: int = -1,
) -> tuple[np.ndarray, dict]:
    """Fit (selecting the learning rate on the validation split when several are given) and
    predict the test features. Returns the test predictions and a small info dict."""
    cfg = config or LinearProbeConfig()
    lrs = list(cfg.lr) if isinstance(cfg.lr, list | tuple) else [cfg.lr]
    if len(lrs) > 1 and (x_val is None or y_val is None):
        raise ValueError(f"config.lr gives {len(lrs)} learning rates {lrs}: choosing one needs "
                         "a validation split; pass x_val and y_val, or a single learning rate "
                         "(LinearProbeConfig(lr=1e-2))")
    sel = LrSelection(task_type, num_classes, ignore_index)
    for lr in lrs:
        probe = fit_linear_probe(x_train, y_train, task_type, num_classes, cfg, seed, lr,
                                 ignore_index)  # fmt: skip
        if len(lrs) == 1:
            sel.keep(lr, probe)
            break
        sel.offer(lr, probe, y_val, probe.predict(x_val))
    probe = sel.best
    assert probe is not None
    info = {"lr": sel.best_lr, "val_scores": sel.scores,
            "final_train_loss": probe.history[-1] if probe.history else None}  # fmt: skip
    return probe.predict(x_test), info
