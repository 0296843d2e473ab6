import numpy as np
import pytest
import torch

from geolatent.evals.metrics import compute_metrics
from geolatent.evals.protocols.heads import LinearHead
from geolatent.evals.protocols.knn import KNNConfig, knn_predict
from geolatent.evals.protocols.linear import LinearProbeConfig, fit_linear_probe, linear_probe
from geolatent.schedules import warmup_cosine


def clusters(n_per=30, classes=3, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 4
    y = np.repeat(np.arange(classes), n_per)
    x = centers[y] + rng.normal(size=(len(y), dim))
    return x.astype(np.float32), y


def test_knn_separable_clusters():
    x, y = clusters()
    pred = knn_predict(x, y, x + 0.01, "classification", 3)
    assert (pred == y).mean() == 1.0


def test_knn_votes_are_similarity_weighted():
    # Two neighbours of class 1 far less similar than one of class 0: weighting decides.
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]], np.float32)
    labels = np.array([0, 1, 1])
    query = np.array([[1.0, 0.05]], np.float32)
    assert knn_predict(train, labels, query, "classification", 2, KNNConfig(k=3))[0] == 0
    # With a huge temperature the vote is a plain majority.
    flat = KNNConfig(k=3, temperature=1e6)
    assert knn_predict(train, labels, query, "classification", 2, flat)[0] == 1


def test_knn_regression_and_multilabel():
    train = np.eye(4, dtype=np.float32)
    vals = np.array([1.0, 2.0, 3.0, 4.0])
    out = knn_predict(train, vals, train, "regression", config=KNNConfig(k=1))
    np.testing.assert_allclose(out, vals)
    ml = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    out = knn_predict(train, ml, train, "multilabel", 2, KNNConfig(k=1))
    np.testing.assert_array_equal(out, ml)
    with pytest.raises(ValueError):
        knn_predict(train, vals, train, "segmentation")


def test_linear_head_puts_each_token_on_its_pixels():
    head = LinearHead(dim=2, out=3, pixels_per_token=2)
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.copy_(torch.arange(12, dtype=torch.float32))  # (class, py, px)
    x = torch.zeros(1, 2, 3, 2)
    y = head(x)
    assert y.shape == (1, 3, 4, 6)
    # every token repeats the same p x p block: class c, pixel (py, px) = c*4 + py*2 + px
    for c in range(3):
        block = torch.tensor([[c * 4 + 0, c * 4 + 1], [c * 4 + 2, c * 4 + 3]], dtype=torch.float32)
        torch.testing.assert_close(y[0, c], block.repeat(2, 3))


def test_warmup_cosine_shape():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = warmup_cosine(opt, 10, 100)  # the linear probe's 10 % warm-up, decaying to 0
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and max(lrs) == pytest.approx(1.0)
    assert lrs[-1] < 0.01 and np.argmax(lrs) == 9


FAST = LinearProbeConfig(epochs=15, lr=0.05, batch_size=16)


def test_linear_probe_classification_and_regression():
    x, y = clusters()
    pred, info = linear_probe(x, y, x, "classification", 3, FAST)
    assert (pred == y).mean() > 0.95 and info["lr"] == 0.05
    w = np.random.default_rng(0).normal(size=16)
    target = x @ w + 3.0
    pr = fit_linear_probe(x, target, "regression", 0, FAST)
    assert compute_metrics("regression", target, pr.predict(x))["r2"] > 0.95


def test_linear_probe_lr_selection_uses_validation():
    x, y = clusters()
    cfg = LinearProbeConfig(epochs=5, lr=[1e-6, 0.05], batch_size=16)
    _, info = linear_probe(x, y, x, "classification", 3, cfg, x_val=x, y_val=y)
    assert info["lr"] == 0.05 and set(info["val_scores"]) == {"1e-06", "0.05"}
    with pytest.raises(ValueError, match="validation"):
        linear_probe(x, y, x, "classification", 3, cfg)


def test_linear_probe_segmentation_per_token():
    rng = np.random.default_rng(0)
    # 2 x 2 tokens of D=4; label of each 2 x 2 pixel block is the argmax of the token's first
    # two features, with one ignored pixel.
    feats = rng.normal(size=(40, 2, 2, 4)).astype(np.float32)
    tok = (feats[..., 0] > feats[..., 1]).astype(np.int64)
    labels = np.repeat(np.repeat(tok, 2, axis=1), 2, axis=2)
    labels[:, 0, 0] = -1
    pr = fit_linear_probe(feats, labels, "segmentation", 2, FAST)
    m = compute_metrics("segmentation", labels, pr.predict(feats), 2)
    assert pr.predict(feats).shape == (40, 4, 4) and m["pixel_accuracy"] > 0.9


def test_linear_probe_tolerates_nan_features():
    x, y = clusters()
    x[::7, 3] = np.nan
    pred, _ = linear_probe(x, y, x, "classification", 3, FAST)
    assert (pred == y).mean() > 0.9
