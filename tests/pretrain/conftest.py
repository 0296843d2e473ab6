"""Helpers of the pretraining tests: tiny configs and small sample files built in the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geolatent.data.h5samples import write_sample
from geolatent.modalities import MISSING_VALUE, MODALITIES
from geolatent.pretrain.config import PretrainConfig, config_from_dict


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """These tests use tiny tensors: one thread avoids OpenMP overhead on a shared 2-core box."""


def tiny_config(**sections) -> PretrainConfig:
    """Nano on a few 16 px built-in samples, 2-token crops: a step takes a few tens of ms."""
    base = {
        "name": "test",
        "model": {"size": "nano"},
        "data": {"builtin": {"num_samples": 6, "size_px": 16, "timesteps": 4}, "num_workers": 0},
        "sampler": {"min_patch_size": 2, "max_patch_size": 4, "max_grid": 2, "token_budget": 64},
        "optimizer": {"lr": 1e-3},
        "schedule": {"max_steps": 6, "warmup_steps": 2},
        "train": {
            "global_batch_size": 4,
            "micro_batch_size": 2,
            "device": "cpu",
            "precision": "fp32",
            "num_threads": 1,
        },
        "checkpoint": {"every_steps": 3},
        "logging": {"progress": False, "tensorboard": False},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return config_from_dict(base)


def raw_sample(
    rng: np.random.Generator,
    size: int = 16,
    timesteps: int = 4,
    modalities: tuple[str, ...] = ("sentinel2_l2a", "sentinel1", "worldcover"),
    missing: dict[str, list[int]] | None = None,
) -> dict:
    """Arguments of ``write_sample`` with plausible raw values; ``missing`` timesteps get -99999."""
    arrays, masks = {}, {}
    for m in modalities:
        mod = MODALITIES[m]
        t = timesteps if mod.multitemporal else 1
        if m == "sentinel2_l2a":
            a = rng.uniform(0, 5000, (size, size, t, mod.num_bands))
        elif m == "sentinel1":
            a = rng.uniform(-25, -5, (size, size, t, mod.num_bands))
        elif m == "worldcover":
            a = rng.choice([10, 20, 30, 40, 50, 80], (size, size, t, 1))
        else:
            a = rng.uniform(0, 1, (size, size, t, mod.num_bands))
        a = a.astype(np.float32)
        mask = np.zeros(t, dtype=bool)
        for ti in (missing or {}).get(m, []):
            a[:, :, ti] = MISSING_VALUE
            mask[ti] = True
        arrays[m], masks[m] = a, mask
    ts = np.stack([np.full(timesteps, 15), np.arange(timesteps) % 12, np.full(timesteps, 2021)], 1)
    return {"arrays": arrays, "timestamps": ts, "latlon": (45.0, 7.0), "missing_timesteps": masks}


@pytest.fixture
def sample_dir(tmp_path: Path) -> Path:
    """Four good sample files (one with missing Sentinel-1 timesteps)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "samples"
    for i in range(4):
        missing = {"sentinel1": [1, 2]} if i == 0 else None
        write_sample(root / f"s{i}.h5", **raw_sample(rng, missing=missing))
    return root
