"""The one missing-data rule through every path: embed, prepare_inputs (fine-tuning, predict,
evals), pretraining masking and the pretraining dataset; non-finite values; timestamps."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch

import geolatent
from geolatent.data.h5samples import write_sample
from geolatent.model.embed import InputError, prepare_inputs
from geolatent.model.latent_mim import build_model
from geolatent.model.tokens import MaskValue
from geolatent.pretrain.dataset import PretrainDataset
from geolatent.pretrain.masking import missing_tokens
from geolatent.pretrain.objective import make_views
from geolatent.pretrain.sampler import SampleRequest
from geolatent.pretrain.samples import build_manifest

P, SIZE, T = 4, 8, 2
DATES = [[15, 2, 2024], [2, 6, 2024]]


def _scene(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    s2 = rng.uniform(200, 4000, (SIZE, SIZE, T, 12)).astype(np.float32)
    s1 = rng.uniform(-25, -5, (SIZE, SIZE, T, 2)).astype(np.float32)
    s1[..., 1] = -99999  # VV without VH everywhere: a half-present bandset
    s1[:P, :P, 1, :] = -99999  # and one token with no Sentinel-1 data at all
    return {"sentinel2_l2a": s2, "sentinel1": s1}


@pytest.fixture(scope="module", params=["v1", "v1.2"])
def model(request):
    torch.manual_seed(0)
    return build_model("nano", request.param).eval()


def _dataset_crop(tmp_path, scene, model):
    root = tmp_path / "samples"
    write_sample(
        root / "s0.h5", scene, np.array(DATES), (45.0, 7.0),
        {m: np.zeros(T, dtype=bool) for m in scene},
    )  # fmt: skip
    manifest, _ = build_manifest(root)
    ds = PretrainDataset(manifest, list(scene), model_config=model.config)
    req = SampleRequest(index=0, patch_size=P, crop_px=SIZE, timesteps=T, seed=0, step=0,
                        micro_index=0)  # fmt: skip
    return ds[req].arrays


def test_half_present_sentinel1_same_mask_and_values_on_every_path(tmp_path, model):
    scene = _scene()
    batch = {m: x[None] for m, x in scene.items()}
    prepared = prepare_inputs(batch, DATES, P, config=model.config)
    out = model.embed(batch, DATES, patch_size=P)
    crop = _dataset_crop(tmp_path, scene, model)
    inputs = {m: torch.from_numpy(x)[None] for m, x in crop.items()}
    mods = {m.name: m for m in geolatent.model.config.model_modalities(model.config)}
    views = make_views(inputs, P, torch.Generator().manual_seed(0), modalities=mods)

    s1 = prepared.inputs["sentinel1"]
    # Same filled values on the embed path and the pretraining dataset.
    torch.testing.assert_close(inputs["sentinel1"], s1, atol=0, rtol=0)
    torch.testing.assert_close(inputs["sentinel2_l2a"], prepared.inputs["sentinel2_l2a"])
    present = s1[..., 0] != -99999
    if model.config.version == "v1":  # VH := VV (nearest wavelength), normalized
        torch.testing.assert_close(s1[..., 1][present], s1[..., 0][present], atol=0, rtol=0)
    else:  # v1.1+: 0 after normalization
        assert bool((s1[..., 1][present] == 0).all())
    # Same token mask: only the patch with no Sentinel-1 value at all is missing.
    expected = torch.zeros(1, 2, 2, T, 1, dtype=torch.long)
    expected[0, 0, 0, 1, 0] = MaskValue.MISSING
    assert torch.equal(prepared.token_mask["sentinel1"], expected)
    assert torch.equal(out.token_mask["sentinel1"], expected)
    pre_missing = missing_tokens("sentinel1", inputs["sentinel1"], P, mods["sentinel1"])
    assert torch.equal(pre_missing, expected == MaskValue.MISSING)
    for view in views:
        roles = view.token_mask["sentinel1"]
        assert torch.equal(roles == MaskValue.MISSING, expected == MaskValue.MISSING)


def test_infinite_values_are_missing_and_never_poison_neighbours(model):
    scene = _scene()
    batch = {m: x[None].copy() for m, x in scene.items()}
    ref = model.embed({"sentinel2_l2a": batch["sentinel2_l2a"]}, DATES, patch_size=P)
    x = batch["sentinel2_l2a"].copy()
    x[0, 5, 6, 0, 3] = np.inf
    x[0, 1, 1, 1, :] = -np.inf  # a whole pixel: filled from its plane before resizing
    with pytest.warns(UserWarning, match="infinite input values"):
        out = model.embed({"sentinel2_l2a": x}, DATES, patch_size=P)
    assert out.nonfinite == {"sentinel2_l2a": 13}
    assert torch.isfinite(out.feature_map).all() and torch.isfinite(out.pooled).all()
    assert bool((out.token_mask["sentinel2_l2a"] == MaskValue.ONLINE_ENCODER).all())
    # Only the tokens of the two touched patches change.
    diff = (out.tokens["sentinel2_l2a"] - ref.tokens["sentinel2_l2a"]).abs().amax(dim=(3, 4, 5))
    assert torch.isfinite(diff).all()
    nan_x = x.copy()
    nan_x[~np.isfinite(nan_x)] = np.nan
    same = model.embed({"sentinel2_l2a": nan_x}, DATES, patch_size=P)
    torch.testing.assert_close(same.pooled, out.pooled, atol=0, rtol=0)


@pytest.mark.parametrize(
    "timestamps, message",
    [
        (["2015-13-45", "2016-01-01"], "'2015-13-45' is not a valid date"),
        (["2024-07-02", "2024-03-15"], "unsorted dates.*2024-03-15.*2024-07-02"),
        (["2024-03-15", "2024-03-15"], "duplicate dates"),
        ([[15, 2, -3], [16, 2, -3]], "years must be >= 1"),
        (np.array([[15.0, 2.0, 2024.0], [2.0, 6.0, 2024.0]]), "must be integers.*float"),
        (np.array([[15, 2, 2024], [2, 6, 2024]]) * (1 + 0j), "must be integers.*complex"),
        (torch.tensor([[15.0, 2.0, 2024.0], [2.0, 6.0, 2024.0]]), "must be integers"),
        ([[30, 1, 2023], [2, 6, 2024]], r"\(day 30, month 1, year 2023\) is not a real date"),
        ("2024-03-15", "not a single string"),
    ],
)
def test_timestamps_are_validated(model, timestamps, message):
    x = {"sentinel2_l2a": _scene()["sentinel2_l2a"][None]}
    with pytest.raises(InputError, match=message):
        model.embed(x, timestamps, patch_size=P)


def test_date_forms_agree(model):
    x = {"sentinel2_l2a": _scene()["sentinel2_l2a"][None]}
    a = model.embed(x, [dt.date(2024, 3, 15), dt.date(2024, 7, 2)], patch_size=P).pooled
    b = model.embed(x, np.array(["2024-03-15", "2024-07-02"], dtype="datetime64[D]"),
                    patch_size=P).pooled  # fmt: skip
    c = model.embed(x, DATES, patch_size=P).pooled
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(a, c, atol=0, rtol=0)
