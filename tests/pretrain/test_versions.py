"""The trainer builds and trains the v1.1 and v1.2 architectures from a config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import geolatent
from geolatent.pretrain.checkpointing import latest_checkpoint
from geolatent.pretrain.config import ConfigError, config_from_dict

from .conftest import tiny_config


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v1.1", "v1.2"])
def test_trains_and_checkpoints_a_version(tmp_path, version):
    from geolatent.pretrain.trainer import Trainer

    cfg = tiny_config(model={"size": "nano", "version": version},
                      schedule={"max_steps": 4, "warmup_steps": 1},
                      checkpoint={"every_steps": 4})  # fmt: skip
    records = Trainer(cfg, tmp_path / "run").fit()
    loss = np.array([r["loss"] for r in records])
    assert len(loss) == 4 and np.isfinite(loss).all()
    model = geolatent.load_model(latest_checkpoint(tmp_path / "run") / "model")
    assert model.config.version == version
    assert model.config.band_groups["sentinel2_l2a"] == [list(geolatent.MODALITIES[
        "sentinel2_l2a"].bands)]  # fmt: skip
    x = torch.rand(1, 8, 8, 2, 12) * 3000
    emb = model.embed({"sentinel2_l2a": x}, ["2021-06-15", "2021-07-15"], patch_size=4)
    assert torch.isfinite(emb.pooled).all() and emb.tokens["sentinel2_l2a"].shape[4] == 1


def test_v13_training_is_refused_clearly():
    base = tiny_config().model_dump()
    base["model"]["version"] = "v1.3"
    with pytest.raises((ConfigError, ValueError), match="version"):
        config_from_dict(base)
