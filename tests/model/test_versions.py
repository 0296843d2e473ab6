"""OlmoEarth v1.1, v1.2 and v1.3: parity through the public API on every fixture case, strict
loading, sizes from one table, and the version-specific embed API."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from shared_data import SHARED

import geolatent
from geolatent.model.checkpoint import CheckpointError, export_release_folder
from geolatent.model.config import ModelConfig, PoolerConfig
from geolatent.model.embed import InputError, prepare_inputs
from geolatent.model.latent_mim import LatentMIM, build_model
from geolatent.model.tokens import MaskValue

TOL = dict(atol=1e-5, rtol=1e-5)
FIXTURES = {
    "olmoearth_v1_1_nano": "v1.1",
    "olmoearth_v1_2_nano": "v1.2",
    "olmoearth_v1_3_mini": "v1.3",
}


def _folder(name: str):
    path = SHARED / "fixtures" / name
    if not (path / "weights.pth").exists():
        pytest.skip(f"reference fixtures not found at {path} (set GEOLATENT_SHARED)")
    return path


@pytest.fixture(scope="module", params=list(FIXTURES))
def release(request):
    path = _folder(request.param)
    meta = json.loads((path / "cases.json").read_text())
    return request.param, path, geolatent.load_model(path), meta, load_file(
        str(path / "cases.safetensors")
    )


def _expected_output(out, key: str) -> torch.Tensor:
    if key.startswith("tokens/"):
        return out.tokens[key.split("/", 1)[1]]
    if key.startswith("student_prefix/"):
        return out.location_embedding[..., : int(key.split("/")[1])]
    if key == "student":
        return out.location_embedding
    return getattr(out, key)


def test_version_detected_and_parameter_counts(release):
    name, _, model, meta, _ = release
    assert model.config.version == FIXTURES[name] == meta["version"]
    counts = meta["parameter_counts"]["reference_model_parameters"]
    assert sum(p.numel() for p in model.encoder.parameters()) == counts["encoder"]
    assert sum(p.numel() for p in model.decoder.parameters()) == counts["decoder"]
    assert model.provenance["sha256"] and model.provenance["version"] == FIXTURES[name]


@pytest.mark.slow
def test_every_encoder_case_through_embed(release):
    """``load_model(folder)`` then ``model.embed(...)`` as each case's ``embed_call`` says."""
    name, _, model, meta, t = release
    checked = 0
    for case in meta["encoder_cases"]:
        n, call = case["case"], case["embed_call"]
        p = call["patch_size"]
        kind = "raw" if call["normalize"] else "input"
        inputs = {m: t[f"{n}/{kind}/{m}"] for m in case["modalities"]}
        kw = {}
        s = call.get("location_query_patch_size", p)
        if s != p:
            kw["location_patch_size"] = s
        out = model.embed(
            inputs, t[f"{n}/input/timestamps"], patch_size=p, normalize=call["normalize"], **kw
        )
        for key, tensor in case["expected"].items():
            got, exp = _expected_output(out, key), t[tensor]
            mod = key.split("/", 1)[1] if key.startswith("tokens/") else None
            if mod and f"{n}/token_mask/{mod}" in t:  # outputs at MISSING tokens mean nothing
                mask = t[f"{n}/token_mask/{mod}"]
                assert torch.equal(out.token_mask[mod], mask), (n, mod)
                got, exp = got[mask == MaskValue.ONLINE_ENCODER], exp[mask == 0]
            torch.testing.assert_close(got, exp, **TOL, msg=lambda m, n=n, k=key: f"{n} {k}: {m}")
            checked += 1
    assert checked >= 5 * len(meta["encoder_cases"])


@pytest.mark.slow
def test_pretraining_forward_and_targets(release):
    _, _, model, meta, t = release
    case = meta["pretrain_case"]
    p, mods = case["patch_size"], case["modalities"]
    inputs = {m: t[f"pretrain/input/{m}"] for m in mods}
    mask = {m: t[f"pretrain/token_mask/{m}"] for m in mods}
    with torch.no_grad():
        enc, dec = model(inputs, t["pretrain/input/timestamps"], p, mask)
        targets = model.targets(inputs, p)
    for m in mods:
        torch.testing.assert_close(enc.tokens[m], t[f"pretrain/encoder_tokens/{m}"], **TOL)
        is_dec = mask[m] == MaskValue.DECODER
        torch.testing.assert_close(dec[m][is_dec], t[f"pretrain/decoded/{m}"][is_dec], **TOL)
        valid = mask[m] != MaskValue.MISSING
        torch.testing.assert_close(targets[m][valid], t[f"pretrain/target/{m}"][valid], **TOL)
    torch.testing.assert_close(enc.project_aggregated, t["pretrain/project_aggregated"], **TOL)
    if "pretrain/location_tokens" in t:
        torch.testing.assert_close(enc.location_tokens, t["pretrain/location_tokens"], **TOL)
        torch.testing.assert_close(enc.location_embedding, t["pretrain/student"], **TOL)


def test_normalization_with_zero_fill(release):
    """v1.1+: a missing value inside a present bandset is 0 after normalization."""
    _, _, model, meta, t = release
    for entry in meta["normalization_cases"]:
        m = entry["modality"]
        raw, expected = t[entry["raw"]], t[entry["normalized"]]
        batch = prepare_inputs({m: raw}, [[1, 0, 2024], [1, 1, 2024]], patch_size=1,
                               check_units=False, config=model.config)  # fmt: skip
        got = batch.inputs[m]
        # Pixels whose whole bandset is missing are masked tokens (-99999), not zero-filled.
        keep = got != -99999
        assert bool((keep | (expected == 0)).all())
        torch.testing.assert_close(got[keep], expected[keep], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "version, size, encoder, decoder",
    [
        ("v1.1", "nano", 1_697_328, 827_424),
        ("v1.1", "tiny", 12_461_296, 1_855_536),
        ("v1.1", "base", 113_973_952, 29_540_544),
        ("v1.2", "nano", 1_698_096, 828_192),
        ("v1.2", "tiny", 12_464_752, 1_856_688),
        ("v1.2", "small", 35_615_200, 7_399_776),
        ("v1.2", "base", 113_987_776, 29_545_152),
        ("v1.3", "base", 170_797_888, 30_131_136),
    ],
)
def test_sizes_build_the_released_parameter_counts(version, size, encoder, decoder):
    """Counts the reference package builds for the real sizes (stated in the fixtures' READMEs)."""
    with torch.device("meta"):
        model = build_model(size, version)
    assert sum(p.numel() for p in model.encoder.parameters()) == encoder
    assert sum(p.numel() for p in model.decoder.parameters()) == decoder


def test_small_size_shape():
    cfg = ModelConfig.from_size("small", "v1.2")
    assert (cfg.embedding_size, cfg.depth, cfg.num_heads) == (384, 12, 6)


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v1.1", "v1.2", "v1.3"])
def test_bigger_config_exported_and_reloaded(tmp_path, version):
    """Nothing depends on the fixtures' sizes: a Tiny-width model saved as a release folder loads
    with its own shapes and gives the same embeddings."""
    pooler = None
    if version == "v1.3":
        pooler = PoolerConfig(pooler_dim=192, attn_dim=None, pooler_depth=2,
                              per_depth_read_proj=True, num_heads=6, student_dims=[48, 24])
    cfg = ModelConfig(
        version=version, embedding_size=192, depth=2, num_heads=3, decoder_embedding_size=96,
        decoder_depth=1, decoder_num_heads=3, patch_embed_hidden_sizes=[16, 8],
        band_groups={"sentinel2_l2a": [list(geolatent.MODALITIES["sentinel2_l2a"].bands)]},
        pooler=pooler, projection_only_target=version == "v1.3",
    )  # fmt: skip
    torch.manual_seed(0)
    model = LatentMIM(cfg).eval()
    for prm in model.parameters():  # non-trivial biases / norms so a mis-load shows
        prm.data.add_(torch.randn_like(prm) * 0.05)
    export_release_folder(model, tmp_path / "rel")
    loaded = geolatent.load_model(tmp_path / "rel")
    assert loaded.config.version == version and loaded.config.embedding_size == 192
    rng = np.random.default_rng(0)
    x = {"sentinel2_l2a": rng.uniform(100, 3000, (1, 8, 12, 3, 12)).astype(np.float32),
         "landsat": rng.uniform(5000, 20000, (1, 8, 12, 3, 11)).astype(np.float32)}  # fmt: skip
    dates = ["2023-01-05", "2023-03-01", "2024-02-29"]
    a, b = model.embed(x, dates, patch_size=4), loaded.embed(x, dates, patch_size=4)
    torch.testing.assert_close(a.pooled, b.pooled, atol=0, rtol=0)
    assert a.tokens["sentinel2_l2a"].shape == (1, 2, 3, 3, 1, 192)
    assert a.tokens["landsat"].shape == (1, 2, 3, 3, 2, 192)  # registry bandsets kept
    if version == "v1.3":
        assert a.location_embedding.shape == (1, 2, 3, 48)
        torch.testing.assert_close(a.location_embedding, b.location_embedding, atol=0, rtol=0)


# -- strict loading -----------------------------------------------------------------------------
def _fixture_copy(name, tmp_path):
    """A writable copy of the fixture release folder ``name``."""
    dst = shutil.copytree(_folder(name), tmp_path / "m")
    for f in dst.iterdir():
        f.chmod(0o644)
    return dst


def _load_refused(folder, message):
    """Loading ``folder`` fails with a CheckpointError matching ``message``."""
    with pytest.raises(CheckpointError, match=message):
        geolatent.load_model(folder)


def _edit_config(folder, fn):
    cfg = json.loads((folder / "config.json").read_text())
    fn(cfg["model"])
    (folder / "config.json").write_text(json.dumps(cfg))


def _edit_weights(folder, fn):
    state = torch.load(folder / "weights.pth", weights_only=True)
    fn(state)
    torch.save(state, folder / "weights.pth")


@pytest.mark.parametrize(
    "config_edit, message",
    [
        (lambda m: m["encoder_config"].update(new_knob=1), "unknown field.*new_knob"),
        (lambda m: m.update(extra_head_config={}), "unknown field.*extra_head_config"),
        (lambda m: m["encoder_config"].update(_CLASS_="x.MysteryEncoderConfig"),
         "unknown _CLASS_.*MysteryEncoderConfig"),
        (lambda m: m["encoder_config"]["attention_pooler_config"].update(read_time_rope=True),
         "unknown field.*read_time_rope"),
        (lambda m: m["encoder_config"].update(qk_norm=True), "qk_norm"),
        (lambda m: m["encoder_config"].update(position_encoding="rope_2d"),
         "not a released OlmoEarth architecture"),
    ],
)  # fmt: skip
def test_strict_config(tmp_path, config_edit, message):
    folder = _fixture_copy("olmoearth_v1_3_mini", tmp_path)
    _edit_config(folder, config_edit)
    _load_refused(folder, message)


PE_KEY = "encoder.patch_embeddings.per_modality_embeddings.sentinel1.sentinel1__0.proj.weight"


@pytest.mark.parametrize(
    "weights_edit, message",
    [
        (lambda s: s.pop("encoder.blocks.0.attn.rope_mixed_freqs"),
         r"missing keys.*encoder\.blocks\.0\.attn\.rope_mixed_freqs"),
        (lambda s: s.update({"encoder.blocks.0.attn.extra": torch.zeros(1)}),
         r"unexpected keys.*encoder\.blocks\.0\.attn\.extra"),
        (lambda s: s.update({PE_KEY: torch.zeros(128, 64)}), "shape mismatch for " + PE_KEY),
        (lambda s: s.update({"mystery_head.w": torch.zeros(1)}), "unexpected keys.*mystery_head"),
    ],
)  # fmt: skip
def test_strict_weights(tmp_path, weights_edit, message):
    folder = _fixture_copy("olmoearth_v1_2_nano", tmp_path)
    _edit_weights(folder, weights_edit)
    _load_refused(folder, message)


def test_training_heads_ignored_only_when_declared(tmp_path):
    folder = _fixture_copy("olmoearth_v1_3_mini", tmp_path)
    geolatent.load_model(folder)  # declared in config.json: ignored
    _edit_config(folder, lambda m: m.pop("supervision_head_config"))
    _load_refused(folder, r"unexpected keys.*supervision_head\.")


def test_full_training_config_layout_uses_model_entry_only(tmp_path):
    """v1.1/v1.2 folders carry the whole training config; only ``model`` is read."""
    folder = _fixture_copy("olmoearth_v1_1_nano", tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    assert {"trainer", "train_module", "data_loader"} <= set(cfg)
    cfg["trainer"]["something_new"] = 1
    (folder / "config.json").write_text(json.dumps(cfg))
    assert geolatent.load_model(folder).config.version == "v1.1"


# -- the embed API per version ------------------------------------------------------------------
def _s2(b=1, h=8, w=8, t=3, seed=0):
    return np.random.default_rng(seed).uniform(200, 4000, (b, h, w, t, 12)).astype(np.float32)


def _dates(t):
    return [f"{2020 + i // 12}-{i % 12 + 1:02d}-15" for i in range(t)]


@pytest.fixture(scope="module")
def v12():
    return geolatent.load_model(_folder("olmoearth_v1_2_nano"))


@pytest.fixture(scope="module")
def v13():
    return geolatent.load_model(_folder("olmoearth_v1_3_mini"))


def test_v12_takes_more_than_12_dates_and_uses_real_dates(v12):
    out = v12.embed({"sentinel2_l2a": _s2(t=16)}, _dates(16), patch_size=4)
    assert out.tokens["sentinel2_l2a"].shape[3] == 16
    x = _s2(t=2)
    a = v12.embed({"sentinel2_l2a": x}, ["2023-05-01", "2023-05-20"], patch_size=4).pooled
    b = v12.embed({"sentinel2_l2a": x}, ["2023-05-01", "2023-05-28"], patch_size=4).pooled
    assert not torch.allclose(a, b)  # same month, other day: v1.2 sees it


def test_v12_requires_timestamps(v12):
    with pytest.raises(InputError, match="timestamps are required.*v1.2 uses the real dates"):
        v12.embed({"sentinel2_l2a": _s2()}, None)


def test_v1_still_limits_t_to_12():
    model = build_model("nano")
    with pytest.raises(InputError, match="T must be 1..12 for a v1 model"):
        model.embed({"sentinel2_l2a": _s2(t=13)}, _dates(13))


def test_v13_location_tokens_and_matryoshka(v13):
    x = {"sentinel2_l2a": _s2(b=2, h=8, w=12)}
    out = v13.embed(x, _dates(3), patch_size=4)
    assert out.location_tokens.shape == (2, 2, 3, 128)
    assert out.location_embedding.shape == (2, 2, 3, 32)
    per_pixel = v13.embed(x, _dates(3), patch_size=4, location_patch_size=1)
    assert per_pixel.location_tokens.shape == (2, 8, 12, 128)
    # Matryoshka: the 16-d embedding is a prefix of the 32-d one, not re-normalized.
    assert out.location_embedding[..., :16].shape[-1] == 16
    torch.testing.assert_close(out.tokens["sentinel2_l2a"], per_pixel.tokens["sentinel2_l2a"])


@pytest.mark.parametrize("lps, message", [(3, "dividing patch_size=4"), (0, "positive integer")])
def test_v13_bad_location_patch_size(v13, lps, message):
    with pytest.raises(InputError, match=message):
        v13.embed({"sentinel2_l2a": _s2()}, _dates(3), patch_size=4, location_patch_size=lps)


def test_location_patch_size_needs_v13(v12):
    with pytest.raises(InputError, match="location_patch_size needs a v1.3 model"):
        v12.embed({"sentinel2_l2a": _s2()}, _dates(3), patch_size=4, location_patch_size=2)
