"""Parity with the reference implementation on every fixture case (atol = rtol = 1e-5, fp32)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import geolatent
from geolatent.model.tokens import MaskValue
from geolatent.pretrain.losses import infonce_loss, patch_discrimination_loss, total_loss

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def cases(fixture_dir):
    return json.loads((fixture_dir / "cases.json").read_text()), load_file(
        str(fixture_dir / "cases.safetensors")
    )


@pytest.fixture(scope="module")
def extra_cases(fixture_dir):
    return json.loads((fixture_dir / "extra_cases.json").read_text()), load_file(
        str(fixture_dir / "extra_cases.safetensors")
    )


def test_parameter_counts(nano_fixture_model, cases):
    meta, _ = cases
    counts = meta["parameter_counts"]
    enc = sum(p.numel() for p in nano_fixture_model.encoder.parameters())
    dec = sum(p.numel() for p in nano_fixture_model.decoder.parameters())
    assert enc == counts["encoder"]["total_parameters"] == 1_361_408
    assert dec == counts["decoder"]["total_parameters"] == 827_904
    trainable = sum(p.numel() for p in nano_fixture_model.encoder.parameters() if p.requires_grad)
    assert trainable == counts["encoder"]["trainable_parameters"]
    target = sum(p.numel() for p in nano_fixture_model.target_projection.parameters())
    assert target == counts["encoder"]["patch_embeddings_parameters"]


def test_normalization(cases):
    meta, t = cases
    for entry in meta["normalization"]["modalities"]:
        m = entry["modality"]
        got = geolatent.normalize(m, t[f"norm/{m}/raw"])
        torch.testing.assert_close(got, t[f"norm/{m}/normalized"], atol=0, rtol=1e-6)
    raw = t["norm/sentinel1_with_missing/raw"]
    got = geolatent.normalize("sentinel1", raw)
    torch.testing.assert_close(got, t["norm/sentinel1_with_missing/normalized"], atol=0, rtol=1e-6)
    assert bool((got[raw == -99999] == -99999).all())


@pytest.mark.parametrize("case_index", range(4))
def test_encoder_inference(nano_fixture_model, cases, case_index):
    meta, t = cases
    case = meta["encoder_cases"][case_index]
    n, p = case["case"], case["patch_size"]
    inputs = {m: t[f"{n}/input/{m}"] for m in case["modalities"]}
    ts = t[f"{n}/input/timestamps"]
    enc = nano_fixture_model.encoder
    with torch.no_grad():
        for m, x in inputs.items():
            torch.testing.assert_close(
                enc.patch_embeddings(m, x, p), t[f"{n}/patch_embed/{m}"], **TOL
            )
        tokenized = enc.tokenize(inputs, ts, p)
        out = enc(inputs, ts, p)
    for m in inputs:
        torch.testing.assert_close(tokenized[m], t[f"{n}/encoded_input/{m}"], **TOL)
        torch.testing.assert_close(out.tokens[m], t[f"{n}/tokens/{m}"], **TOL)
    torch.testing.assert_close(out.feature_map, t[f"{n}/pooled_spatial_mean"], **TOL)
    torch.testing.assert_close(out.pooled, t[f"{n}/pooled_instance_mean"], **TOL)


def test_embed_api_equals_reference_fast_pass(nano_fixture_model, cases):
    """`embed` with normalize=False on the fixture's normalized inputs is the reference pass."""
    meta, t = cases
    case = meta["encoder_cases"][1]
    n, p = case["case"], case["patch_size"]
    inputs = {m: t[f"{n}/input/{m}"] for m in case["modalities"]}
    out = nano_fixture_model.embed(
        inputs, timestamps=t[f"{n}/input/timestamps"], patch_size=p, normalize=False
    )
    for m in inputs:
        torch.testing.assert_close(out.tokens[m], t[f"{n}/tokens/{m}"], **TOL)
        assert out.tokens[m].shape == (2, 4, 4, 3, geolatent.MODALITIES[m].num_bandsets, 128)
    torch.testing.assert_close(out.feature_map, t[f"{n}/pooled_spatial_mean"], **TOL)
    torch.testing.assert_close(out.pooled, t[f"{n}/pooled_instance_mean"], **TOL)


def test_pretrain_forward_targets_and_losses(nano_fixture_model, cases):
    meta, t = cases
    case = meta["pretrain_case"]
    p, mods = case["patch_size"], case["modalities"]
    inputs = {m: t[f"pretrain/input/{m}"] for m in mods}
    ts = t["pretrain/input/timestamps"]
    model = nano_fixture_model
    with torch.no_grad():
        targets = model.targets(inputs, p)
        views = {}
        for v in "ab":
            mask = {m: t[f"pretrain/view_{v}/token_mask/{m}"] for m in mods}
            pixel = {m: t[f"pretrain/view_{v}/pixel_mask/{m}"] for m in mods}
            for m in mods:  # token mask = pixel mask subsampled with stride p
                assert torch.equal(pixel[m][:, ::p, ::p], mask[m])
            enc, dec = model(inputs, ts, p, mask)
            views[v] = (enc, dec, mask)
            for m in mods:
                torch.testing.assert_close(
                    enc.tokens[m], t[f"pretrain/view_{v}/encoder_tokens/{m}"], **TOL
                )
                torch.testing.assert_close(dec[m], t[f"pretrain/view_{v}/decoded/{m}"], **TOL)
                # Tokens that are not encoded are exactly zero.
                assert bool((enc.tokens[m][mask[m] != MaskValue.ONLINE_ENCODER] == 0).all())
            torch.testing.assert_close(
                enc.pooled, t[f"pretrain/view_{v}/encoder_pooled_mean"], **TOL
            )
            torch.testing.assert_close(
                enc.project_aggregated, t[f"pretrain/view_{v}/project_aggregated"], **TOL
            )
        for m in mods:
            # Targets at MISSING positions come from the fill value: meaningless, never used.
            valid = views["a"][2][m] != MaskValue.MISSING
            torch.testing.assert_close(targets[m][valid], t[f"pretrain/target/{m}"][valid], **TOL)
        la = patch_discrimination_loss(views["a"][1], targets, views["a"][2])
        lb = patch_discrimination_loss(views["b"][1], targets, views["b"][2])
        nce = infonce_loss(views["a"][0].project_aggregated, views["b"][0].project_aggregated)
    expected = case["loss_values"]
    assert la.item() == pytest.approx(expected["patch_disc_a"], abs=1e-5)
    assert lb.item() == pytest.approx(expected["patch_disc_b"], abs=1e-5)
    assert nce.item() == pytest.approx(expected["infonce"], abs=1e-5)
    assert total_loss(la, lb, nce).item() == pytest.approx(expected["total_v1"], abs=1e-5)


@pytest.mark.parametrize("case_index", range(2))
def test_missing_data_through_embed(nano_fixture_model, extra_cases, case_index):
    """Raw inputs with -99999 gaps: masked tokens, masked feature map and pooled vector."""
    meta, t = extra_cases
    case = meta["cases"][case_index]
    n, p, mods = case["case"], case["patch_size"], case["modalities"]
    raw = {m: t[f"{n}/raw/{m}"] for m in mods}
    out = nano_fixture_model.embed(raw, timestamps=t[f"{n}/input/timestamps"], patch_size=p)
    for m in mods:
        expected_mask = t[f"{n}/token_mask/{m}"]
        assert torch.equal(out.token_mask[m], expected_mask)
        valid = expected_mask == 0
        torch.testing.assert_close(out.tokens[m][valid], t[f"{n}/tokens/{m}"][valid], **TOL)
        torch.testing.assert_close(
            geolatent.normalize(m, raw[m]), t[f"{n}/input/{m}"], atol=0, rtol=1e-6
        )
    torch.testing.assert_close(out.feature_map, t[f"{n}/feature_map_masked_mean"], **TOL)
    torch.testing.assert_close(out.pooled, t[f"{n}/pooled_masked_mean"], **TOL)
    torch.testing.assert_close(out.project_aggregated, t[f"{n}/project_aggregated"], **TOL)


def test_missing_results_do_not_depend_on_fill(nano_fixture_model, extra_cases):
    meta, t = extra_cases
    n = "missing_planes"
    raw = {m: t[f"{n}/raw/{m}"] for m in ("sentinel2_l2a", "sentinel1")}
    ts = t[f"{n}/input/timestamps"]
    a = nano_fixture_model.embed(raw, timestamps=ts, patch_size=4)
    nan_raw = {m: torch.where(x == -99999, torch.nan, x) for m, x in raw.items()}
    b = nano_fixture_model.embed(nan_raw, timestamps=ts, patch_size=4)
    torch.testing.assert_close(a.feature_map, b.feature_map, atol=0, rtol=0)
    torch.testing.assert_close(a.pooled, b.pooled, atol=0, rtol=0)
