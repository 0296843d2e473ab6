"""Metrics as functions of per-sample sufficient statistics.

Every metric here is a function of a *sum over samples* of small per-sample statistics
(confusion-matrix cells, per-class TP/FP/FN, regression moments). That makes a bootstrap over
test samples one matrix product (resampling weights ``[B, N]`` times statistics ``[N, S]``)
instead of B metric recomputations, and lets seeds share the same resamples.

Conventions: macro averages run over the classes that occur in the targets or the predictions
(a class absent from both has an undefined F1 / IoU and is skipped, per replicate); mIoU is the
mean IoU over those classes; ``ignore_index`` pixels are excluded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PRIMARY_METRIC = {
    "classification": "accuracy",
    "multilabel": "f1_micro",
    "segmentation": "miou",
    "regression": "rmse",
}
HIGHER_IS_BETTER = {"rmse": False}


# --------------------------------------------------------------------------- per-sample stats


def confusion_stats(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int,
                    ignore_index: int = -1) -> np.ndarray:  # fmt: skip
    """Per-sample flattened confusion counts ``[N, C*C]`` (row = true class).

    ``y_true`` / ``y_pred`` are ``[N]`` (classification) or ``[N, ...]`` (segmentation pixels).
    """
    c = num_classes
    t = y_true.reshape(len(y_true), -1)
    p = y_pred.reshape(len(y_pred), -1)
    valid = (t != ignore_index) & (t >= 0) & (t < c)
    cell = np.where(valid, t * c + np.clip(p, 0, c - 1), c * c)  # c*c = "ignored" bin
    offset = np.arange(len(t))[:, None] * (c * c + 1)
    counts = np.bincount((cell + offset).ravel(), minlength=len(t) * (c * c + 1))
    return counts.reshape(len(t), c * c + 1)[:, : c * c].astype(np.float64)


def multilabel_stats(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-sample ``[N, 3K]``: TP, FP, FN of each of the K labels (0/1 arrays ``[N, K]``)."""
    t, p = y_true.astype(bool), y_pred.astype(bool)
    return np.concatenate([t & p, ~t & p, t & ~p], axis=1).astype(np.float64)


def regression_stats(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-sample ``[N, 4]``: 1, y, y^2, (y - y_hat)^2."""
    y = y_true.astype(np.float64).reshape(len(y_true))
    e = y - y_pred.astype(np.float64).reshape(len(y_pred))
    return np.stack([np.ones_like(y), y, y * y, e * e], axis=1)


def sample_stats(task_type: str, y_true: np.ndarray, y_pred: np.ndarray, num_classes: int,
                 ignore_index: int = -1) -> np.ndarray:  # fmt: skip
    if task_type in ("classification", "segmentation"):
        return confusion_stats(y_true, y_pred, num_classes, ignore_index)
    if task_type == "multilabel":
        return multilabel_stats(y_true, y_pred)
    if task_type == "regression":
        return regression_stats(y_true, y_pred)
    raise ValueError(f"unknown task type {task_type!r}")


# ------------------------------------------------------------------------- scores from sums


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _nanmean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    n = (~np.isnan(x)).sum(axis)
    return _safe_div(np.nansum(x, axis), n.astype(np.float64))


def confusion_scores(s: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Scores from summed confusion counts ``[..., C*C]``."""
    m = s.reshape(*s.shape[:-1], num_classes, num_classes)
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    support, predicted = m.sum(-1), m.sum(-2)
    total = support.sum(-1)
    fp, fn = predicted - tp, support - tp
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    iou = _safe_div(tp, tp + fp + fn)
    acc = _safe_div(tp.sum(-1), total)
    return {"accuracy": acc, "f1_micro": acc, "f1_macro": _nanmean(f1), "miou": _nanmean(iou)}


def multilabel_scores(s: np.ndarray) -> dict[str, np.ndarray]:
    k = s.shape[-1] // 3
    tp, fp, fn = s[..., :k], s[..., k : 2 * k], s[..., 2 * k :]
    micro = _safe_div(2 * tp.sum(-1), (2 * tp + fp + fn).sum(-1))
    return {"f1_micro": micro, "f1_macro": _nanmean(_safe_div(2 * tp, 2 * tp + fp + fn))}


def regression_scores(s: np.ndarray) -> dict[str, np.ndarray]:
    n, sy, syy, sse = s[..., 0], s[..., 1], s[..., 2], s[..., 3]
    sst = syy - _safe_div(sy * sy, n)
    return {"rmse": np.sqrt(_safe_div(sse, n)), "r2": 1 - _safe_div(sse, sst)}


def scores_from_stats(
    task_type: str, summed: np.ndarray, num_classes: int
) -> dict[str, np.ndarray]:
    """All metrics of a task from statistics summed over samples (any leading batch shape)."""
    if task_type == "classification":
        d = confusion_scores(summed, num_classes)
        return {k: d[k] for k in ("accuracy", "f1_micro", "f1_macro")}
    if task_type == "segmentation":
        d = confusion_scores(summed, num_classes)
        return {"miou": d["miou"], "pixel_accuracy": d["accuracy"], "f1_macro": d["f1_macro"]}
    if task_type == "multilabel":
        return multilabel_scores(summed)
    return regression_scores(summed)


def compute_metrics(task_type: str, y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = 0,
                    ignore_index: int = -1) -> dict[str, float]:  # fmt: skip
    """Metrics of one set of predictions.

    Args:
        task_type: classification | multilabel | segmentation | regression.
        y_true, y_pred: ``[N]`` class ids; ``[N, K]`` 0/1; ``[N, H, W]`` class ids; ``[N]`` floats.
    """
    s = sample_stats(task_type, y_true, y_pred, num_classes, ignore_index).sum(0)
    return {k: float(v) for k, v in scores_from_stats(task_type, s, num_classes).items()}


# ------------------------------------------------------------------------------- bootstrap


def bootstrap_ci(
    task_type: str,
    per_seed_stats: Sequence[np.ndarray],
    num_classes: int = 0,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    chunk: int = 100,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CI of the seed-averaged metrics, resampling test samples.

    Each replicate resamples the N test samples with replacement (the same resample for every
    seed), recomputes each seed's metrics and averages them over seeds: the interval reflects
    test-set sampling of the mean-over-seeds score.

    Args:
        per_seed_stats: per seed the per-sample statistics ``[N, S]`` (same N for all seeds).
    """
    stats = np.stack(per_seed_stats)  # [R, N, S]
    n = stats.shape[1]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)  # [b, N]
        summed = np.einsum("bn,rns->brs", w, stats)
        for k, v in scores_from_stats(task_type, summed, num_classes).items():
            draws.setdefault(k, []).append(_nanmean(v, axis=1))
    out = {}
    for k, parts in draws.items():
        v = np.concatenate(parts)
        v = v[~np.isnan(v)]
        out[k] = (
            (float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2)))
            if v.size else (float("nan"), float("nan"))
        )  # fmt: skip
    return out
