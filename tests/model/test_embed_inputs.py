"""The embed API: band naming, subsets, missing data, non-square inputs, and clear errors."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch

import geolatent
from geolatent.model.embed import InputError
from geolatent.model.tokens import MaskValue

S2_BANDS = geolatent.MODALITIES["sentinel2_l2a"].bands


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return geolatent.build_model("nano").eval()


def s2(b=1, h=8, w=8, t=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(200, 4000, size=(b, h, w, t, 12)).astype(np.float32)


def s1(b=1, h=8, w=8, t=2, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(-25, -5, size=(b, h, w, t, 2)).astype(np.float32)


TS = [dt.date(2024, 3, 15), dt.date(2024, 7, 2)]


def test_outputs_have_documented_shapes(model):
    out = model.embed({"sentinel2_l2a": s2(2, 8, 12), "sentinel1": s1(2, 8, 12)}, TS, patch_size=4)
    assert out.tokens["sentinel2_l2a"].shape == (2, 2, 3, 2, 3, 128)
    assert out.tokens["sentinel1"].shape == (2, 2, 3, 2, 1, 128)
    assert out.feature_map.shape == (2, 2, 3, 128)
    assert out.pooled.shape == (2, 128)
    assert torch.isfinite(out.feature_map).all()


def test_timestamps_forms_agree(model):
    x = {"sentinel2_l2a": s2()}
    a = model.embed(x, TS).pooled
    b = model.embed(x, np.array([[15, 2, 2024], [2, 6, 2024]])).pooled
    c = model.embed(x, ["2024-03-15", "2024-07-02"]).pooled
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(a, c, atol=0, rtol=0)
    d = model.embed(x, [dt.date(2024, 4, 15), dt.date(2024, 7, 2)]).pooled
    assert not torch.allclose(a, d)  # the month matters


def test_bands_by_name_and_reordered_equal_registry_order(model):
    x = s2()
    ref = model.embed({"sentinel2_l2a": x}, TS).pooled
    by_name = {b: x[..., i] for i, b in enumerate(S2_BANDS)}
    torch.testing.assert_close(model.embed({"sentinel2_l2a": by_name}, TS).pooled, ref)
    perm = np.random.default_rng(3).permutation(12)
    shuffled = x[..., perm]
    names = [S2_BANDS[i] for i in perm]
    got = model.embed({"sentinel2_l2a": shuffled}, TS, bands={"sentinel2_l2a": names}).pooled
    torch.testing.assert_close(got, ref)
    # Aliases: B2 == B02, case-insensitive.
    aliased = {b.replace("B0", "b"): v for b, v in by_name.items()}
    torch.testing.assert_close(model.embed({"sentinel2_l2a": aliased}, TS).pooled, ref)


def test_band_subset_masks_absent_bandsets(model):
    x = s2()
    rgbn = x[..., :4]
    out = model.embed(
        {"sentinel2_l2a": rgbn}, TS, bands={"sentinel2_l2a": ["B02", "B03", "B04", "B08"]}
    )
    mask = out.token_mask["sentinel2_l2a"]
    assert bool((mask[..., 0] == MaskValue.ONLINE_ENCODER).all())
    assert bool((mask[..., 1:] == MaskValue.MISSING).all())
    assert bool((out.tokens["sentinel2_l2a"][..., 1:, :] == 0).all())
    # Equal to giving the full array with the other bandsets missing (-99999), never zero-filled.
    full = x.copy()
    full[..., 4:] = -99999
    torch.testing.assert_close(out.pooled, model.embed({"sentinel2_l2a": full}, TS).pooled)
    zero = x.copy()
    zero[..., 4:] = 0
    assert not torch.allclose(
        out.pooled, model.embed({"sentinel2_l2a": zero}, TS, check_units=False).pooled
    )


def test_excluded_tokens_do_not_change_valid_results(model):
    """Adding a fully missing modality / timestep changes nothing (no attention to missing)."""
    x = s2(t=1)
    ref = model.embed({"sentinel2_l2a": x}, TS[:1])
    gap = np.full((1, 8, 8, 1, 2), -99999, dtype=np.float32)
    out = model.embed({"sentinel2_l2a": x, "sentinel1": gap}, TS[:1])
    torch.testing.assert_close(out.pooled, ref.pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.feature_map, ref.feature_map, atol=1e-5, rtol=1e-5)
    assert bool((out.token_mask["sentinel1"] == MaskValue.MISSING).all())


def test_all_missing_sample_gives_nan_not_garbage(model):
    x = s2(b=2)
    x[1] = -99999
    out = model.embed({"sentinel2_l2a": x}, TS)
    assert torch.isfinite(out.pooled[0]).all()
    assert torch.isnan(out.pooled[1]).all()
    assert torch.isnan(out.feature_map[1]).all()


def test_partial_missing_fill_keeps_neighbours_sane(model):
    """A patch-aligned hole at p=4 (resize path): neighbouring valid tokens stay close to the
    complete-input tokens, unlike v1 where the -99999 fill would be smeared into them."""
    x = s2(h=16, w=16, t=1)
    complete = model.encoder.patch_embeddings(
        "sentinel2_l2a", geolatent.normalize("sentinel2_l2a", torch.from_numpy(x)), 4
    )
    holed = x.copy()
    holed[:, 4:8, 4:8] = -99999  # token (1, 1)
    xn = geolatent.normalize("sentinel2_l2a", torch.from_numpy(holed))
    filled = model.encoder.patch_embeddings("sentinel2_l2a", xn, 4)
    smeared = model.encoder.patch_embeddings("sentinel2_l2a", xn, 4, fill_missing=False)
    neighbour = (slice(None), 0, 1)  # token (0, 1) touches the hole through the bicubic taps
    err_fill = (filled[neighbour] - complete[neighbour]).abs().max()
    err_smear = (smeared[neighbour] - complete[neighbour]).abs().max()
    far = (slice(None), 3, 3)
    torch.testing.assert_close(filled[far], complete[far])
    assert err_smear > 1000 * err_fill
    assert err_fill < 1.0


def test_non_square_grid_encoding_is_a_crop_of_the_square_one(model):
    enc = model.encoder.composite_encodings
    ts = torch.tensor([[[1, 4, 2024]]])
    square = enc.encoding("sentinel2_l2a", (6, 6), ts, 2)
    wide = enc.encoding("sentinel2_l2a", (3, 6), ts, 2)
    tall = enc.encoding("sentinel2_l2a", (6, 2), ts, 2)
    torch.testing.assert_close(wide, square[:, :3])
    torch.testing.assert_close(tall, square[:, :, :2])


def test_batch_size_chunking_is_equivalent(model):
    x = {"sentinel2_l2a": s2(b=3), "sentinel1": s1(b=3)}
    a = model.embed(x, TS)
    b = model.embed(x, TS, batch_size=1)
    torch.testing.assert_close(a.feature_map, b.feature_map, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "inputs, kwargs, message",
    [
        ({"sentinel2_l2a": s2()[..., :10]}, {}, "expected 12 bands"),
        ({"sentinel3": s2()}, {}, "unknown modality"),
        ({"worldcover": np.ones((1, 8, 8, 1, 1), np.float32) * 10}, {}, "decode-only"),
        (
            {"sentinel2_l2a": s2(t=13)},
            {"timestamps": [[1, i % 12, 2024] for i in range(13)]},
            "T must be",
        ),
        ({"sentinel2_l2a": s2()}, {"patch_size": 0}, "patch_size"),
        ({"sentinel2_l2a": s2()}, {"patch_size": 9}, "patch_size"),
        ({"sentinel2_l2a": s2()}, {"patch_size": 2.5}, "patch_size"),
        ({"sentinel2_l2a": s2(h=10)}, {"patch_size": 4}, "divisible"),
        ({"sentinel2_l2a": s2() / 10000}, {}, "reflectance"),
        ({"sentinel1": 10 ** (s1() / 10)}, {}, "linear backscatter"),
        ({"sentinel2_l2a": s2()}, {"normalize": False}, "raw units"),
        (
            {"sentinel2_l2a": s2()[..., :4]},
            {"bands": {"sentinel2_l2a": ["B02", "B03", "B04", "B99"]}},
            "not a band",
        ),
        ({"sentinel2_l2a": s2()}, {"timestamps": None}, "timestamps are required"),
        (
            {"sentinel2_l2a": s2()},
            {"timestamps": [[1, 12, 2024], [1, 3, 2024]]},
            "months must be 0-11",
        ),
        ({"sentinel2_l2a": s2(), "sentinel1": s1(h=16)}, {}, "share"),
        ({"sentinel2_l2a": s2()[0]}, {}, "expected a \\[B, H, W, T, C\\]"),
        ({}, {}, "non-empty"),
    ],
)
def test_bad_inputs_get_clear_errors(model, inputs, kwargs, message):
    kwargs = {"timestamps": TS, **kwargs}
    with pytest.raises(InputError, match=message):
        model.embed(inputs, **kwargs)


def test_units_check_can_be_overridden(model):
    out = model.embed({"sentinel2_l2a": s2() / 10000}, TS, check_units=False)
    assert torch.isfinite(out.pooled).all()


def test_half_present_bandset_is_encoded_and_absent_bandset_masked(model):
    """Sentinel-1 VV without VH: the bandset has data, so its tokens are encoded (VH filled by
    the version's rule, see test_missing_rule.py); a wholly absent bandset is masked."""
    x = s1()
    x[..., 1] = -99999
    out = model.embed({"sentinel2_l2a": s2(), "sentinel1": x}, TS)
    assert bool((out.token_mask["sentinel1"] == MaskValue.ONLINE_ENCODER).all())
    gone = np.full_like(x, -99999)
    masked = model.embed({"sentinel2_l2a": s2(), "sentinel1": gone}, TS)
    assert bool((masked.token_mask["sentinel1"] == MaskValue.MISSING).all())
    only_s2 = model.embed({"sentinel2_l2a": s2()}, TS)
    torch.testing.assert_close(masked.pooled, only_s2.pooled, atol=1e-5, rtol=1e-5)
    # A gap in part of one band's patch is filled, and the token stays valid.
    y = s1(h=8, w=8)
    y[:, :2, :2, :, 1] = -99999
    out = model.embed({"sentinel1": y}, TS, patch_size=4)
    assert bool((out.token_mask["sentinel1"] == MaskValue.ONLINE_ENCODER).all())
