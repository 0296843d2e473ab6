"""Fine-tuning protocol: encoder plus linear head, trained end to end.

Spec defaults (all overridable): 50 epochs; the encoder is frozen for the first 20% of the
epochs, then trained at lr / 10 while the head keeps lr; ReduceLROnPlateau on the validation
loss (factor 0.2, patience 2); AdamW; the learning rate is swept over {1e-4, 5e-4, 1e-3} and
chosen on the validation split (never on test). The head is ``Linear(D, out)`` on the pooled
vector, or per token ``Linear(D, classes * p^2)`` for segmentation. The model passed in is not
modified (each run trains a copy).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from pydantic import Field

from geolatent.config import StrictModel
from geolatent.evals.datasets.base import Batch, SplitData
from geolatent.evals.encode import encoder_features, iter_chunks, prepare_eval_batch
from geolatent.evals.protocols.heads import (
    LinearHead,
    LrSelection,
    head_outputs,
    to_predictions,
)
from geolatent.supervised import task_loss


class FinetuneProbeConfig(StrictModel):
    """The eval fine-tuning protocol's settings (``settings: {finetune: ...}``); not the
    platform's :class:`geolatent.platform.config.FinetuneConfig` (a fine-tuning run's YAML)."""

    epochs: int = 50
    lrs: list[float] = Field(default_factory=lambda: [1e-4, 5e-4, 1e-3])
    freeze_frac: float = 0.2
    encoder_lr_scale: float = 0.1
    plateau_factor: float = 0.2
    plateau_patience: int = 2
    weight_decay: float = 0.01
    batch_size: int = 32
    eval_batch_size: int = 64
    preload: bool = True  # read the train / val samples once instead of every epoch


def _concat(batches: list[Batch]) -> Batch:
    return Batch(
        {m: np.concatenate([b.inputs[m] for b in batches]) for m in batches[0].inputs},
        batches[0].bands,
        np.concatenate([b.timestamps for b in batches]),
    )


class _Source:
    """Batches of a split, from memory (preloaded) or from the adapter."""

    def __init__(self, split: SplitData, preload: bool, chunk: int = 256):
        self.split = split
        self.data = (_concat([split.load(i) for i in iter_chunks(len(split), chunk)])
                     if preload and len(split) else None)  # fmt: skip

    def get(self, idx: np.ndarray) -> Batch:
        if self.data is None:
            return self.split.load(idx)
        d = self.data
        return Batch({m: x[idx] for m, x in d.inputs.items()}, d.bands, d.timestamps[idx])


class _Model(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module, head: LinearHead, pooled: bool):
        super().__init__()
        self.encoder, self.head, self.pooled = encoder, head, pooled

    def forward(self, prepared) -> torch.Tensor:
        f = encoder_features(self.encoder, prepared, self.pooled)
        return self.head(torch.nan_to_num(f))


def _predict(net: _Model, src: _Source, task_type: str, patch_size: int, bs: int,
             y_stats: tuple[float, float], device) -> np.ndarray:  # fmt: skip
    net.eval()
    out = []
    with torch.no_grad():
        for idx in iter_chunks(len(src.split), bs):
            cfg = net.encoder.model_config
            logits = net(prepare_eval_batch(src.get(idx), patch_size, device, config=cfg))
            out.append(to_predictions(task_type, logits).cpu())
    pred = torch.cat(out).numpy()
    return pred * y_stats[1] + y_stats[0] if task_type == "regression" else pred


def _val_loss(net, src, task_type, patch_size, bs, y, ignore_index, device) -> float:
    net.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for idx in iter_chunks(len(src.split), bs):
            cfg = net.encoder.model_config
            logits = net(prepare_eval_batch(src.get(idx), patch_size, device, config=cfg))
            loss = task_loss(task_type, logits, y[idx].to(device), ignore_index=ignore_index)
            if loss is not None:  # a chunk without any labelled target does not count
                total += float(loss) * len(idx)
                n += len(idx)
    return total / max(n, 1)


def finetune(
    model,
    train: SplitData,
    val: SplitData,
    test: SplitData,
    task_type: str,
    num_classes: int,
    patch_size: int,
    config: FinetuneProbeConfig | None = None,
    seed: int = 0,
    ignore_index: int = -1,
    on_epoch: Callable[[], None] | None = None,
) -> tuple[np.ndarray, dict]:
    """Fine-tune copies of ``model.encoder`` (one per learning rate), choose the learning rate
    by the validation score, and predict the test split with that run.

    Returns:
        test predictions (as :func:`~geolatent.evals.metrics.compute_metrics` takes them) and
        an info dict (chosen lr, validation scores per lr).
    """
    cfg = config or FinetuneProbeConfig()
    device = next(model.parameters()).device
    pooled = task_type != "segmentation"
    y_train = torch.as_tensor(np.asarray(train.labels))
    y_val = torch.as_tensor(np.asarray(val.labels))
    y_stats = (0.0, 1.0)
    if task_type == "regression":
        y_stats = (float(y_train.float().mean()), float(y_train.float().std().clamp_min(1e-6)))
        y_train = (y_train.float() - y_stats[0]) / y_stats[1]
        y_val = (y_val.float() - y_stats[0]) / y_stats[1]
    src_train, src_val = _Source(train, cfg.preload), _Source(val, cfg.preload)
    p = None
    if not pooled:
        b = src_train.get(np.arange(1))
        p = patch_size  # each token covers p x p pixels
        assert next(iter(b.inputs.values())).shape[1] % p == 0
    freeze_epochs = int(round(cfg.epochs * cfg.freeze_frac))
    sel = LrSelection(task_type, num_classes, ignore_index)
    for lr in cfg.lrs:
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        head = LinearHead(model.embedding_dim, head_outputs(task_type, num_classes), p)
        net = _Model(copy.deepcopy(model.encoder), head, pooled).to(device)
        opt = torch.optim.AdamW(
            [{"params": net.head.parameters(), "lr": lr},
             {"params": net.encoder.parameters(), "lr": lr * cfg.encoder_lr_scale}],
            weight_decay=cfg.weight_decay,
        )  # fmt: skip
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
        for epoch in range(cfg.epochs):
            frozen = epoch < freeze_epochs
            net.encoder.requires_grad_(not frozen)
            net.train()
            perm = torch.randperm(len(train), generator=g).numpy()
            for s in range(0, len(train), cfg.batch_size):
                idx = perm[s : s + cfg.batch_size]
                logits = net(prepare_eval_batch(src_train.get(idx), patch_size, device,
                                             config=net.encoder.model_config))
                loss = task_loss(task_type, logits, y_train[idx].to(device),
                                 ignore_index=ignore_index)
                if loss is None:  # no labelled target in this batch
                    continue
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            plateau.step(_val_loss(net, src_val, task_type, patch_size, cfg.eval_batch_size,
                                   y_val, ignore_index, device))  # fmt: skip
            if on_epoch:
                on_epoch()
        pred_val = _predict(net, src_val, task_type, patch_size, cfg.eval_batch_size, y_stats,
                            device)  # fmt: skip
        sel.offer(lr, net, np.asarray(val.labels), pred_val)
    net = sel.best
    assert net is not None
    src_test = _Source(test, preload=False)
    pred = _predict(net, src_test, task_type, patch_size, cfg.eval_batch_size, y_stats, device)
    return pred, {"lr": sel.best_lr, "val_scores": sel.scores, "freeze_epochs": freeze_epochs}
