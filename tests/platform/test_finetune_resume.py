"""Fine-tuning resumes: kill -9 a real ``geolatent finetune`` mid-run, rerun, and get the same
weights (bit for bit) and metrics as an uninterrupted run; a changed config is an error naming
what changed and how to start over (``--restart`` / ``restart=True``)."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from platform_fixtures import single_torch_thread  # noqa: F401
from test_finetune_safety import _config

from geolatent.platform.config import load_finetune_config
from geolatent.platform.finetune import finetune
from geolatent.platform.training_state import (
    CHECKPOINT_FILE,
    ResumeError,
    load_checkpoint,
    restore_rng,
    rng_states,
)

EPOCHS = 8


def _cli(cfg: Path, *args: str) -> subprocess.Popen:
    """``geolatent finetune`` in a subprocess, one torch thread (both runs alike)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "geolatent.cli", "finetune", "--config",
                             str(cfg), *args], cwd=cfg.parent, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _run(cfg: Path, *args: str) -> tuple[int, str]:
    proc = _cli(cfg, *args)
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, " ".join(out.split())


def _comparable(model: Path) -> tuple[bytes, dict, dict]:
    """Weights bytes, bundle metrics and report without wall-clock figures."""
    meta = json.loads((model / "bundle.json").read_text())
    metrics = meta["metrics"]
    metrics.pop("compute")
    for row in metrics["history"]:
        row.pop("seconds")
    return ((model / "weights.safetensors").read_bytes(), metrics,
            json.loads((model / "report.json").read_text()))


@pytest.mark.slow
def test_kill9_then_rerun_resumes_and_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    clean = _config(tmp_path, "clean", epochs=EPOCHS)
    killed = tmp_path / "killed.yaml"
    killed.write_text(clean.read_text().replace("output: clean", "output: killed"))
    code, out = _run(clean)
    assert code == 0, out
    assert "resumed" not in out and not (tmp_path / "clean" / ".work" / CHECKPOINT_FILE).exists()

    ckpt = tmp_path / "killed" / ".work" / CHECKPOINT_FILE
    proc = _cli(killed)
    try:
        deadline = time.monotonic() + 300
        while not ckpt.exists():  # the first epoch is checkpointed: kill somewhere after it
            assert proc.poll() is None, proc.stdout.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no epoch checkpointed within 300 s"
            time.sleep(0.02)
        time.sleep(random.Random(0).uniform(0.0, 0.4))
        assert proc.poll() is None, "the run ended before the kill; make it longer"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert not (tmp_path / "killed" / "bundle.json").exists()  # never an unfinished model there
    saved = ckpt.read_bytes()

    code, out = _run(killed, "--set", "train.lr=0.004")
    assert code == 2, out
    assert "train.lr: 0.002 -> 0.004" in out and "--restart" in out and "Traceback" not in out
    assert ckpt.read_bytes() == saved  # the interrupted run is kept for a resume

    code, out = _run(killed)
    assert code == 0, out
    k = int(out.split("resumed at epoch ")[1].split("/")[0])
    assert 2 <= k <= EPOCHS and f"epoch {k}/{EPOCHS}" in out and f"epoch {k - 1}/{EPOCHS} " \
        not in out.split("resumed at epoch")[1]
    assert not ckpt.exists()  # published: nothing left to resume
    # bit for bit: the same weights, metrics and report as the uninterrupted run
    assert _comparable(tmp_path / "killed") == _comparable(tmp_path / "clean")


@pytest.mark.slow
def test_changed_config_is_refused_and_restart_starts_over(tmp_path: Path) -> None:
    path = _config(tmp_path, "model", epochs=2)
    cfg = load_finetune_config(path)
    lines: list[str] = []

    def stop_in_epoch_2(line: str) -> None:
        lines.append(line)
        if line.startswith("epoch 2/2"):
            raise KeyboardInterrupt  # as a kill would, before epoch 2 is checkpointed

    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, log=stop_in_epoch_2)
    assert (tmp_path / "model" / ".work" / CHECKPOINT_FILE).exists()
    changed = load_finetune_config(path, ["train.dropout=0.3", "split.seed=4"])
    with pytest.raises(ResumeError) as err:
        finetune(changed)
    msg = str(err.value)
    assert "train.dropout: 0.1 -> 0.3" in msg and "split.seed: 0 -> 4" in msg
    assert "1 epoch(s) done" in msg and "restart=True" in msg
    lines.clear()
    res = finetune(changed, restart=True, log=lines.append)
    assert not [s for s in lines if "resumed" in s]
    assert [r["epoch"] for r in res.history] == [0, 1]
    assert not (tmp_path / "model" / ".work" / CHECKPOINT_FILE).exists()


def test_rng_states_round_trip_and_an_unreadable_checkpoint_is_named(tmp_path: Path) -> None:
    import numpy as np
    import torch

    gen = np.random.default_rng(7)
    saved = pickle.loads(pickle.dumps(rng_states(gen)))
    draws = (torch.rand(3), gen.integers(0, 1 << 30, 3), np.random.rand(2), random.random())
    torch.rand(5), gen.integers(0, 9, 4), np.random.rand(3), random.random()  # move on
    restore_rng(gen, saved)
    again = (torch.rand(3), gen.integers(0, 1 << 30, 3), np.random.rand(2), random.random())
    assert torch.equal(draws[0], again[0]) and (draws[1] == again[1]).all()
    assert (draws[2] == again[2]).all() and draws[3] == again[3]

    bad = tmp_path / CHECKPOINT_FILE
    bad.write_bytes(b"cut short")
    with pytest.raises(ValueError, match=r"cannot read the interrupted fine-tuning's checkpoint"
                                         r".*restart=True \(--restart in the CLI\)"):
        load_checkpoint(bad, {})
