"""Real data, used as a new user would: fine-tune on the eo-learn land-use polygons as shipped
(``LULC.gpkg``, its ``DATE`` column and all), predict over ``bbox.geojson`` as shipped (a GeoJSON
in UTM with a legacy ``crs`` member), and score the map on a held-out part of the patch.

The patch (EPSG:32633, 465181-466181 E, 5079245-5080255 N, 101 x 100 px at 10 m) is written as
five Sentinel-2 GeoTIFFs (L1C reflectance x 10000 = DN; B10 dropped by name) and declared as a
data-layer file source. The held-out part is the spatial split's ``test`` windows: the map is
scored there against the reference label raster, on pixels the imagery covers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from platform_fixtures import single_torch_thread  # noqa: F401

from geolatent.platform.classes import NODATA_CLASS
from geolatent.platform.config import FinetuneConfig
from geolatent.platform.finetune import REPORT_FILE, finetune
from geolatent.platform.metrics import class_metrics, format_class_report
from geolatent.platform.predict import predict_area

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12")
DATES = ("2015-08-20", "2015-07-31", "2015-09-09", "2015-08-30", "2015-07-11")  # array order
CRS = "EPSG:32633"
TRANSFORM = Affine(10.0, 0.0, 465181.0, 0.0, -10.0, 5080255.0)


@pytest.fixture(scope="module")
def eolearn(real_data: Path) -> Path:
    root = real_data / "eolearn"
    if not (root / "REFERENCE_SCENES.npy").exists():
        pytest.skip(f"eo-learn real data not found at {root} (needs ../shared/data/real)")
    return root


def _write_scenes(root: Path, folder: Path) -> None:
    scenes = np.load(root / "REFERENCE_SCENES.npy")  # [5, 101, 100, 13] reflectance 0-1
    keep = [i for i, b in enumerate(BANDS) if b != "B10"]  # B10 (cirrus) is not a model band
    folder.mkdir()
    for t, date in enumerate(DATES):
        data = np.moveaxis(scenes[t][..., keep] * 10000.0, -1, 0).astype(np.float32)
        with rasterio.open(folder / f"s2_{date}.tif", "w", driver="GTiff", width=100, height=101,
                           count=12, dtype="float32", crs=CRS, transform=TRANSFORM) as dst:
            dst.write(data)
            for i, k in enumerate(keep, start=1):
                dst.set_band_description(i, BANDS[k])


def _grid_cells(window: dict) -> tuple[np.ndarray, np.ndarray]:
    """Patch (row, col) of every pixel of a training window (global 10 m grid), inside the
    patch only."""
    c0, r0, c1, r1 = window["pixel_bounds"]
    rows, cols = np.mgrid[r0:r1, c0:c1]
    # global row = -y / 10; patch row = (5080255 - y) / 10 - 0.5 at pixel centres
    y = -(rows + 0.5) * 10.0
    x = (cols + 0.5) * 10.0
    pc, pr = ~TRANSFORM @ (x, y)
    pr, pc = np.floor(pr).astype(int).ravel(), np.floor(pc).astype(int).ravel()
    inside = (pr >= 0) & (pr < 101) & (pc >= 0) & (pc < 100)
    return pr[inside], pc[inside]


@pytest.mark.slow
def test_finetune_and_predict_eolearn_patch(eolearn: Path, fixture_dir: Path, tmp_path: Path):
    _write_scenes(eolearn, tmp_path / "s2")
    patch = eolearn / "TestEOPatch"
    cfg = FinetuneConfig.model_validate(dict(
        task="segmentation",
        encoder=str(fixture_dir),
        labels=dict(path=str(patch / "vector_timeless" / "LULC.gpkg"), field="LULC_ID",
                    ignore_values=[0], class_names=NAMES),
        sources=[dict(name="s2_l1c", type="files", modality="sentinel2_l2a",
                      paths=[str(tmp_path / "s2" / "s2_*.tif")],
                      bands=[b for b in BANDS if b != "B10"],
                      date_pattern=r"s2_(\d{4}-\d{2}-\d{2})\.tif", date_format="%Y-%m-%d")],
        windows=dict(size_px=16, start="2015-07-01", end="2015-10-01"),
        split=dict(cell_size_m=320, train=0.6, val=0.2, test=0.2, seed=SPLIT_SEED),
        # 8 validation windows give a noisy validation loss: a patient plateau schedule keeps
        # the learning rate long enough for the encoder to move (patience 2 cut it to ~1e-5
        # by epoch 10 and the map stayed one class).
        train=dict(epochs=30, freeze_epochs=2, batch_size=4, patch_size=4, lr=1e-3,
                   head_hidden=32, class_weighting="sqrt", plateau_patience=10),
        output=str(tmp_path / "model"),
    ))
    lines: list[str] = []
    result = finetune(cfg, log=lines.append)
    log = "\n".join(lines)
    print(log)
    # The DATE column (2017-2018 survey dates) is not taken as label time, and says so once.
    assert log.count("'DATE' looks like dates") == 1
    report = json.loads((Path(result.bundle_path) / REPORT_FILE).read_text())
    splits = report["splits"]
    assert set(splits) == {"train", "val", "test"}
    # Windows reach beyond the 100 x 101 px patch: their labelled pixels outside the imagery
    # are counted as dropped, never trained or scored on.
    lulc = np.load(patch / "mask_timeless" / "LULC.npy")[..., 0]
    used = sum(v["labelled_pixels"] for v in splits.values())
    dropped = sum(v["dropped_no_imagery"] for v in splits.values())
    assert dropped > 0 and 0 < used <= int((lulc != 0).sum()) * 2
    assert "labelled pixels used" in log and "dropped" in log

    # Predict over bbox.geojson exactly as shipped (UTM coordinates, legacy crs member).
    pred = predict_area(result.bundle_path, patch / "bbox.geojson", "2015-07-01", "2015-09-30",
                        tmp_path / "map.tif", crs=CRS)
    with rasterio.open(pred.path) as src:
        predicted = src.read(1)
        inv = ~src.transform
        values = json.loads(src.tags()["class_values"])
        classes = json.loads(src.tags()["class_names"])

    # Held-out part: the test windows' pixels inside the patch, scored against the reference
    # raster where it has a label (the imagery covers the whole patch).
    records = [r for r in json.loads((cfg.resolved_work_dir() / "index.json").read_text())
               ["records"] if r["split"] == "test"]
    assert records, "the spatial split left no test window"
    cells = {(int(r), int(c)) for rec in records for r, c in zip(*_grid_cells(rec["window"]),
                                                               strict=True)}
    pr, pc = (np.array(v) for v in zip(*sorted(cells), strict=True))
    truth = lulc[pr, pc]
    labelled = truth != 0
    x, y = TRANSFORM @ (pc + 0.5, pr + 0.5)
    mc, mr = inv @ (x, y)
    mr, mc = np.floor(mr).astype(int), np.floor(mc).astype(int)
    got = predicted[mr[labelled], mc[labelled]]
    assert (got != NODATA_CLASS).all()  # the map covers the held-out imagery
    index_of = {v: i for i, v in enumerate(values)}
    y_true = np.array([index_of.get(int(v), -1) for v in truth[labelled]])
    scores = class_metrics(y_true, got.astype(np.int64), classes)
    majority = float(np.bincount(y_true[y_true >= 0]).max() / (y_true >= 0).sum())
    print(f"\neo-learn held-out test windows: {int(labelled.sum())} labelled pixels, "
          f"always-majority accuracy {majority:.3f}")
    print(format_class_report(scores))
    assert scores["count"] > 300
    assert scores["accuracy"] > majority
    assert len(set(got.tolist())) >= 2


SPLIT_SEED = 0
NAMES = {"1": "cultivated land", "2": "forest", "3": "grassland", "4": "shrubland",
         "8": "artificial surface"}  # the LULC_NAME of each LULC_ID (see the data README)
