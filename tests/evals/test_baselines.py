import datetime as dt

import numpy as np

from geolatent.evals.baselines import band_statistics, logistic_regression, ridge_regression
from geolatent.evals.datasets.base import Batch, constant_timestamps
from geolatent.evals.metrics import compute_metrics
from geolatent.modalities import MISSING_VALUE
from geolatent.normalize import band_affine


def test_band_statistics_layout_and_missing():
    x = np.full((2, 4, 4, 3, 4), 1000.0, np.float32)
    x[0, :2, :, :, 0] = 3000.0
    x[1, :, :, 1] = MISSING_VALUE  # a missing timestep
    b = Batch({"sentinel2_l2a": x}, {"sentinel2_l2a": ["B02", "B03", "B04", "B08"]},
              constant_timestamps(2, [dt.date(2020, m, 1) for m in (1, 2, 3)]))
    f = band_statistics(b, per_pixel=False)
    assert f.shape == (2, 2 * 3 * 4)  # mean and std per (timestep, band)
    lo, hi = band_affine("sentinel2_l2a")
    np.testing.assert_allclose(f[0, 0], ((2000 - lo[0]) / (hi[0] - lo[0])), rtol=1e-5)
    assert f[0, 12] > 0 and np.isnan(f[1, 4:8]).all()  # std of band 0; missing step -> NaN
    px = band_statistics(b, per_pixel=True)
    assert px.shape == (2, 4, 4, 12)


def test_ridge_and_logistic_select_on_validation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = x @ np.arange(6) + rng.normal(scale=0.1, size=200)
    pred, info = ridge_regression(x[:120], y[:120], x[160:], x[120:160], y[120:160])
    assert compute_metrics("regression", y[160:], pred)["r2"] > 0.99 and info["alpha"] <= 1.0
    cls = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    pred, info = logistic_regression(x[:120], cls[:120], x[160:], x[120:160], cls[120:160],
                                     "classification", 2)  # fmt: skip
    assert (pred == cls[160:]).mean() > 0.9 and len(info["val_scores"]) == 5
    ml = np.stack([cls, (x[:, 2] > 0)], 1).astype(np.int64)
    pred, _ = logistic_regression(x[:120], ml[:120], x[160:], x[120:160], ml[120:160],
                                  "multilabel", 2)  # fmt: skip
    assert pred.shape == (40, 2) and (pred == ml[160:]).mean() > 0.9


def test_logistic_segmentation_ignores_unlabeled_pixels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 4, 4, 3)).astype(np.float32)
    y = (x[..., 0] > 0).astype(np.int64)
    y[:, 0, 0] = -1
    pred, _ = logistic_regression(x[:6], y[:6], x[8:], x[6:8], y[6:8], "segmentation", 2)
    assert pred.shape == (2, 4, 4)
    assert compute_metrics("segmentation", y[8:], pred, 2)["pixel_accuracy"] > 0.9
