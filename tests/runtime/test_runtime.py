"""geolatent.runtime: CPU features, device resolution (errors name the flag), ranks, compute report;
and `--device cuda` without CUDA as a clear error on every command that takes a device."""

from __future__ import annotations

import json
import os

import pytest
import torch
from typer.testing import CliRunner

from geolatent import runtime
from geolatent.cli import app

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
runner = CliRunner()


def test_cpu_info_lists_only_known_features():
    info = runtime.cpu_info()
    assert info.model and info.logical_cores >= 1
    assert set(info.features) <= set(runtime.CPU_FEATURES)
    if info.torch_capability == "AVX512":
        assert runtime.cpu_has("avx512f")
    with pytest.raises(ValueError, match="unknown CPU feature"):
        runtime.cpu_has("avx9000")


def test_resolve_device():
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    assert runtime.resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(runtime.DeviceError, match="--device 'tpu'"):
        runtime.resolve_device("tpu", "--device")


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:1", "CUDA"])
def test_cuda_without_cuda_names_the_option(name):
    with pytest.raises(runtime.DeviceError) as err:
        runtime.resolve_device(name, "train.device")
    msg = str(err.value)
    assert f"train.device {name!r} asks for CUDA" in msg and "use train.device cpu" in msg


def test_rank_info(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert runtime.rank_info() == runtime.RankInfo(0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = runtime.rank_info()
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (3, 4, 1, False)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(runtime.DeviceError, match="outside WORLD_SIZE=4"):
        runtime.rank_info()


def test_compute_meter_reports_an_estimate(monkeypatch, tmp_path):
    monkeypatch.delenv("GEOLATENT_CARBON_INTENSITY", raising=False)
    x = torch.randn(400, 400)
    with runtime.ComputeMeter("cpu", "fp32", "matmuls") as meter:
        for _ in range(20):
            x = torch.tanh(x @ x)
            meter.add(1)
    r = meter.report
    assert r.wall_s > 0 and r.cpu_s > 0 and r.work == 20
    assert r.throughput_per_s == pytest.approx(20 / r.wall_s, rel=1e-3)
    assert r.energy_kwh > 0 and "estimate from rated power" in r.energy_method
    expected_j = r.cpu_s * r.watts_per_core + r.peak_rss_gb * runtime.MEMORY_WATTS_PER_GB * r.wall_s
    assert r.energy_kwh * 3.6e6 == pytest.approx(expected_j, rel=0.01)
    assert r.carbon_intensity_g_per_kwh == runtime.WORLD_CARBON_INTENSITY
    assert r.co2e_g == pytest.approx(r.energy_kwh * 475.0)
    assert r.cpu_model == runtime.cpu_info().model and r.precision == "fp32"
    path = meter.write(tmp_path / "compute.json")
    assert json.loads(path.read_text())["energy_kwh"] == r.energy_kwh
    assert os.listdir(tmp_path) == ["compute.json"]  # no temporary file left


def test_carbon_intensity_override(monkeypatch):
    monkeypatch.setenv("GEOLATENT_CARBON_INTENSITY", "120")
    assert runtime.carbon_intensity() == (120.0, "GEOLATENT_CARBON_INTENSITY")
    monkeypatch.setenv("GEOLATENT_CARBON_INTENSITY", "green")
    with pytest.raises(ValueError, match="grams CO2e per kWh"):
        runtime.carbon_intensity()


def test_meter_needs_a_start():
    with pytest.raises(RuntimeError, match="never started"):
        runtime.ComputeMeter().report_dict()


def _no_traceback(result, flag: str) -> str:
    text = " ".join((result.output or "").split())  # independent of terminal width
    assert result.exit_code == 2, text
    assert "Traceback" not in text and not isinstance(result.exception, runtime.DeviceError)
    assert flag in text and "asks for CUDA" in text
    return text


@no_cuda
def test_cli_embed_and_demo_device_cuda(tmp_path):
    tif = tmp_path / "s2.tif"
    tif.write_bytes(b"")
    res = runner.invoke(app, ["embed", "-o", str(tmp_path / "o.tif"), "--s2", str(tif),
                              "--random-weights", "nano", "--device", "cuda"])  # fmt: skip
    _no_traceback(res, "--device")
    res = runner.invoke(app, ["demo", "-o", str(tmp_path / "demo"), "--device", "cuda"])
    _no_traceback(res, "--device")


@no_cuda
def test_cli_predict_device_cuda(tmp_path):
    (tmp_path / "model").mkdir()
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text("{}")
    res = runner.invoke(app, ["predict", "-m", str(tmp_path / "model"), "--aoi", str(aoi),
                              "--start", "2024-01-01", "--end", "2024-02-01",
                              "-o", str(tmp_path / "o.tif"), "--device", "cuda"])  # fmt: skip
    _no_traceback(res, "--device")


@no_cuda
def test_cli_eval_and_pretrain_device_cuda(tmp_path, fixture_dir):
    res = runner.invoke(app, ["eval", "--task", "eurosat", "--model", str(fixture_dir),
                              "--set", "device=cuda", "--no-progress"])  # fmt: skip
    _no_traceback(res, "device=")
    from tests.conftest import REPO_ROOT

    res = runner.invoke(app, ["pretrain", "--run-dir", str(tmp_path / "run"), "-c",
                              str(REPO_ROOT / "configs/pretrain/smoke.yaml"),
                              "train.device=cuda"])  # fmt: skip
    _no_traceback(res, "train.device")


@no_cuda
def test_finetune_train_device_cuda_is_named():
    import importlib

    finetune = importlib.import_module("geolatent.platform.finetune")  # the module
    assert finetune.resolve_device is runtime.resolve_device  # one device rule everywhere
    with pytest.raises(runtime.DeviceError, match="train.device 'cuda' asks for CUDA"):
        finetune.resolve_device("cuda", "train.device")
