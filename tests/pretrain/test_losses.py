"""Losses against the reference fixture (stored tensors and a full forward), and against a
per-sample loop written here as the plain definition."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from geolatent.model.tokens import MaskValue
from geolatent.pretrain.losses import infonce_loss, patch_discrimination_loss, total_loss
from geolatent.pretrain.objective import PretrainObjective

TOL = 1e-5


@pytest.fixture(scope="module")
def pretrain_case(fixture_dir):
    cases = load_file(str(fixture_dir / "cases.safetensors"))
    meta = json.loads((fixture_dir / "cases.json").read_text())["pretrain_case"]
    return cases, meta


def _get(cases, view: str, what: str, mods) -> dict[str, torch.Tensor]:
    return {m: cases[f"pretrain/view_{view}/{what}/{m}"] for m in mods}


def test_losses_on_stored_fixture_tensors(pretrain_case):
    cases, meta = pretrain_case
    mods = meta["modalities"]
    target = {m: cases[f"pretrain/target/{m}"] for m in mods}
    la = patch_discrimination_loss(_get(cases, "a", "decoded", mods), target,
                                   _get(cases, "a", "token_mask", mods))  # fmt: skip
    lb = patch_discrimination_loss(_get(cases, "b", "decoded", mods), target,
                                   _get(cases, "b", "token_mask", mods))  # fmt: skip
    nce = infonce_loss(cases["pretrain/view_a/project_aggregated"],
                       cases["pretrain/view_b/project_aggregated"])  # fmt: skip
    ref = {k: cases[f"pretrain/losses/{k}"].item() for k in
           ("patch_disc_a", "patch_disc_b", "infonce", "total_v1")}  # fmt: skip
    assert la.item() == pytest.approx(ref["patch_disc_a"], abs=TOL)
    assert lb.item() == pytest.approx(ref["patch_disc_b"], abs=TOL)
    assert nce.item() == pytest.approx(ref["infonce"], abs=TOL)
    assert total_loss(la, lb, nce).item() == pytest.approx(ref["total_v1"], abs=TOL)


@pytest.mark.parametrize("chunk_size", [None, 1])
def test_objective_reproduces_fixture_losses(pretrain_case, nano_fixture_model, chunk_size):
    """Full forward of both views through the objective (views batched together, or chunked)."""
    cases, meta = pretrain_case
    mods = meta["modalities"]
    inputs = {m: cases[f"pretrain/input/{m}"] for m in mods}
    objective = PretrainObjective(nano_fixture_model, chunk_size=chunk_size).eval()
    with torch.no_grad():
        masks = [_get(cases, v, "token_mask", mods) for v in "ab"]
        out = objective(inputs, cases["pretrain/input/timestamps"], meta["patch_size"], *masks)
    ref = meta["loss_values"]
    assert out["patch_disc_a"].item() == pytest.approx(ref["patch_disc_a"], abs=TOL)
    assert out["patch_disc_b"].item() == pytest.approx(ref["patch_disc_b"], abs=TOL)
    assert out["infonce"].item() == pytest.approx(ref["infonce"], abs=TOL)
    assert out["loss"].item() == pytest.approx(ref["total_v1"], abs=TOL)


def _patch_disc_loop(pred, target, mask, tau=0.1):
    """The definition, one modality and one sample at a time."""
    total = 0.0
    for m in pred:
        per_sample = []
        for b in range(pred[m].shape[0]):
            sel = mask[m][b] == MaskValue.DECODER
            if not sel.any():
                continue
            p = F.normalize(pred[m][b][sel], dim=-1)
            z = F.normalize(target[m][b][sel], dim=-1)
            logits = p @ z.T / tau
            per_sample.append(F.cross_entropy(logits, torch.arange(len(p))) * 2 * tau)
        if per_sample:
            total = total + torch.stack(per_sample).mean()
    return total


def test_patch_discrimination_matches_per_sample_definition():
    """Values and gradients equal the per-sample loop, including samples with no decoded token."""
    g = torch.Generator().manual_seed(0)
    shapes = {
        "sentinel2_l2a": (5, 3, 3, 2, 3),
        "sentinel1": (5, 3, 3, 2, 1),
        "srtm": (5, 3, 3, 1, 1),
    }
    pred = {m: torch.randn(*s, 16, generator=g, requires_grad=True) for m, s in shapes.items()}
    target = {m: torch.randn(*s, 16, generator=g) for m, s in shapes.items()}
    mask = {m: torch.randint(0, 4, s, generator=g) for m, s in shapes.items()}
    mask["srtm"][2:] = MaskValue.TARGET_ENCODER_ONLY  # samples without decoded tokens are left out
    got = patch_discrimination_loss(pred, target, mask)
    grads = torch.autograd.grad(got, list(pred.values()))
    want = _patch_disc_loop(pred, target, mask)
    want_grads = torch.autograd.grad(want, list(pred.values()))
    assert got.item() == pytest.approx(want.item(), abs=1e-5)
    for a, b in zip(grads, want_grads, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
