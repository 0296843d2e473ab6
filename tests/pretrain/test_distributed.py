"""Data parallelism: 2 gloo processes (torchrun) give the losses of 1 process with the same
global batch, with DDP and with FSDP2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geolatent.pretrain.monitor import read_metrics
from geolatent.pretrain.trainer import Trainer

from .conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]
SECTIONS = dict(
    schedule={"max_steps": 3, "warmup_steps": 1},
    # Global batch 4: one process accumulates 2 micro-batches of 2; two ranks take one each.
    train={"global_batch_size": 4, "micro_batch_size": 2, "num_threads": 1},
    checkpoint={"every_steps": 3},
)


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    n = torch.get_num_threads()
    try:
        return Trainer(tiny_config(**SECTIONS), tmp_path_factory.mktemp("single")).fit()
    finally:
        torch.set_num_threads(n)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_gloo_ranks_match_one_process(tmp_path, single_process, parallel):
    cfg = tiny_config(**SECTIONS).save(tmp_path / "cfg")
    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "geolatent.cli", "pretrain", "--config", str(cfg), "--run-dir", str(run),
        f"train.parallel={parallel}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    ranks = read_metrics(run)
    assert [r["step"] for r in ranks] == [1, 2, 3]
    for a, b in zip(single_process, ranks, strict=True):
        for k in ("loss", "patch_disc_a", "patch_disc_b", "infonce"):
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), (a["step"], k)
    # The checkpoint gathered from the ranks loads as a plain model.
    import geolatent

    model = geolatent.load_model(run / "checkpoints" / "step_00000003" / "model")
    assert model.config.size == "nano"
