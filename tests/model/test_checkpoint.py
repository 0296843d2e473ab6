"""Checkpoint loading is strict and exact; saving round-trips; every size works."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import geolatent
from geolatent.model.checkpoint import CheckpointError, export_release_folder
from geolatent.model.config import ModelConfig
from geolatent.model.latent_mim import LatentMIM

V1_COUNTS = {
    "nano": (1_361_408, 827_904),
    "tiny": (6_203_136, 1_856_256),
    "base": (88_955_904, 29_543_424),
    "large": (307_773_440, 52_498_432),
}


@pytest.mark.parametrize("size", list(V1_COUNTS))
def test_parameter_counts_of_every_size(size):
    with torch.device("meta"):
        m = LatentMIM(ModelConfig.from_size(size))
    enc = sum(p.numel() for p in m.encoder.parameters())
    dec = sum(p.numel() for p in m.decoder.parameters())
    assert (enc, dec) == V1_COUNTS[size]


def test_unknown_size_is_an_error():
    with pytest.raises(ValueError, match="unknown model size"):
        geolatent.build_model("huge")


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    s2 = torch.rand(2, 8, 8, 3, 12, generator=g) * 4000 + 100
    ts = torch.tensor([[[1, m, 2023] for m in (2, 5, 8)]] * 2)
    return {"sentinel2_l2a": s2}, ts


def _copy_fixture(fixture_dir, tmp_path):
    dst = tmp_path / "release"
    dst.mkdir()
    for name in ("config.json", "weights.pth"):
        shutil.copy(fixture_dir / name, dst / name)
    return dst


def test_missing_paths_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        geolatent.load_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="config.json"):
        geolatent.load_model(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="weights.pth"):
        geolatent.load_model(tmp_path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda sd: sd.pop("encoder.blocks.0.attn.q.weight"),
            "missing keys.*encoder.blocks.0.attn.q.weight",
        ),
        (lambda sd: sd.__setitem__("encoder.extra.weight", torch.zeros(1)), "unexpected keys"),
        (lambda sd: sd.__setitem__("optimizer.state", torch.zeros(1)), "unexpected keys"),
        (
            lambda sd: sd.__setitem__("decoder.mask_token", torch.zeros(64)),
            "shape mismatch for decoder.mask_token",
        ),
        (
            lambda sd: sd.pop("target_encoder.blocks.1.mlp.fc1.bias"),
            "target_encoder.blocks.1.mlp.fc1.bias",
        ),
    ],
)
def test_mismatched_weights_are_named_errors(fixture_dir, tmp_path, edit, message):
    folder = _copy_fixture(fixture_dir, tmp_path)
    sd = torch.load(folder / "weights.pth", weights_only=True)
    edit(sd)
    torch.save(sd, folder / "weights.pth")
    with pytest.raises(CheckpointError, match=message):
        geolatent.load_model(folder)


def test_truncated_weights_file_is_an_error(fixture_dir, tmp_path):
    folder = _copy_fixture(fixture_dir, tmp_path)
    data = (folder / "weights.pth").read_bytes()
    (folder / "weights.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read weights"):
        geolatent.load_model(folder)


def test_unsupported_architecture_settings_are_errors(fixture_dir, tmp_path):
    folder = _copy_fixture(fixture_dir, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"]["encoder_config"]["num_register_tokens"] = 4
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="num_register_tokens"):
        geolatent.load_model(folder)


def test_target_encoder_is_read_on_its_own(fixture_dir, tmp_path):
    folder = _copy_fixture(fixture_dir, tmp_path)
    sd = torch.load(folder / "weights.pth", weights_only=True)
    key = "patch_embeddings.per_modality_embeddings.sentinel1.sentinel1__0.proj.weight"
    sd[f"target_encoder.{key}"] = sd[f"target_encoder.{key}"] + 1.0
    torch.save(sd, folder / "weights.pth")
    m = geolatent.load_model(folder)
    tp = m.target_projection.state_dict()[key[len("patch_embeddings.") :]]
    torch.testing.assert_close(tp, sd[f"target_encoder.{key}"])
    torch.testing.assert_close(m.encoder.state_dict()[key], sd[f"encoder.{key}"])


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(1)
    model = geolatent.build_model("nano").eval()
    geolatent.save_model(model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    loaded = geolatent.load_model(tmp_path / "ckpt")
    x, ts = _inputs()
    torch.testing.assert_close(
        model.embed(x, ts).tokens["sentinel2_l2a"],
        loaded.embed(x, ts).tokens["sentinel2_l2a"],
        atol=0,
        rtol=0,
    )
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_geolatent_format_is_strict(tmp_path):
    from safetensors.torch import load_file, save_file

    model = geolatent.build_model("nano")
    folder = geolatent.save_model(model, tmp_path / "ckpt")
    state = load_file(str(folder / "model.safetensors"))
    state.pop("decoder.norm.weight")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="decoder.norm.weight"):
        geolatent.load_model(folder)


def test_release_layout_of_another_size_loads_exactly(tmp_path):
    """Nothing in the v1 loader depends on Nano's shapes: a Tiny release folder round-trips."""
    torch.manual_seed(2)
    tiny = geolatent.build_model("tiny").eval()
    export_release_folder(tiny, tmp_path / "OlmoEarth-v1-Tiny")
    loaded = geolatent.load_model(tmp_path / "OlmoEarth-v1-Tiny")
    assert loaded.config.embedding_size == 192 and loaded.config.depth == 12
    x, ts = _inputs()
    a, b = tiny.embed(x, ts, patch_size=2), loaded.embed(x, ts, patch_size=2)
    torch.testing.assert_close(a.feature_map, b.feature_map, atol=0, rtol=0)


def test_fixture_release_folder_round_trips_through_export(nano_fixture_model, tmp_path):
    export_release_folder(nano_fixture_model, tmp_path / "r")
    again = geolatent.load_model(tmp_path / "r")
    for k, v in nano_fixture_model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
