"""Task metrics for fine-tuning and map assessment, on top of :mod:`geolatent.evals.metrics`.

Metrics are computed from running sums (a confusion matrix for classes, moments for values),
so a validation pass over many pixels never holds them all. Per-class accuracy (recall),
precision and the headline scores come from one confusion matrix and always agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geolatent.evals.metrics import confusion_scores, confusion_stats, regression_scores
from geolatent.platform.classes import IGNORE_INDEX

HIGHER_IS_BETTER = {"rmse": False, "mae": False, "loss": False}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 ``[K, K]`` counts (row = true class); entries with ``y_true == -1`` are ignored."""
    t = np.asarray(y_true).reshape(1, -1)
    p = np.asarray(y_pred).reshape(1, -1)
    stats = confusion_stats(t, p, num_classes, ignore_index=IGNORE_INDEX)
    return stats.reshape(num_classes, num_classes).astype(np.int64)


def metrics_from_confusion(cm: np.ndarray, class_names: Sequence[str]) -> dict:
    """Accuracy, macro F1, mIoU, per-class accuracy (recall) / precision / support."""
    cm = np.asarray(cm, dtype=np.int64)
    scores = confusion_scores(cm.reshape(-1).astype(np.float64), len(class_names))
    support, predicted = cm.sum(1), cm.sum(0)
    diag = np.diag(cm)
    total = int(support.sum())
    return {
        "accuracy": float(diag.sum() / total) if total else float("nan"),
        "f1_macro": float(scores["f1_macro"]),
        "miou": float(scores["miou"]),
        "per_class": {
            name: {
                "accuracy": float(diag[i] / support[i]) if support[i] else None,
                "precision": float(diag[i] / predicted[i]) if predicted[i] else None,
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion": cm.tolist(),
        "count": total,
    }


def class_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> dict:
    """:func:`metrics_from_confusion` of class-index arrays of one shape (-1 true = ignored)."""
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, len(class_names)), class_names)


class RegressionSums:
    """Running sums of (count, Σy, Σy², Σ(y-ŷ)², Σ|y-ŷ|) over finite targets."""

    def __init__(self) -> None:
        self.sums = np.zeros(5, dtype=np.float64)

    def add(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        t = np.asarray(y_true, dtype=np.float64).ravel()
        p = np.asarray(y_pred, dtype=np.float64).ravel()
        ok = np.isfinite(t) & np.isfinite(p)
        t, e = t[ok], t[ok] - p[ok]
        self.sums += (len(t), t.sum(), (t * t).sum(), (e * e).sum(), np.abs(e).sum())

    def metrics(self) -> dict:
        n = self.sums[0]
        if n == 0:
            return {"rmse": float("nan"), "mae": float("nan"), "r2": float("nan"), "count": 0}
        s = regression_scores(self.sums[:4])
        return {"rmse": float(s["rmse"]), "mae": float(self.sums[4] / n), "r2": float(s["r2"]),
                "count": int(n)}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """RMSE, MAE and R² over the finite entries (value units)."""
    sums = RegressionSums()
    sums.add(y_true, y_pred)
    return sums.metrics()


def format_class_report(metrics: dict) -> str:
    """A small text table of per-class accuracy and support."""
    lines = [f"accuracy {metrics['accuracy']:.3f}  macro-F1 {metrics['f1_macro']:.3f}  "
             f"mIoU {metrics['miou']:.3f}  ({metrics['count']} samples)"]
    width = max(len(n) for n in metrics["per_class"])
    for name, m in metrics["per_class"].items():
        acc = "  n/a" if m["accuracy"] is None else f"{m['accuracy']:.3f}"
        lines.append(f"  {name:<{width}}  accuracy {acc}  support {m['support']}")
    return "\n".join(lines)
