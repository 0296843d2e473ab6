import numpy as np
import pytest

from geolatent.evals.metrics import bootstrap_ci, compute_metrics, sample_stats


def test_classification_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0])
    m = compute_metrics("classification", y, p, 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1_micro"] == pytest.approx(4 / 6)
    # per class F1: c0 tp1 fp1 fn1 -> 0.5; c1 tp2 fp1 fn0 -> 0.8; c2 tp1 fp0 fn1 -> 2/3
    assert m["f1_macro"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_macro_f1_skips_classes_absent_from_targets_and_predictions():
    m = compute_metrics("classification", np.array([0, 1]), np.array([0, 1]), 5)
    assert m["f1_macro"] == pytest.approx(1.0)


def test_multilabel_f1():
    y = np.array([[1, 0, 1], [0, 1, 0]])
    p = np.array([[1, 1, 0], [0, 1, 0]])
    m = compute_metrics("multilabel", y, p)
    # tp 2, fp 1, fn 1 -> micro 4/6; per label: 1, 2/3, 0
    assert m["f1_micro"] == pytest.approx(4 / 6)
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_segmentation_miou_ignores_pixels():
    y = np.array([[[0, 0], [1, -1]]])
    p = np.array([[[0, 1], [1, 1]]])
    m = compute_metrics("segmentation", y, p, 2, ignore_index=-1)
    # c0: tp1 fp0 fn1 -> 1/2; c1: tp1 fp1 fn0 -> 1/2
    assert m["miou"] == pytest.approx(0.5)
    assert m["pixel_accuracy"] == pytest.approx(2 / 3)


def test_regression_rmse_r2():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.0, 2.0, 3.0, 5.0])
    m = compute_metrics("regression", y, p)
    assert m["rmse"] == pytest.approx(0.5)
    assert m["r2"] == pytest.approx(1 - 1 / 5)


def test_bootstrap_ci_brackets_the_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 2000):
        y = rng.integers(0, 3, n)
        p = np.where(rng.random(n) < 0.7, y, rng.integers(0, 3, n))
        stats = [sample_stats("classification", y, p, 3)]
        lo, hi = bootstrap_ci("classification", stats, 3, n_boot=300)["accuracy"]
        acc = compute_metrics("classification", y, p, 3)["accuracy"]
        assert lo <= acc <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 3


def test_bootstrap_averages_seeds():
    y = np.array([0, 1] * 20)
    right = sample_stats("classification", y, y, 2)
    wrong = sample_stats("classification", y, 1 - y, 2)
    lo, hi = bootstrap_ci("classification", [right, wrong], 2, n_boot=50)["accuracy"]
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
