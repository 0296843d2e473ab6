"""GEO-Bench adapters, on the real m-eurosat sample and on small files written here in GEO-Bench's
exact HDF5 layout (per-band datasets, ``attrs["pickle"] = str(pickle.dumps(attrs))`` whose band
infos are ``geobench.dataset`` objects)."""

import datetime as dt
import json
import os
import pickle
import shutil
import sys
import types

import h5py
import numpy as np
import pytest

from geolatent.evals.datasets.geobench import GeoBench, read_attrs
from geolatent.normalize import band_affine


@pytest.fixture
def fake_geobench(monkeypatch):
    """A stand-in ``geobench.dataset`` module so the test can pickle objects of its classes
    (the adapter itself never imports geobench)."""
    mod = types.ModuleType("geobench.dataset")
    for name in ("Sentinel2", "Sentinel1", "Landsat8", "SegmentationClasses"):
        cls = type(name, (), {"__init__": lambda self, n=None: setattr(self, "name", n)})
        cls.__module__ = "geobench.dataset"
        setattr(mod, name, cls)
    monkeypatch.setitem(sys.modules, "geobench", types.ModuleType("geobench"))
    monkeypatch.setitem(sys.modules, "geobench.dataset", mod)
    return mod


def write_sample(folder, name, bands: dict[str, np.ndarray], label, mod, sensor="Sentinel2",
                 dates: dict[str, dt.date] | None = None):  # fmt: skip
    """One GEO-Bench sample file; ``bands`` maps dataset key -> 2-D array."""
    attrs, order = {}, []
    with h5py.File(folder / f"{name}.hdf5", "w") as f:
        for key, data in bands.items():
            f.create_dataset(key, data=data)
            date = (dates or {}).get(key)
            info = getattr(mod, "SegmentationClasses" if key == "label" else sensor)(key)
            attrs[key] = {"date": date, "date_id": date, "spatial_resolution": 10,
                          "band_info": info, "meta_info": None, "transform": None, "crs": None}
            order.append(key)
        attrs["bands_order"] = order
        if not isinstance(label, str):
            attrs["label"] = label
        f.attrs["pickle"] = str(pickle.dumps(attrs))


def partition(folder, train, test, valid=()):
    (folder / "default_partition.json").write_text(
        json.dumps({"train": list(train), "valid": list(valid), "test": list(test)})
    )


S2_KEYS = ["01 - Coastal aerosol", "02 - Blue", "03 - Green", "04 - Red",
           "05 - Vegetation Red Edge", "06 - Vegetation Red Edge", "07 - Vegetation Red Edge",
           "08 - NIR", "08A - Vegetation Red Edge", "09 - Water vapour", "10 - SWIR - Cirrus",
           "11 - SWIR", "12 - SWIR"]  # fmt: skip


def test_real_m_eurosat_sample_band_trap(tmp_path, real_data):
    src = real_data / "geobench_m_eurosat" / "id_1905.hdf5"
    folder = tmp_path / "classification_v1.0" / "m-eurosat"
    folder.mkdir(parents=True)
    shutil.copy(src, folder)
    partition(folder, ["id_1905"], ["id_1905"])
    ds = GeoBench("m-eurosat", root=tmp_path)  # a parent of the dataset folder works too
    split = ds.split("train")
    assert split.labels.tolist() == [1]
    b = split.load([0])
    names = b.bands["sentinel2_l2a"]
    x = b.inputs["sentinel2_l2a"]
    assert x.shape == (1, 64, 64, 1, 12) and "B10" not in names
    with h5py.File(src) as f:
        # the trap: key "12 - SWIR" holds B8A, "08A ..." holds B09, "10 - SWIR - Cirrus" B11
        np.testing.assert_array_equal(x[0, :, :, 0, names.index("B8A")], f["12 - SWIR"][:])
        np.testing.assert_array_equal(x[0, :, :, 0, names.index("B09")],
                                      f["08A - Vegetation Red Edge"][:])  # fmt: skip
        np.testing.assert_array_equal(x[0, :, :, 0, names.index("B11")], f["10 - SWIR - Cirrus"][:])
        np.testing.assert_array_equal(x[0, :, :, 0, names.index("B12")], f["11 - SWIR"][:])
        # B10 (cirrus, key "09") is the near-zero band and is not handed over
        assert f["09 - Water vapour"][:].mean() < 50
    assert ds.split_names == ("train", "test")


def test_read_attrs_is_inert(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    with h5py.File(tmp_path / "x.hdf5", "w") as f:
        f.attrs["pickle"] = str(pickle.dumps({"label": 3, "x": Evil()}))
    with h5py.File(tmp_path / "x.hdf5") as f:
        attrs = read_attrs(f)
    assert attrs["label"] == 3 and not (tmp_path / "pwned").exists()


def test_brick_kiln_channel_order_and_incomplete_bandsets(tmp_path, fake_geobench):
    folder = tmp_path / "m-brick-kiln"
    folder.mkdir()
    bands = {k: np.full((8, 8), 100 * (i + 1), np.int16) for i, k in enumerate(S2_KEYS)}
    write_sample(folder, "s0", bands, 1, fake_geobench)
    partition(folder, ["s0"], ["s0"])
    ds = GeoBench("m-brick-kiln", root=folder)
    b = ds.split("test").load([0])
    # key "08 - NIR" (8th) holds B08; key "07" holds B8A; no B06 / B09 -> only the 10 m bandset
    assert b.bands["sentinel2_l2a"] == ["B02", "B03", "B04", "B08"]
    np.testing.assert_array_equal(b.inputs["sentinel2_l2a"][0, 0, 0, 0], [200, 300, 400, 800])
    imp = GeoBench("m-brick-kiln", root=folder, impute_missing=True).split("test").load([0])
    names = imp.bands["sentinel2_l2a"]
    assert {"B06", "B09", "B8A", "B07"} <= set(names)
    x = imp.inputs["sentinel2_l2a"][0, 0, 0, 0]
    assert x[names.index("B07")] == 600 and x[names.index("B8A")] == 700
    lo, hi = band_affine("sentinel2_l2a")
    assert x[names.index("B06")] == pytest.approx((lo[5] + hi[5]) / 2, rel=1e-5)


def test_bigearthnet_multilabel(tmp_path, fake_geobench):
    folder = tmp_path / "m-bigearthnet"
    folder.mkdir()
    keys = [k for k in S2_KEYS if not k.startswith("10")]
    for i in range(2):
        lab = np.zeros(43, np.int64)
        lab[[i, 40]] = 1
        write_sample(folder, f"s{i}", {k: np.full((8, 8), 1000, np.int16) for k in keys}, lab,
                     fake_geobench)  # fmt: skip
    partition(folder, ["s0"], ["s1"], valid=["s0"])
    ds = GeoBench("m-bigearthnet", root=folder)
    assert ds.task_type == "multilabel" and ds.split_names == ("train", "val", "test")
    s = ds.split("val")
    assert s.labels.shape == (1, 43) and s.labels[0, [0, 40]].tolist() == [1, 1]
    assert len(s.load([0]).bands["sentinel2_l2a"]) == 12


def test_so2sat_reflectance_scaled_and_s1_db(tmp_path, fake_geobench):
    folder = tmp_path / "m-so2sat"
    folder.mkdir()
    s1_keys = ["01 - VH.Real", "02 - VH.Imaginary", "03 - VV.Real", "04 - VV.Imaginary",
               "05 - VH.LEE Filtered", "06 - VV.LEE Filtered", "07 - VH.LEE Filtered.Real",
               "08 - VV.LEE Filtered.Imaginary"]  # fmt: skip
    s2_keys = S2_KEYS[1:9] + S2_KEYS[-2:]
    bands = {k: np.full((32, 32), 0.01, np.float32) for k in s1_keys}
    bands.update({k: np.full((32, 32), 0.12, np.float32) for k in s2_keys})
    write_sample(folder, "s0", bands, 5, fake_geobench)
    partition(folder, ["s0"], ["s0"])
    b = GeoBench("m-so2sat", root=folder).split("train").load([0])
    assert list(b.inputs) == ["sentinel2_l2a"]
    np.testing.assert_allclose(b.inputs["sentinel2_l2a"], 1200.0, rtol=1e-5)
    both = GeoBench("m-so2sat", root=folder, modalities=("sentinel2_l2a", "sentinel1"))
    b = both.split("train").load([0])
    assert b.bands["sentinel1"] == ["vh", "vv"]
    np.testing.assert_allclose(b.inputs["sentinel1"], -20.0, rtol=1e-5)


def test_forestnet_landsat_8bit_mapped_and_imputed(tmp_path, fake_geobench):
    folder = tmp_path / "m-forestnet"
    folder.mkdir()
    keys = ["04 - Red", "03 - Green", "02 - Blue", "05 - NIR", "06 - SWIR1", "07 - SWIR2"]
    date = dt.date(2014, 3, 2)
    bands = {f"{k}_2014-03-02": np.full((12, 12), 255, np.uint8) for k in keys}
    write_sample(folder, "s0", bands, 7, fake_geobench, sensor="Landsat8",
                 dates={k: date for k in bands})  # fmt: skip
    partition(folder, ["s0"], ["s0"])
    b = GeoBench("m-forestnet", root=folder).split("test").load([0])
    names = b.bands["landsat"]
    assert b.timestamps.tolist() == [[[2, 2, 2014]]]
    lo, hi = band_affine("landsat")
    from geolatent.modalities import get_modality

    m = get_modality("landsat")
    x = b.inputs["landsat"][0, 0, 0, 0]
    # 255 -> top of the pretraining range; B1, B9, B10, B11 imputed at the mean; B8 absent
    assert x[names.index("B4")] == pytest.approx(hi[m.band_index("B4")], rel=1e-5)
    assert x[names.index("B1")] == pytest.approx((lo + hi)[m.band_index("B1")] / 2, rel=1e-5)
    assert "B8" not in names and len(names) == 10


def test_cashew_segmentation_with_dated_keys(tmp_path, fake_geobench):
    folder = tmp_path / "m-cashew-plant"
    folder.mkdir()
    keys = [k for k in S2_KEYS if not k.startswith("10")] + ["Cloud Probability"]
    date = dt.date(2019, 11, 10)
    bands = {f"{k}_2019-11-10": np.full((16, 16), 900, np.int16) for k in keys}
    bands["label"] = np.arange(256).reshape(16, 16) % 7
    write_sample(folder, "sample_0", bands, "seg", fake_geobench, dates={k: date for k in bands})
    partition(folder, ["sample_0"], ["sample_0"])
    ds = GeoBench("m-cashew-plant", root=folder)
    s = ds.split("train")
    assert s.labels.shape == (1, 16, 16) and s.labels.max() == 6
    b = s.load([0])
    assert b.inputs["sentinel2_l2a"].shape == (1, 16, 16, 1, 12)
    assert b.timestamps.tolist() == [[[10, 10, 2019]]]
