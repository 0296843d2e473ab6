"""Augmentation, view drawing and the chunked objective."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import geolatent
from geolatent.augment import dihedral
from geolatent.modalities import MODALITIES
from geolatent.pretrain.objective import PretrainObjective, make_views


def test_dihedral_group():
    x = torch.arange(2 * 3 * 3 * 2).reshape(2, 3, 3, 2)
    images = [dihedral(x, k) for k in range(8)]
    assert torch.equal(images[0], x)
    assert len({tuple(t.flatten().tolist()) for t in images}) == 8  # 8 distinct transforms
    for t in images:  # each is a symmetry of the square: some transform maps it back
        assert any(torch.equal(dihedral(t, k), x) for k in range(8))
    with pytest.raises(ValueError):
        dihedral(x, 8)


def test_dihedral_numpy_sample_matches_torch_batch():
    """Fine-tuning transforms one numpy sample [H, W, ...] (axes 0, 1), pretraining a torch batch
    [B, H, W, ...] (axes 1, 2): the same k must give the same image."""
    x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    for k in range(8):
        batch = dihedral(torch.from_numpy(x), k).numpy()
        sample = dihedral(x[1], k, axes=(0, 1))
        assert sample.flags.c_contiguous
        np.testing.assert_array_equal(sample, batch[1])


def _batch(b=6, h=8, t=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mods = ["sentinel2_l2a", "sentinel1", "worldcover"]
    inputs = {
        m: torch.rand(b, h, h, t if MODALITIES[m].multitemporal else 1, MODALITIES[m].num_bands,
                      generator=g)
        for m in mods
    }  # fmt: skip
    inputs["sentinel1"][0, :, :, 1] = -99999.0
    ts = torch.stack(
        [torch.full((b, t), 15), torch.arange(t).expand(b, t), torch.full((b, t), 2022)], -1
    )
    return inputs, ts


def test_views_are_reproducible_and_different():
    inputs, _ = _batch()
    a1, b1 = make_views(
        inputs, 2, torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    )
    a2, _ = make_views(
        inputs, 2, torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    )
    assert all(torch.equal(a1.token_mask[m], a2.token_mask[m]) for m in inputs)
    assert any(not torch.equal(a1.token_mask[m], b1.token_mask[m]) for m in inputs)
    assert (a1.token_mask["sentinel1"][0, :, :, 1] == 3).all()  # the missing timestep


def test_chunked_objective_equals_one_call_with_gradients():
    """Chunks sorted by token count give the same loss and gradients as one model call."""
    torch.manual_seed(0)
    model = geolatent.build_model("nano", drop_path=0.0).train()
    inputs, ts = _batch()
    va, vb = make_views(
        inputs, 2, torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)
    )
    results = []
    for chunk in (None, 3):
        model.zero_grad()
        out = PretrainObjective(model, chunk_size=chunk)(
            inputs, ts, 2, va.token_mask, vb.token_mask
        )
        out["loss"].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out, grads))
    (o1, g1), (o2, g2) = results
    for k in o1:
        assert o2[k].item() == pytest.approx(o1[k].item(), abs=1e-5)
    assert g1.keys() == g2.keys()
    for n in g1:
        torch.testing.assert_close(g2[n], g1[n], atol=1e-5, rtol=1e-4, msg=n)
