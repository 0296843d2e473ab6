"""Fine-tuning end to end: config file, CLI, recipe, model folder, then prediction from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
import yaml
from platform_fixtures import (  # noqa: F401
    s2_source,
    scene_box,
    single_torch_thread,
    write_scene,
)
from pydantic import ValidationError
from pyogrio import raw
from sample_scene import write_point_labels
from shapely.geometry import shape
from typer.testing import CliRunner

from geolatent.cli import app
from geolatent.data.io.cog import is_cloud_optimized
from geolatent.data.synthetic import CLASS_NAMES
from geolatent.data.window import WGS84, reproject_geometry
from geolatent.platform.bundle import load_bundle
from geolatent.platform.config import FinetuneConfig, load_finetune_config
from geolatent.platform.finetune import class_weights, finetune
from geolatent.platform.predict import predict_area

FAST_TRAIN = dict(epochs=2, batch_size=8, patch_size=8, lr=2e-3, head_hidden=16)


def _label_polygons_gpkg(scene, path: Path) -> Path:
    """The scene's land-cover map as polygons (GeoPackage, in the scene's UTM CRS)."""
    shapes = [(shape(g), int(v)) for g, v in
              rasterio.features.shapes(scene.labels, transform=scene.transform)]
    raw.write(path, np.array(shapely.to_wkb([g for g, _ in shapes]), dtype=object),
              [np.array([v for _, v in shapes])], ["lc"], driver="GPKG",
              geometry_type="Polygon", crs=scene.crs.to_string())
    return path


def test_cli_segmentation_finetune_then_predict(tmp_path: Path):
    scene = write_scene(tmp_path / "scene", height=64, width=64, timesteps=2, seed=5)
    _label_polygons_gpkg(scene, tmp_path / "labels.gpkg")
    cfg = {
        "task": "segmentation",
        "encoder": "nano",
        "labels": {"path": "labels.gpkg", "field": "lc",
                   "class_names": {str(i): n for i, n in enumerate(CLASS_NAMES)}},
        "sources": [dict(s2_source(Path("scene")))],
        "windows": {"size_px": 16, "start": "2024-01-01", "end": "2024-03-01"},
        "split": {"cell_size_m": 160, "train": 0.6, "val": 0.4, "test": 0.0},
        "train": FAST_TRAIN,
        "output": "model",
    }
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    res = runner.invoke(app, ["finetune", "--config", str(tmp_path / "ft.yaml")])
    assert res.exit_code == 0, res.output
    assert "(encoder frozen)" in res.output and "val miou" in res.output
    fm = load_bundle(tmp_path / "model")
    assert fm.task.type == "segmentation" and fm.inputs.patch_size == 8
    assert fm.classes.names[0] == CLASS_NAMES[fm.classes.values[0]]
    hist = fm.metrics["history"]
    assert [h["frozen"] for h in hist] == [True, False]
    assert fm.metrics["best_epoch"] in (0, 1) and "per_class" in fm.metrics["val"]
    assert fm.sources and fm.sources[0]["paths"][0].startswith(str(tmp_path))  # absolute

    area = scene_box(scene, inset_px=2)
    (tmp_path / "aoi.geojson").write_text(json.dumps(shapely.geometry.mapping(area)))
    res = runner.invoke(app, [
        "predict", "--model", str(tmp_path / "model"), "--aoi", str(tmp_path / "aoi.geojson"),
        "--start", "2024-01-01", "--end", "2024-02-29", "-o", str(tmp_path / "map.tif"),
        "--vector", str(tmp_path / "map.geojson"),
    ])
    assert res.exit_code == 0, res.output
    assert is_cloud_optimized(tmp_path / "map.tif")[0]
    with rasterio.open(tmp_path / "map.tif") as src:
        assert json.loads(src.tags()["class_names"]) == list(fm.classes.names)
        assert (src.read(1) != 255).mean() > 0.8
    names = {f["properties"]["name"] for f in
             json.loads((tmp_path / "map.geojson").read_text())["features"]}
    assert names <= set(CLASS_NAMES)


def test_point_classification_with_class_weights_and_test_split(tmp_path: Path):
    scene = write_scene(tmp_path / "scene", height=64, width=64, timesteps=2, seed=6)
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(4, 60, 60), rng.integers(4, 60, 60)
    write_point_labels(scene, tmp_path / "points.csv", rows, cols, lambda k: CLASS_NAMES[k])
    cfg = FinetuneConfig.model_validate(dict(
        task="classification", encoder="nano",
        labels=dict(path=str(tmp_path / "points.csv"), field="landcover"),
        sources=[s2_source(tmp_path / "scene")],
        windows=dict(size_px=16, start="2024-01-01", end="2024-03-01"),
        split=dict(cell_size_m=160, train=0.6, val=0.2, test=0.2, seed=1),
        train=dict(FAST_TRAIN, class_weighting="balanced", epochs=3, freeze_epochs=1),
        output=str(tmp_path / "model"),
    ))
    log: list[str] = []
    result = finetune(cfg, log=log.append)
    data = result.data
    assert data is not None and all(v > 0 for v in data.counts().values())
    w = class_weights(data, data.classes, "balanced")
    assert w is not None and abs(float(w[w > 0].mean()) - 1) < 1e-5
    assert len(result.history) == 3 and result.history[0]["frozen"]
    assert not result.history[1]["frozen"]
    assert "accuracy" in result.test and any(line.startswith("test accuracy") for line in log)
    fm = load_bundle(result.bundle_path)
    assert fm.head_spec.kind == "pooled" and fm.metrics["test"]["count"] == data.counts()["test"]
    # A window classifier maps an area by sliding its 16 px crops.
    out = predict_area(fm, scene_box(scene, inset_px=8), "2024-01-01", "2024-02-29",
                       tmp_path / "map.tif")
    with rasterio.open(out.path) as src:
        assert (src.read(1) != 255).mean() > 0.8


def test_regression_from_polygons(tmp_path: Path):
    scene = write_scene(tmp_path / "scene", height=48, width=48, timesteps=1, seed=7)
    feats = []
    for g, v in rasterio.features.shapes(scene.labels, transform=scene.transform):
        geom = reproject_geometry(shape(g), scene.crs.to_string(), WGS84)
        feats.append({"type": "Feature", "geometry": shapely.geometry.mapping(geom),
                      "properties": {"height_m": 3.0 * int(v) + 1.0}})
    (tmp_path / "h.geojson").write_text(json.dumps({"type": "FeatureCollection",
                                                     "features": feats}))
    cfg = FinetuneConfig.model_validate(dict(
        task="pixel_regression", encoder="nano",
        labels=dict(path=str(tmp_path / "h.geojson"), field="height_m"),
        sources=[s2_source(tmp_path / "scene")],
        windows=dict(size_px=16, start="2024-01-01", end="2024-02-01"),
        split=dict(cell_size_m=160, train=0.6, val=0.4, test=0.0),
        train=dict(FAST_TRAIN, epochs=1),
        output=str(tmp_path / "model"),
    ))
    result = finetune(cfg)
    assert result.metric == "rmse" and np.isfinite(result.best_metric)
    fm = load_bundle(result.bundle_path)
    assert fm.task.target_std > 0 and 1.0 <= fm.task.target_mean <= 16.0
    out = predict_area(fm, scene_box(scene, inset_px=4), "2024-01-01", "2024-01-31",
                       tmp_path / "h.tif")
    with rasterio.open(out.path) as src:
        values = src.read(1)
        assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
    assert np.isfinite(values).mean() > 0.8


def test_config_paths_are_relative_to_the_file(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ft.yaml").write_text(yaml.safe_dump({
        "task": "classification", "encoder": "../ckpt", "labels": {"path": "l.csv"},
        "sources": [s2_source(Path("imgs"))], "output": "out",
    }))
    cfg = load_finetune_config(tmp_path / "sub" / "ft.yaml")
    assert cfg.labels.path == str(tmp_path / "sub" / "l.csv")
    assert cfg.encoder == str(tmp_path / "ckpt") and cfg.output == str(tmp_path / "sub" / "out")
    assert cfg.sources[0].paths[0] == str(tmp_path / "sub" / "imgs" / "sentinel2_l2a_*.tif")
    assert cfg.resolved_work_dir() == Path(str(tmp_path / "sub" / "out") + ".work")


def test_example_config_is_valid():
    path = Path(__file__).resolve().parents[2] / "configs" / "finetune" / "example.yaml"
    cfg = load_finetune_config(path)
    assert cfg.task == "segmentation" and cfg.crop_size == 64
    assert cfg.train.frozen_epochs() == 6 and cfg.labels.classes[0] == "cropland"


def test_embedding_is_not_a_finetuning_task(tmp_path: Path):
    """Embedding maps come from a plain model (``embed`` / ``predict`` with a release), not
    from a fine-tuning task: ``task: embedding`` is refused, naming the tasks there are."""
    with pytest.raises(ValidationError, match="classification.*pixel_regression"):
        FinetuneConfig.model_validate(dict(
            task="embedding", encoder="nano", sources=[s2_source(tmp_path / "scene")],
            output=str(tmp_path / "emb")))
