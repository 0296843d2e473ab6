"""Pretraining config: shipped files validate, round trip, overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from geolatent.pretrain.config import (
    ConfigError,
    PretrainConfig,
    config_from_dict,
    load_config,
    resume_differences,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "pretrain"

RELEASED = {  # size: (lr, weight decay, steps), spec section 3
    "nano": (1e-3, 0.002, 370_000),
    "tiny": (2e-4, 0.02, 360_000),
    "base": (1e-4, 0.02, 667_200),
    "large": (1e-4, 0.002, 560_000),
}


@pytest.mark.parametrize("size", RELEASED)
def test_released_size_configs_follow_the_spec(size):
    cfg = load_config(CONFIGS / f"{size}.yaml")
    lr, wd, steps = RELEASED[size]
    assert cfg.model.size == size
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.schedule.max_steps) == (lr, wd, steps)
    assert cfg.optimizer.betas == (0.9, 0.999) and cfg.optimizer.eps == 1e-8
    assert cfg.optimizer.grad_clip == 1.0
    assert (cfg.schedule.warmup_steps, cfg.schedule.final_lr_ratio) == (8000, 0.1)
    assert (cfg.train.global_batch_size, cfg.train.micro_batch_size) == (512, 32)
    s = cfg.sampler
    assert (s.min_patch_size, s.max_patch_size, s.max_grid, s.token_budget) == (1, 8, 12, 2250)
    assert (cfg.masking.encode_ratio, cfg.masking.decode_ratio) == (0.5, 0.5)
    assert (cfg.loss.patch_disc_tau, cfg.loss.infonce_tau, cfg.loss.infonce_weight) == (
        0.1,
        0.1,
        0.1,
    )


def test_smoke_config_is_small_and_cpu():
    cfg = load_config(CONFIGS / "smoke.yaml")
    assert cfg.model.size == "nano" and cfg.data.builtin is not None
    assert cfg.train.device == "cpu" and cfg.schedule.max_steps == 50


def test_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "smoke.yaml", ["optimizer.lr=3e-4", "train.chunk_size=4"])
    path = cfg.save(tmp_path)
    back = load_config(path)
    assert back == cfg and back.optimizer.lr == 3e-4 and back.train.chunk_size == 4
    assert config_from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


def test_overrides_nested_and_typed():
    cfg = load_config(CONFIGS / "base.yaml", [
        "data.root=/data/h5", "data.modalities=[sentinel2_l2a, sentinel1]",
        "train.parallel=ddp", "optimizer.grad_clip=null",
    ])  # fmt: skip
    assert cfg.data.root == "/data/h5" and cfg.data.modalities == ["sentinel2_l2a", "sentinel1"]
    assert cfg.train.parallel == "ddp" and cfg.optimizer.grad_clip is None


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.lr=-1", "optimizer.lr"),
        ("model.size=huge", "model.size"),
        ("optimizer.learning_rate=1e-3", "optimizer.learning_rate: unknown key"),
        ("train.micro_batch_size=30", "not a multiple of micro_batch_size"),
        ("sampler.min_patch_size=6 sampler.max_patch_size=4", "min_patch_size 6 > max_patch_size"),
        ("schedule.warmup_steps=999999999", "warmup_steps"),
        ("masking.encode_ratio=0.8", "encode_ratio + decode_ratio"),
        ("data.builtin.num_samples=2", "exactly one of data.root"),
        ("data.modalities=[sentinel3]", "unknown modalities"),
        ("train.parallel=zero3", "train.parallel"),
    ],
)
def test_bad_configs_name_the_key(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "base.yaml", override.split())
    assert expected in str(err.value)
    assert "invalid pretraining config" in str(err.value)


def test_malformed_inputs():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(CONFIGS / "smoke.yaml", ["optimizer.lr"])
    # file errors (invalid YAML, not a mapping, unreadable): tests/test_config.py, every reader
    with pytest.raises(ConfigError, match="data: Field required"):
        config_from_dict({})


def test_resume_differences_allow_only_safe_keys():
    cfg = load_config(CONFIGS / "smoke.yaml")
    longer = cfg.model_copy(deep=True)
    longer.schedule.max_steps = 100
    longer.logging.progress = False
    assert resume_differences(cfg, longer) == []
    other = cfg.model_copy(deep=True)
    other.optimizer.lr = 1.0
    assert resume_differences(cfg, other) == ["optimizer.lr"]
    assert isinstance(cfg, PretrainConfig)
