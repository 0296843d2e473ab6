"""The custom-dataset path: the user's own arrays or GeoTIFF chips + labels, evaluated by
``run_eval`` / ``geolatent eval --task my.yaml`` and named as the user names them.

Real data: 8 x 8 px chips of the eo-learn Slovenia patch (S2 L1C DN, 5 dates) with the
patch's land-use raster as labels (majority class per chip; per-pixel masks for segmentation).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from typer.testing import CliRunner

from geolatent.cli import app
from geolatent.evals import custom_task, knn_predict, linear_probe, load_custom_task, run_eval
from geolatent.evals.protocols.linear import LinearProbeConfig

BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
KEEP = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12]  # B10 (index 10) is not a model band
RAW_DATES = ["2015-08-20", "2015-07-31", "2015-09-09", "2015-08-30", "2015-07-11"]  # file order
ORDER = sorted(range(len(RAW_DATES)), key=RAW_DATES.__getitem__)  # the model takes dates in order
DATES = [RAW_DATES[i] for i in ORDER]
FAST = {"n_boot": 50, "linear": {"epochs": 5, "lr": 0.05, "batch_size": 16}}


def _eolearn(real: Path) -> tuple[np.ndarray, np.ndarray]:
    """``x`` [144, 8, 8, 5, 12] DN chips and ``masks`` [144, 8, 8] land-use ids 0..4
    (-1: no label)."""
    root = real / "eolearn"
    if not (root / "REFERENCE_SCENES.npy").exists():
        pytest.skip(f"eo-learn real data not found at {root}")
    scenes = np.load(root / "REFERENCE_SCENES.npy")[ORDER][..., KEEP] * 10000.0  # [5, 101, 100, 12]
    lulc = np.load(root / "TestEOPatch" / "mask_timeless" / "LULC.npy")[..., 0]
    ids = {v: i for i, v in enumerate([0, 1, 2, 3, 4, 8])}
    lut = np.zeros(9, dtype=np.int64)
    for v, i in ids.items():
        lut[v] = i - 1  # 0 (no data) -> -1 (ignored)
    x, m = [], []
    for r in range(0, 96, 8):
        for c in range(0, 96, 8):
            x.append(np.moveaxis(scenes[:, r : r + 8, c : c + 8], 0, 2))
            m.append(lut[lulc[r : r + 8, c : c + 8]])
    return np.stack(x).astype(np.float32), np.stack(m)


def _majority(masks: np.ndarray) -> np.ndarray:
    return np.array([np.bincount(mk[mk >= 0].ravel(), minlength=5).argmax() for mk in masks])


@pytest.mark.slow
def test_arrays_classification_segmentation_and_regression(real_data: Path, nano,
                                                           tmp_path: Path):
    x, masks = _eolearn(real_data)
    x, masks = x[:48], masks[:48]  # rows 0-31 of the patch: enough for the path, and fast
    y = _majority(masks)
    tr, te = np.arange(len(x)) % 3 != 0, np.arange(len(x)) % 3 == 0
    common = dict(bands=BANDS, dates=DATES, num_classes=5,
                  class_names=["cultivated", "forest", "grassland", "shrubland", "artificial"])
    cls = custom_task("my-lulc", "classification", train=(x[tr], y[tr]), test=(x[te], y[te]),
                      **common)
    res = run_eval(cls, nano, "knn", seeds=1, progress=False, settings=FAST,
                   cache=tmp_path / "c")[0]
    assert res.task == "my-lulc" and res.task_type == "classification"
    assert res.n_train == int(tr.sum()) and res.n_test == int(te.sum())
    assert 0 <= res.primary.mean <= 1

    seg = custom_task("my-lulc-pixels", "segmentation", train=(x[tr], masks[tr]),
                      test=(x[te], masks[te]), **common)
    res = run_eval(seg, nano, "linear", seeds=1, progress=False, settings=FAST,
                   cache=tmp_path / "c")[0]
    assert res.task == "my-lulc-pixels" and res.primary_metric == "miou"

    # Regression: the chip's mean NIR-red difference (a vegetation index) as the target.
    target = (x[..., 7] - x[..., 3]).mean(axis=(1, 2, 3)) / 1000
    reg = custom_task("my-vigour", "regression", train=(x[tr], target[tr]),
                      test=(x[te], target[te]), bands=BANDS, dates=DATES)
    res = run_eval(reg, nano, "knn", seeds=1, progress=False, settings=FAST,
                   cache=tmp_path / "c")[0]
    assert res.task == "my-vigour" and res.primary_metric == "rmse"


def test_argument_errors_name_the_argument():
    x = np.full((4, 8, 8, 1, 4), 1000.0, np.float32)
    y = np.array([0, 1, 0, 1])
    bands = ["B02", "B03", "B04", "B08"]
    with pytest.raises(ValueError, match=r"train\[0\] \(x_train\) has 4 bands .* `bands` names 3"):
        custom_task("t", "classification", train=(x, y), test=(x, y), bands=bands[:3])
    with pytest.raises(ValueError, match=r"test\[1\] \(y_test\) has 3 labels for 4 samples"):
        custom_task("t", "classification", train=(x, y), test=(x, y[:3]), bands=bands)
    with pytest.raises(ValueError, match="num_classes is 2.*task_type='regression'"):
        custom_task("t", "classification", train=(x, np.array([31, 80, 2, 319])),
                    test=(x, y), bands=bands, num_classes=2)
    with pytest.raises(ValueError, match="task_type must be one of"):
        custom_task("t", "multiclass", train=(x, y), test=(x, y), bands=bands)
    feats = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="pass x_val and y_val"):
        linear_probe(feats, y, feats, "classification", 2, LinearProbeConfig(lr=[1e-3, 1e-2]))
    with pytest.raises(ValueError, match="train_y holds class ids 2..319.*task_type='regression'"):
        knn_predict(feats, np.array([31, 80, 2, 319]), feats, "classification", num_classes=5)
    assert "task_type" in knn_predict.__doc__


def _write_chip(path: Path, chip: np.ndarray) -> None:
    """A [H, W, T, C] chip as a GeoTIFF (dates' bands one after another), EPSG:32633."""
    h, w, t, c = chip.shape
    data = np.moveaxis(chip.reshape(h, w, t * c), -1, 0)
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=t * c,
                       dtype="float32", crs="EPSG:32633",
                       transform=Affine(10, 0, 465181, 0, -10, 5080255)) as dst:
        dst.write(data)


@pytest.mark.slow
def test_geotiff_chips_through_the_cli(real_data: Path, tmp_path: Path):
    x, masks = _eolearn(real_data)
    y = _majority(masks)
    for split, rows in (("train", range(0, 32)), ("test", range(32, 48))):
        with (tmp_path / f"{split}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "label"])
            for i in rows:
                _write_chip(tmp_path / f"chip_{i}.tif", x[i])
                w.writerow([f"chip_{i}.tif", int(y[i])])
    spec = tmp_path / "my_lulc.yaml"
    spec.write_text(yaml.safe_dump(dict(
        name="slovenia-lulc", task_type="classification", modality="sentinel2_l2a", bands=BANDS,
        dates=DATES, num_classes=5, chips={"train": "train.csv", "test": "test.csv"})))
    task = load_custom_task(spec)
    assert task.name == "slovenia-lulc"
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["eval", "--task", str(spec), "--random-init", "nano",
                                 "--protocol", "knn", "--seeds", "1", "--no-progress",
                                 "--set", "n_boot=50", "--cache-dir", str(tmp_path / "c"),
                                 "--out", str(out)], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "| slovenia-lulc | random-nano | knn |" in r.output
    assert (out / "results.json").exists()

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(dict(name="x", task_type="classification", arrays="none.npz")))
    with pytest.raises(FileNotFoundError, match="none.npz"):
        load_custom_task(bad)
