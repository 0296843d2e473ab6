"""Benchmark adapters on small files written here in each benchmark's distributed layout."""

import datetime as dt
import json

import h5py
import numpy as np
import pytest
import rasterio
from affine import Affine

from geolatent.evals.datasets import (
    MADOS,
    PASTIS,
    BreizhCrops,
    CropHarvest,
    DatasetNotFoundError,
    EuroSATMS,
    Sen1Floods11,
)
from geolatent.evals.datasets.base import monthly_composite
from geolatent.modalities import MISSING_VALUE


def write_tif(path, data: np.ndarray, crs="EPSG:32633"):
    """``data`` ``[C, H, W]`` or ``[H, W]`` as a GeoTIFF."""
    data = data[None] if data.ndim == 2 else data
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2],
                       count=data.shape[0], dtype=data.dtype, crs=crs,
                       transform=Affine(10, 0, 500000, 0, -10, 5000000)) as dst:  # fmt: skip
        dst.write(data)


def test_data_root_env_and_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("GEOLATENT_DATA_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError, match="GEOLATENT_DATA_DIR"):
        MADOS()
    monkeypatch.setenv("GEOLATENT_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        MADOS()
    (tmp_path / "mados").mkdir()
    with pytest.raises(DatasetNotFoundError, match="splits"):
        MADOS()


def test_mados(tmp_path):
    scene = tmp_path / "Scene_3"
    # S2A / S2B wavelength spellings; 10 m at 240 px, 20 m at 120, 60 m at 40
    wl = {10: [492, 559, 665, 833], 20: [704, 739, 780, 864, 1610, 2186], 60: [443]}
    for res, nms in wl.items():
        size = 240 * 10 // res
        for nm in nms:
            a = np.full((size, size), nm / 10000.0, np.float32)
            a[0, 0] = np.nan
            write_tif(scene / str(res) / f"Scene_3_L2R_rhorc_{nm}_1.tif", a)
    cl = np.zeros((240, 240), np.uint8)
    cl[100:110, 100:110] = 6  # oil spill
    write_tif(scene / "10" / "Scene_3_L2R_cl_1.tif", cl)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "test_X.txt").write_text("Scene_3_1\n")
    ds = MADOS(tmp_path)
    s = ds.split("test")
    assert len(s) == 9 and s.labels.shape == (9, 80, 80)
    assert set(np.unique(s.labels[4])) == {-1, 5}  # centre tile: class 6 -> 5, 0 -> ignore
    b = s.load([0, 4])
    names = b.bands["sentinel2_l2a"]
    assert "B01" not in names and len(names) == 10  # [B01, B09] incomplete -> masked
    x = b.inputs["sentinel2_l2a"]
    assert x.shape == (2, 80, 80, 1, 10) and x[0, 0, 0, 0, 0] == MISSING_VALUE
    np.testing.assert_allclose(x[1, 5, 5, 0, names.index("B8A")], 864, rtol=1e-5)
    np.testing.assert_allclose(x[1, 5, 5, 0, names.index("B12")], 2186, rtol=1e-5)


def test_sen1floods11(tmp_path):
    base = tmp_path / "v1.1"
    hand = base / "data" / "flood_events" / "HandLabeled"
    s1 = np.stack([np.full((128, 128), -12.0, np.float32), np.full((128, 128), -20.0, np.float32)])
    s1[:, :3, :3] = np.nan
    write_tif(hand / "S1Hand" / "Bolivia_1_S1Hand.tif", s1)
    lab = np.zeros((128, 128), np.int16)
    lab[64:, :] = 1
    lab[:2, :2] = -1
    write_tif(hand / "LabelHand" / "Bolivia_1_LabelHand.tif", lab)
    (base / "splits" / "flood_handlabeled").mkdir(parents=True)
    (base / "splits" / "flood_handlabeled" / "flood_valid_data.csv").write_text(
        "Bolivia_1_S1Hand.tif,Bolivia_1_LabelHand.tif\n"
    )
    meta = {"features": [{"properties": {"location": "Bolivia", "s1_date": "2018-02-15"}}]}
    (base / "Sen1Floods11_Metadata.geojson").write_text(json.dumps(meta))
    ds = Sen1Floods11(tmp_path)
    s = ds.split("val")
    assert len(s) == 4 and s.labels[0, 0, 0] == -1 and s.labels[2].min() == 1
    b = s.load([0])
    assert b.bands == {"sentinel1": ["vv", "vh"]}
    assert b.inputs["sentinel1"][0, 0, 0, 0, 0] == MISSING_VALUE
    assert b.inputs["sentinel1"][0, 10, 10, 0].tolist() == [-12.0, -20.0]
    assert b.timestamps.tolist() == [[[15, 1, 2018]]]


def test_monthly_composite_median_and_missing():
    dates = [dt.date(2019, 1, 3), dt.date(2019, 1, 20), dt.date(2019, 1, 28), dt.date(2019, 3, 1)]
    v = np.array([[1.0], [5.0], [MISSING_VALUE], [7.0]], np.float32)  # [T, C]
    out = monthly_composite(v, dates, [(2019, 1), (2019, 2), (2019, 3)])
    assert out[:, 0].tolist() == [3.0, MISSING_VALUE, 7.0]


def test_pastis(tmp_path):
    for d in ("DATA_S2", "DATA_S1A", "ANNOTATIONS"):
        (tmp_path / d).mkdir()
    s2_dates = {"0": 20180924, "1": 20181004, "2": 20190115}
    s1_dates = {"0": 20180920, "1": 20190110}
    s2 = np.stack([np.full((10, 128, 128), v, np.int16) for v in (1000, 2000, 3000)])
    np.save(tmp_path / "DATA_S2" / "S2_10000.npy", s2)
    np.save(tmp_path / "DATA_S1A" / "S1A_10000.npy", np.full((2, 3, 128, 128), -11.0, np.float32))
    target = np.zeros((3, 128, 128), np.uint8)
    target[0, :64] = 4
    target[0, :4, :4] = 19  # void
    np.save(tmp_path / "ANNOTATIONS" / "TARGET_10000.npy", target)
    meta = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": None,
            "properties": {"ID_PATCH": 10000, "Fold": 5, "dates-S2": s2_dates,
                           "dates-S1A": json.dumps(s1_dates)}}]}  # fmt: skip
    (tmp_path / "metadata.geojson").write_text(json.dumps(meta))
    ds = PASTIS(tmp_path, modalities=("sentinel2_l2a", "sentinel1"))
    s = ds.split("test")
    assert len(s) == 4 and s.labels[0, 0, 0] == -1 and s.labels[0, 10, 10] == 4
    b = s.load([0])
    x2 = b.inputs["sentinel2_l2a"]
    assert x2.shape == (1, 64, 64, 12, 10) and len(b.bands["sentinel2_l2a"]) == 10
    # Sep 2018 -> 1000; Oct -> 2000; Jan 2019 -> 3000; other months missing
    assert x2[0, 0, 0, :5, 0].tolist() == [1000, 2000, MISSING_VALUE, MISSING_VALUE, 3000]
    assert b.inputs["sentinel1"][0, 0, 0, 0].tolist() == [-11.0, -11.0]
    assert b.timestamps[0, :, 1].tolist() == [8, 9, 10, 11, 0, 1, 2, 3, 4, 5, 6, 7]
    assert ds.split("train").labels.shape == (0, 64, 64)  # no fold 1-3 patch here


def test_breizhcrops(tmp_path):
    (tmp_path / "classmapping.csv").write_text(
        ",id,classname,code\n0,0,barley,BPH\n1,1,wheat,BTH\n2,1,wheat,BTN\n"
    )
    d = tmp_path / "2017" / "L2A"
    d.mkdir(parents=True)
    (d / "frh04.csv").write_text(
        ",idx,CODE_CULTU,path,meanCLD,sequencelength\n"
        "0,0,BPH,csv/frh04/1.csv,0,3\n1,1,BTN,csv/frh04/2.csv,0,3\n2,2,XXX,csv/frh04/3.csv,0,3\n"
    )
    cols = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12", "CLD", "EDG", "SAT",
            "doa"]  # fmt: skip
    doa = [np.datetime64(s, "ns").astype(np.int64) for s in ("2017-03-05", "2017-03-25",
                                                             "2017-07-01")]  # fmt: skip
    with h5py.File(d / "frh04.h5", "w") as f:
        for i, key in enumerate(("csv/frh04/1.csv", "csv/frh04/2.csv")):
            x = np.zeros((3, len(cols)))
            x[:, :10] = [[100 + i], [300 + i], [5000]]
            x[:, cols.index("CLD")] = [0, 0, 90]  # the July observation is cloudy
            x[:, -1] = doa
            f.create_dataset(key, data=x)
    ds = BreizhCrops(tmp_path)
    s = ds.split("test")
    assert s.labels.tolist() == [0, 1] and ds.num_classes == 2
    b = s.load([0, 1])
    x = b.inputs["sentinel2_l2a"]
    assert x.shape == (2, 1, 1, 12, 10) and "B01" not in b.bands["sentinel2_l2a"]
    assert x[1, 0, 0, 2, 0] == 301 / 2 + 101 / 2  # March median
    assert x[0, 0, 0, 6, 0] == MISSING_VALUE  # July dropped (cloud), no other acquisition


def test_cropharvest(tmp_path):
    arrays = tmp_path / "features" / "arrays"
    arrays.mkdir(parents=True)
    feats = []
    for i, (crop, test) in enumerate([(1, False), (0, False), (1, True), (0, False), (1, False)]):
        a = np.zeros((12, 18), np.float32)
        a[:, :2] = [-10, -17]
        a[:, 2:13] = 1500 + i
        with h5py.File(arrays / f"{i}_togo.h5", "w") as f:
            f.create_dataset("array", data=a)
        feats.append({"type": "Feature", "geometry": None, "properties": {
            "index": i, "dataset": "togo", "is_crop": crop, "is_test": test,
            "export_end_date": "2020-02-01", "lat": 8.0, "lon": 1.0}})  # fmt: skip
    (tmp_path / "labels.geojson").write_text(json.dumps({"features": feats}))
    ds = CropHarvest(tmp_path, val_fraction=0.25)
    assert ds.split("test").labels.tolist() == [1]
    assert len(ds.split("train")) + len(ds.split("val")) == 4
    b = ds.split("test").load([0])
    assert b.bands["sentinel1"] == ["vv", "vh"] and len(b.bands["sentinel2_l2a"]) == 10
    assert b.inputs["sentinel2_l2a"].shape == (1, 1, 1, 12, 10)
    # 12 x 30 days ending 2020-02-01: first step centred in early Feb 2019
    assert b.timestamps[0, 0].tolist() == [21, 1, 2019]


def test_eurosat_ms_geotiff_folders(tmp_path):
    root = tmp_path / "ds" / "images" / "remote_sensing" / "otherDatasets" / "sentinel_2" / "tif"
    for c, cls in enumerate(("AnnualCrop", "Forest", "SeaLake")):
        for i in range(5):
            data = np.stack([np.full((64, 64), 100 * (b + 1) + c, np.uint16) for b in range(13)])
            write_tif(root / cls / f"{cls}_{i + 1}.tif", data)
    ds = EuroSATMS(tmp_path)
    parts = [ds.split(n) for n in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == 15 and set(parts[0].labels) == {0, 1, 9}
    b = parts[0].load([0])
    names = b.bands["sentinel2_l2a"]
    x = b.inputs["sentinel2_l2a"][0, 0, 0, 0]
    # channel 13 is B8A, channel 10 (B10) is dropped
    assert names[-1] == "B8A" and "B10" not in names and x[-1] // 100 == 13
    (tmp_path / "eurosat-test.txt").write_text("Forest_2.jpg\nSeaLake_5.jpg\n")
    assert sorted(ds.split("test").sample_ids) == ["Forest_2", "SeaLake_5"]
