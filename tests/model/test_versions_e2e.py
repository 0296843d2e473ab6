"""Every model version downstream, on the built-in sample scene: ``geolatent embed --model``,
fine-tuning from a release folder, then ``predict_area`` with the fine-tuned model."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import rasterio
import torch
from sample_scene import S2, s2_source, scene_box, write_point_labels
from typer.testing import CliRunner

from geolatent.cli import app
from geolatent.data.synthetic import make_sample_scene, write_scene_geotiffs
from geolatent.model.checkpoint import export_release_folder
from geolatent.model.latent_mim import build_model
from geolatent.platform.bundle import load_bundle
from geolatent.platform.config import FinetuneConfig
from geolatent.platform.finetune import finetune
from geolatent.platform.predict import predict_area

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    scene = make_sample_scene(48, 48, timesteps=2, seed=3)
    files = write_scene_geotiffs(scene, folder)
    return scene, folder, files


def _release(tmp_path, version):
    torch.manual_seed(0)
    return export_release_folder(build_model("nano", version).eval(), tmp_path / f"rel-{version}")


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v1", "v1.1", "v1.2", "v1.3"])
def test_embed_finetune_predict_with_every_version(tmp_path, scene, version):
    scene, folder, files = scene
    rel = _release(tmp_path, version)

    out = tmp_path / "emb.tif"
    args = ["embed", "--out", str(out), "--model", str(rel), "--patch-size", "4"]
    for opt, m in (("--s2", S2), ("--s1", "sentinel1")):
        for p in files[m]:
            args += [opt, str(p)]
        args += [f"{opt}-dates", ",".join(d.isoformat() for d in scene.dates)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as src:
        emb = src.read()
        provenance = json.loads(src.tags()["model_provenance"])
    assert emb.shape[0] == 128 and np.isfinite(emb).all()
    digest = hashlib.sha256((rel / "weights.pth").read_bytes()).hexdigest()
    assert provenance["sha256"] == digest and provenance["version"] == version

    rng = np.random.default_rng(1)
    rows, cols = rng.integers(4, 44, 40), rng.integers(4, 44, 40)
    write_point_labels(scene, tmp_path / "points.csv", rows, cols)
    cfg = FinetuneConfig.model_validate(dict(
        task="classification", encoder=str(rel),
        labels=dict(path=str(tmp_path / "points.csv"), field="landcover"),
        sources=[s2_source(folder)],
        windows=dict(size_px=16, start=scene.dates[0].isoformat(), end="2024-03-01"),
        split=dict(cell_size_m=160, train=0.7, val=0.3, test=0.0, seed=1),
        train=dict(epochs=2, batch_size=8, patch_size=8, lr=2e-3, head_hidden=16),
        output=str(tmp_path / "model"),
    ))  # fmt: skip
    result = finetune(cfg)
    fm = load_bundle(result.bundle_path)
    assert fm.model.encoder.model_config.version == version
    assert fm.extra["encoder_provenance"]["sha256"] == digest  # the bundle says which weights
    mapped = predict_area(fm, scene_box(scene, 8), scene.dates[0].isoformat(), "2024-02-29",
                          tmp_path / "map.tif")  # fmt: skip
    with rasterio.open(mapped.path) as src:
        assert (src.read(1) != 255).mean() > 0.8


@pytest.mark.parametrize("version", ["v1", "v1.1", "v1.2", "v1.3"])
def test_evals_with_every_version(tmp_path, scene, version):
    """kNN and the linear probe on chips of the sample scene, from a release folder of each
    version (the same evaluation path as the benchmarks)."""
    from geolatent.evals import custom_task, run_eval

    scene, _, _ = scene
    rel = _release(tmp_path, version)
    s2 = scene.modalities[S2].astype(np.float32)  # [H, W, T, C] DN
    chips = np.stack([s2[r:r + 8, c:c + 8] for r in range(0, 48, 8) for c in range(0, 48, 8)])
    labels = np.array([np.bincount(scene.labels[r:r + 8, c:c + 8].ravel()).argmax()
                       for r in range(0, 48, 8) for c in range(0, 48, 8)])
    task = custom_task("sample-chips", "classification", train=(chips[::2], labels[::2]),
                       test=(chips[1::2], labels[1::2]),
                       dates=[d.isoformat() for d in scene.dates], num_classes=6)
    for protocol in ("knn", "linear"):
        (res,) = run_eval(task, str(rel), protocol=protocol, seeds=1, progress=False,
                          cache=tmp_path / "cache",
                          settings={"n_boot": 20, "linear": {"epochs": 3}})
        assert res.task == "sample-chips" and res.model["checkpoint"] == str(rel)
        assert 0.0 <= res.primary.mean <= 1.0
