"""The training loop end to end: loss decreases, checkpoints load for embedding, SIGKILL +
``--resume`` reproduces an uninterrupted run, bad samples are counted, CLI errors are clear."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import geolatent
from geolatent.pretrain.checkpointing import latest_checkpoint, list_checkpoints
from geolatent.pretrain.dataset import PretrainDataset, collate_samples
from geolatent.pretrain.monitor import read_metrics
from geolatent.pretrain.objective import PretrainObjective
from geolatent.pretrain.sampler import SampleRequest
from geolatent.pretrain.samples import build_manifest, write_builtin_samples
from geolatent.pretrain.trainer import Trainer, prepare_micro_batch
from geolatent.schedules import lr_factor

from .conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]


def test_lr_schedule_shape():
    f = [lr_factor(s, 10, 110, 0.1) for s in range(111)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[60] == pytest.approx(0.55)
    assert f[110] == pytest.approx(0.1) and min(f[10:]) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))


def _fixed_eval_loss(model, data: Path, batch_seed: int = 123) -> float:
    """Loss of a fixed batch with fixed masks (no augmentation noise): comparable across models."""
    manifest, _ = build_manifest(data)
    ds = PretrainDataset(manifest)
    reqs = [
        SampleRequest(i, 2, 4, 3, batch_seed + i, step=0, micro_index=0) for i in range(len(ds))
    ]
    batch = collate_samples([ds[r] for r in reqs])
    inputs, va, vb = prepare_micro_batch(batch, seed=batch_seed)
    with torch.no_grad():
        out = PretrainObjective(model.eval())(inputs, batch.timestamps, 2, va.token_mask,
                                             vb.token_mask)  # fmt: skip
    return out["loss"].item()


def test_loss_goes_down_over_100_steps(tmp_path):
    """Nano on the built-in sample, 100 steps of 8 tiny crops (2x2 tokens at p=2)."""
    cfg = tiny_config(
        data={"builtin": {"num_samples": 8, "size_px": 16, "timesteps": 4}},
        sampler={"min_patch_size": 2, "max_patch_size": 2, "min_grid": 2, "max_grid": 2,
                 "token_budget": 100},
        optimizer={"lr": 3e-3},
        schedule={"max_steps": 100, "warmup_steps": 5, "final_lr_ratio": 1.0},
        train={"global_batch_size": 8, "micro_batch_size": 8, "num_threads": 1},
        checkpoint={"every_steps": 100},
    )  # fmt: skip
    t0 = time.perf_counter()
    records = Trainer(cfg, tmp_path / "run").fit()
    elapsed = time.perf_counter() - t0
    loss = np.array([r["loss"] for r in records])
    assert len(loss) == 100 and np.isfinite(loss).all()
    assert loss[-20:].mean() < loss[:10].mean() - 0.01, (loss[:10].mean(), loss[-20:].mean())
    assert read_metrics(tmp_path / "run")[-1]["step"] == 100
    print(f"100 steps in {elapsed:.1f}s: loss {loss[:10].mean():.3f} -> {loss[-20:].mean():.3f}")

    # The same fixed batch scores better with the trained model than with the initial one.
    ckpt = latest_checkpoint(tmp_path / "run")
    trained = geolatent.load_model(ckpt / "model")
    torch.manual_seed(cfg.train.seed)
    initial = geolatent.build_model("nano")
    data = tmp_path / "run" / "data"
    assert _fixed_eval_loss(trained, data) < _fixed_eval_loss(initial, data) - 0.005

    # The checkpoint's model is usable for embedding.
    x = torch.rand(1, 8, 8, 2, 12) * 3000
    ts = torch.tensor([[[15, 5, 2021], [15, 6, 2021]]])
    emb = trained.embed({"sentinel2_l2a": x}, timestamps=ts, patch_size=4)
    assert emb.pooled.shape == (1, 128) and torch.isfinite(emb.pooled).all()


def _config_file(tmp_path: Path, **sections) -> Path:
    return tiny_config(**sections).save(tmp_path / "cfg")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "geolatent.cli", "pretrain", *args]


def test_sigkill_then_resume_reproduces_uninterrupted_run(tmp_path):
    sections = dict(
        schedule={"max_steps": 40, "warmup_steps": 4},
        train={"global_batch_size": 4, "micro_batch_size": 2, "num_threads": 1},
        data={"num_workers": 1},
        checkpoint={"every_steps": 4, "keep_last": 2},
    )
    reference = Trainer(tiny_config(**sections), tmp_path / "straight").fit()
    cfg = _config_file(tmp_path, **sections)
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(_cli("--config", str(cfg), "--run-dir", str(run)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            ck = latest_checkpoint(run)
            if ck is not None and ck.name >= "step_00000008":
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.02)
        else:
            pytest.fail("the run wrote no checkpoint in time")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(r["step"] for r in read_metrics(run))
    assert killed_at < 40, "the run finished before it could be killed"
    # what a kill during a save leaves behind: the resume removes it
    (run / "checkpoints" / ".tmp-step_00000012-99999" / "model").mkdir(parents=True)
    (run / "checkpoints" / ".latest.tmp-99999").write_text("step_00000012\n")
    done = subprocess.run(_cli("--run-dir", str(run), "--resume"), env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr
    resumed = read_metrics(run)
    assert [r["step"] for r in resumed] == list(range(1, 41))
    for a, b in zip(reference, resumed, strict=True):
        for k in ("loss", "patch_disc_a", "patch_disc_b", "infonce", "lr"):
            assert a[k] == b[k], (a["step"], k, a[k], b[k])
    assert len(list_checkpoints(run)) == 2
    assert not list((run / "checkpoints").glob(".*tmp*"))


def test_bad_samples_are_skipped_and_counted(tmp_path):
    data = tmp_path / "data"
    write_builtin_samples(data, num_samples=4, size_px=16, timesteps=4)
    manifest, _ = build_manifest(data)
    manifest.save()
    (data / "builtin_00001.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # breaks later
    cfg = tiny_config(data={"root": str(data), "builtin": None, "num_workers": 0},
                      schedule={"max_steps": 4}, train={"num_threads": 1})  # fmt: skip
    records = Trainer(cfg, tmp_path / "run").fit()
    assert len(records) == 4 and all(np.isfinite(r["loss"]) for r in records)
    assert records[-1]["bad_samples_total"] >= 1
    assert records[-1]["bad_samples_total"] == sum(r["bad_samples"] for r in records)


def test_cli_reports_errors_clearly(tmp_path):
    from geolatent.cli import app

    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {size: huge}\ndata: {builtin: {}}\n")
    res = runner.invoke(app, ["pretrain", "--config", str(bad), "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 2 and "model.size" in res.output
    res = runner.invoke(app, ["pretrain", "--run-dir", str(tmp_path / "none"), "--resume"])
    assert res.exit_code == 2 and "--config is required" in res.output
    cfg = _config_file(tmp_path)
    res = runner.invoke(app, ["pretrain", "--config", str(cfg), "--run-dir", str(tmp_path / "r2"),
                              "--resume"])  # fmt: skip
    assert res.exit_code == 2 and "no checkpoint" in res.output
    res = runner.invoke(app, ["pretrain", "--config", str(cfg), "--run-dir", str(tmp_path / "r3"),
                              "optimizer.lr"])  # fmt: skip
    assert res.exit_code == 2 and "key=value" in res.output
