"""Simple baselines that show what the embeddings add: per-band statistics fed to classical,
properly regularized linear models: L2-regularized logistic regression (softmax; sigmoid per
label for multilabel; per pixel for segmentation) fitted to convergence with L-BFGS, and ridge
regression in closed form. The penalty is chosen on the validation split, like every selection.

Features use the same bands the model gets, scaled by the same pretraining normalization:

* pooled tasks: per modality, band and timestep the mean and standard deviation over the
  sample's valid pixels -> ``[N, F]``;
* segmentation: each pixel's own normalized values over bands and timesteps -> ``[N, H, W, F]``
  (a per-pixel spectral-temporal classifier).

Missing values become NaN, which become the training mean after standardization.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.nn import functional as F

from geolatent.evals.datasets.base import Batch, SplitData
from geolatent.evals.encode import iter_chunks
from geolatent.evals.metrics import HIGHER_IS_BETTER, PRIMARY_METRIC, compute_metrics
from geolatent.modalities import MISSING_VALUE, get_modality
from geolatent.normalize import band_affine

BASELINES = ("band-stats",)


def _normalized(batch: Batch) -> list[np.ndarray]:
    """Per modality ``[B, H, W, T, C]`` normalized values, NaN where missing."""
    out = []
    for name in sorted(batch.inputs):
        x = batch.inputs[name].astype(np.float32)
        lo, hi = band_affine(name)
        idx = [get_modality(name).band_index(b) for b in batch.bands[name]]
        z = (x - lo[idx]) / (hi - lo)[idx]
        out.append(np.where((x == MISSING_VALUE) | ~np.isfinite(x), np.nan, z).astype(np.float32))
    return out


def band_statistics(batch: Batch, per_pixel: bool) -> np.ndarray:
    """Baseline features of a batch (see the module docstring for the layout)."""
    parts = []
    for z in _normalized(batch):
        b, h, w, t, c = z.shape
        if per_pixel:
            parts.append(z.reshape(b, h, w, t * c))
            continue
        flat = z.reshape(b, h * w, t * c)
        with warnings.catch_warnings():  # an all-missing band is legitimately NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            parts += [np.nanmean(flat, axis=1), np.nanstd(flat, axis=1)]
    return np.concatenate(parts, axis=-1).astype(np.float32)


def split_features(split: SplitData, per_pixel: bool, batch_size: int = 256) -> np.ndarray:
    return np.concatenate(
        [band_statistics(split.load(i), per_pixel) for i in iter_chunks(len(split), batch_size)]
    )


def ridge_regression(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    alphas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0),
) -> tuple[np.ndarray, dict]:
    """Closed-form ridge on standardized features; ``alpha`` chosen by validation RMSE (the fit
    itself uses train only, as every protocol does). Returns test predictions and alpha."""
    z = standardizer(x_train)

    def fit(x, y, alpha):
        xm, ym = x.mean(0), y.mean()
        xc = x - xm
        coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - ym))
        return lambda q: (q - xm) @ coef + ym

    xt, xv = z(x_train).astype(np.float64), z(x_val).astype(np.float64)
    yt = y_train.astype(np.float64)
    models = {a: fit(xt, yt, a) for a in alphas}
    rmse = {a: compute_metrics("regression", y_val, m(xv))["rmse"] for a, m in models.items()}
    best = min(alphas, key=lambda a: rmse[a])
    pred = models[best](z(x_test).astype(np.float64))
    return pred, {"alpha": best, "val_rmse": {str(k): v for k, v in rmse.items()}}


def standardizer(x_train: np.ndarray):
    """A function that standardizes features with the training mean / std (NaN -> 0)."""
    flat = x_train.reshape(-1, x_train.shape[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nan_to_num(np.nanmean(flat, 0))
        std = np.nan_to_num(np.nanstd(flat, 0))
    std = np.where(std > 1e-6, std, 1.0)

    def z(x: np.ndarray) -> np.ndarray:
        return np.nan_to_num((x - mean) / std, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)

    return z


def logistic_regression(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    task_type: str,
    num_classes: int,
    lambdas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
    max_iter: int = 100,
    max_rows: int = 200_000,
    ignore_index: int = -1,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """L2-regularized logistic regression on fixed features, fitted with full-batch L-BFGS.

    Features are ``[N, F]`` (classification / multilabel) or ``[N, H, W, F]`` with labels
    ``[N, H, W]`` (segmentation: one example per labeled pixel; at most ``max_rows`` pixels,
    sampled with ``seed``, are used to fit). The penalty ``lambda * ||W||^2 / 2`` (mean loss
    scale) is chosen by the validation score. Returns test predictions and the chosen lambda.
    """
    z = standardizer(x_train)
    seg = task_type == "segmentation"
    xt = torch.from_numpy(z(x_train).reshape(-1, x_train.shape[-1]))
    yt = torch.from_numpy(np.asarray(y_train).reshape(len(xt), -1) if not seg
                          else np.asarray(y_train).reshape(-1))  # fmt: skip
    if seg:
        keep = (yt != ignore_index).nonzero().squeeze(1)
        if len(keep) > max_rows:
            g = torch.Generator().manual_seed(seed)
            keep = keep[torch.randperm(len(keep), generator=g)[:max_rows]]
        xt, yt = xt[keep], yt[keep]
    elif task_type == "classification":
        yt = yt.reshape(-1)
    multilabel = task_type == "multilabel"

    def fit(lam: float):
        w = torch.zeros(xt.shape[1], num_classes, requires_grad=True)
        b = torch.zeros(num_classes, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            logits = xt @ w + b
            loss = (F.binary_cross_entropy_with_logits(logits, yt.float()) if multilabel
                    else F.cross_entropy(logits, yt.long()))  # fmt: skip
            loss = loss + 0.5 * lam * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return w.detach(), b.detach()

    def predict(params, x: np.ndarray) -> np.ndarray:
        w, b = params
        logits = torch.from_numpy(z(x)) @ w + b
        if multilabel:
            return (logits > 0).long().numpy()
        return logits.argmax(-1).numpy()

    metric = PRIMARY_METRIC[task_type]
    sign = 1 if HIGHER_IS_BETTER.get(metric, True) else -1
    scores, best = {}, None
    for lam in lambdas:
        params = fit(lam)
        score = compute_metrics(task_type, y_val, predict(params, x_val), num_classes,
                                ignore_index)[metric]  # fmt: skip
        scores[str(lam)] = score
        if best is None or sign * np.nan_to_num(score, nan=-np.inf) > best[0]:
            best = (sign * np.nan_to_num(score, nan=-np.inf), params, lam)
    assert best is not None
    return predict(best[1], x_test), {"lambda": best[2], "val_scores": scores}
