"""Task heads (shapes, masking, freezing) and the fine-tuned model folder (round trip, errors)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from platform_fixtures import S2, make_bundle, single_torch_thread  # noqa: F401

from geolatent.modalities import MISSING_VALUE
from geolatent.platform.bundle import BUNDLE_FILE, WEIGHTS_FILE, BundleError, load_bundle
from geolatent.platform.encoder_inputs import pixel_summary, prepare_batch


def _batch(b: int = 2, size: int = 16, t: int = 2, p: int = 8, missing_corner: bool = False):
    rng = np.random.default_rng(0)
    x = rng.uniform(200, 4000, (b, size, size, t, 12)).astype(np.float32)
    if missing_corner:
        x[0, :p, :p] = MISSING_VALUE  # one whole patch without data
    ts = np.array([[15, m, 2024] for m in range(t)])
    return prepare_batch({S2: x}, ts, p)


@pytest.mark.parametrize("task,shape", [
    ("classification", (2, 3)), ("regression", (2, 1)),
    ("segmentation", (2, 3, 16, 16)), ("pixel_regression", (2, 1, 16, 16)),
])
def test_head_output_shapes(tmp_path: Path, task: str, shape: tuple):
    fm = make_bundle(tmp_path / "m", task, [])
    with torch.no_grad():
        out = fm.model(_batch(missing_corner=True))
    assert tuple(out.shape) == shape
    assert torch.isfinite(out).all()


def test_missing_tokens_are_masked_and_pixel_summary():
    batch = _batch(missing_corner=True)
    assert batch.token_mask is not None
    assert batch.token_mask[S2][0, 0, 0].eq(3).all() and batch.token_mask[S2][1].eq(0).all()
    assert _batch().token_mask is None  # complete inputs: the encoder's fast path
    pix = pixel_summary(batch, [S2, "sentinel1"])
    assert pix.shape == (2, 12 + 1 + 2 + 1, 16, 16)
    assert pix[0, 12, :8, :8].eq(0).all() and pix[0, 12, 8:, 8:].eq(1).all()
    assert pix[:, 13:].eq(0).all()  # absent modality -> zeros, same layout


def test_frozen_encoder_gets_no_gradient(tmp_path: Path):
    fm = make_bundle(tmp_path / "m", "segmentation", [])
    model = fm.model.train()
    model.set_encoder_trainable(False)
    assert not model.encoder.training
    out = model(_batch())
    out.sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert any(p.grad is not None for p in model.head.parameters())
    model.set_encoder_trainable(True)
    model.zero_grad()
    model(_batch()).sum().backward()
    assert any(p.grad is not None for p in model.encoder.parameters())


def test_bundle_round_trip_is_exact(tmp_path: Path):
    fm = make_bundle(tmp_path / "m", "segmentation", [{"name": "x"}], num_classes=4)
    loaded = load_bundle(tmp_path / "m")
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(fm.model(batch), loaded.model(batch), rtol=0, atol=0)
    assert loaded.classes == fm.classes and loaded.inputs == fm.inputs
    assert loaded.sources == [{"name": "x"}]
    meta = json.loads((tmp_path / "m" / BUNDLE_FILE).read_text())
    assert set(meta["normalization"][S2]) == {"lo", "hi"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_bundle_errors(tmp_path: Path):
    make_bundle(tmp_path / "m", "classification", [])
    meta_path = tmp_path / "m" / BUNDLE_FILE
    meta = json.loads(meta_path.read_text())
    bad = dict(meta, head=dict(meta["head"], out=7))
    meta_path.write_text(json.dumps(bad))
    with pytest.raises(BundleError, match="head weights do not match"):
        load_bundle(tmp_path / "m")
    meta["normalization"][S2]["lo"][0] += 1.0
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="normalization"):
        load_bundle(tmp_path / "m")
    meta["normalization"][S2]["lo"][0] -= 1.0
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="newer"):
        load_bundle(tmp_path / "m")
    (tmp_path / "m" / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError):
        load_bundle(tmp_path / "nowhere")
