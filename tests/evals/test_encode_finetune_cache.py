import datetime as dt

import numpy as np
import pytest
import torch

from geolatent.evals.cache import EmbeddingCache, cache_key, model_fingerprint
from geolatent.evals.datasets.base import Batch, array_split, constant_timestamps
from geolatent.evals.encode import embed_split, encoder_features, prepare_eval_batch
from geolatent.evals.protocols.finetune import FinetuneProbeConfig, finetune
from geolatent.modalities import MISSING_VALUE


def s2_batch(n=6, size=8, t=2, seed=0) -> Batch:
    """S2 DN for 10 bands (no B01 / B09: that bandset is masked) plus S1 dB, one S1 pixel
    missing."""
    rng = np.random.default_rng(seed)
    s2 = rng.uniform(300, 4000, size=(n, size, size, t, 10)).astype(np.float32)
    s1 = rng.uniform(-25, -5, size=(n, size, size, t, 2)).astype(np.float32)
    s1[0, :4, :4, 0] = MISSING_VALUE
    bands = {"sentinel2_l2a": ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11",
                               "B12"], "sentinel1": ["vv", "vh"]}  # fmt: skip
    ts = constant_timestamps(n, [dt.date(2020, 5, 1), dt.date(2020, 6, 1)][:t])
    return Batch({"sentinel2_l2a": s2, "sentinel1": s1}, bands, ts)


def test_differentiable_path_matches_embed(nano):
    b = s2_batch()
    e = nano.embed(b.inputs, timestamps=b.timestamps, patch_size=4, bands=b.bands)
    prep = prepare_eval_batch(b, 4)
    with torch.no_grad():
        pooled = encoder_features(nano.encoder, prep, pooled=True)
        fmap = encoder_features(nano.encoder, prep, pooled=False)
    torch.testing.assert_close(pooled, e.pooled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fmap, e.feature_map, rtol=1e-5, atol=1e-5, equal_nan=True)
    # the absent [B01, B09] bandset is masked, not zero-filled
    assert bool((prep.token_mask["sentinel2_l2a"][..., 2] == 3).all())


def test_embed_split_chunks(nano):
    b = s2_batch(n=5)
    split = array_split(b.inputs, b.bands, b.timestamps, np.arange(5))
    parts = list(embed_split(nano, split, 4, pooled=True, batch_size=2))
    assert [len(p) for p in parts] == [2, 2, 1] and parts[0].shape == (2, 128)


def test_finetune_trains_a_copy_and_predicts(nano):
    b = s2_batch(n=4)
    y = np.array([0, 1] * 2)
    split = array_split(b.inputs, b.bands, b.timestamps, y)
    before = {k: v.clone() for k, v in nano.encoder.state_dict().items()}
    cfg = FinetuneProbeConfig(epochs=2, lrs=[1e-3, 5e-4], batch_size=4, freeze_frac=0.5)
    pred, info = finetune(nano, split, split, split, "classification", 2, 4, cfg)
    assert pred.shape == (4,) and set(np.unique(pred)) <= {0, 1}
    assert info["lr"] in (1e-3, 5e-4) and info["freeze_epochs"] == 1
    for k, v in nano.encoder.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_finetune_segmentation_and_regression(nano):
    b = s2_batch(n=2)
    seg = np.random.default_rng(0).integers(0, 3, size=(2, 8, 8))
    split = array_split(b.inputs, b.bands, b.timestamps, seg)
    cfg = FinetuneProbeConfig(epochs=1, lrs=[1e-3], batch_size=2)
    pred, _ = finetune(nano, split, split, split, "segmentation", 3, 4, cfg)
    assert pred.shape == (2, 8, 8)
    reg = array_split(b.inputs, b.bands, b.timestamps, np.array([1.0, 5.0], np.float32))
    pred, _ = finetune(nano, reg, reg, reg, "regression", 0, 4, cfg)
    assert pred.shape == (2,) and np.isfinite(pred).all()


def test_frozen_phase_leaves_encoder_untouched(nano):
    b = s2_batch(n=4)
    split = array_split(b.inputs, b.bands, b.timestamps, np.array([0, 1, 0, 1]))
    captured = {}

    import geolatent.evals.protocols.finetune as ft

    original = ft._predict

    def spy(net, *a, **k):
        captured["enc"] = {n: p.detach().clone() for n, p in net.encoder.state_dict().items()}
        return original(net, *a, **k)

    ft._predict = spy
    try:
        cfg = FinetuneProbeConfig(epochs=2, lrs=[1e-2], batch_size=2, freeze_frac=1.0)
        finetune(nano, split, split, split, "classification", 2, 4, cfg)
    finally:
        ft._predict = original
    for n, v in nano.encoder.state_dict().items():
        torch.testing.assert_close(captured["enc"][n], v)


def test_cache_hit_does_not_recompute(tmp_path, nano):
    cache = EmbeddingCache(tmp_path / "c")
    key = cache_key(model_fingerprint(nano), "ds", "train", 4, "pooled")
    calls = []

    def chunks():
        calls.append(1)
        yield np.ones((2, 3), np.float32)
        yield np.zeros((1, 3), np.float32)

    a = cache.get_or_compute(key, 3, chunks(), {"why": "test"})
    b = cache.get_or_compute(key, 3, chunks())
    assert isinstance(b, np.memmap) and calls == [1]
    np.testing.assert_array_equal(a, [[1, 1, 1], [1, 1, 1], [0, 0, 0]])
    assert cache.hits == 1 and cache.misses == 1
    assert not list((tmp_path / "c").glob(".*tmp*"))


def test_cache_refuses_short_output(tmp_path):
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(RuntimeError):
        cache.get_or_compute("k", 5, iter([np.ones((2, 3), np.float32)]))
    assert not (tmp_path / "k.npy").exists()


def test_fingerprint_follows_weights(nano):
    import copy

    other = copy.deepcopy(nano)
    other._geolatent_fingerprint = None
    assert model_fingerprint(other) == model_fingerprint(nano)
    with torch.no_grad():
        other.encoder.norm.weight.add_(1.0)
    other._geolatent_fingerprint = None
    assert model_fingerprint(other) != model_fingerprint(nano)
