"""The real-data adapters on ../shared/data/real (skipped when absent)."""

import numpy as np

from geolatent.evals import run_eval
from geolatent.evals.datasets import AlgaeBlooms, EOLearnLULC
from geolatent.evals.datasets.eolearn import REGIONS
from geolatent.modalities import get_modality


def test_eolearn_classification_units_and_spatial_split(real_data):
    ds = EOLearnLULC(real_data / "eolearn")
    splits = {n: ds.split(n) for n in ("train", "val", "test")}
    b = splits["train"].load([0])
    x = b.inputs["sentinel2_l2a"]
    assert x.shape == (1, 8, 8, 5, 12) and "B10" not in b.bands["sentinel2_l2a"]
    assert 100 < np.median(x) < 6000  # reflectance x 10000 = DN
    # dates sorted: 2015-07-11 first
    assert b.timestamps[0, 0].tolist() == [11, 6, 2015]
    # no chip of one split shares a pixel with a chip of another
    cover = {}
    for n, s in splits.items():
        m = np.zeros((101, 100), bool)
        for sid in s.sample_ids:
            r, c = map(int, sid.split(","))
            m[r : r + 8, c : c + 8] = True
        cover[n] = m
    assert not (cover["train"] & cover["test"]).any() and not (cover["val"] & cover["test"]).any()
    assert not (cover["train"] & cover["val"]).any()
    assert set(np.unique(splits["test"].labels)) <= set(range(5))


def test_eolearn_segmentation_windows(real_data):
    ds = EOLearnLULC(real_data / "eolearn", kind="segmentation")
    test = ds.split("test")
    assert test.labels.shape == (18, 16, 16) and ds.task_type == "segmentation"
    (r0, r1), _ = REGIONS["test"]
    assert all(int(s.split(",")[0]) >= r0 for s in test.sample_ids)


def test_algae_blooms(real_data):
    root = real_data / "presto_eval" / "algae_blooms"
    train, test = (AlgaeBlooms(root).split(n) for n in ("train", "test"))
    assert len(test) == 345 and len(train) == 1122 - 345
    assert test.labels.dtype == np.float32 and set(np.unique(test.labels)) <= {1, 2, 3, 4, 5}
    b = test.load([0, 1])
    assert b.inputs["sentinel1"].shape == (2, 1, 1, 12, 2)
    s2 = get_modality("sentinel2_l2a")
    assert {s2.band_index(n) for n in b.bands["sentinel2_l2a"]} == set(range(10))  # no B01/B09
    months = np.load(root / "npy" / "month.npy")[np.load(root / "npy" / "is_test.npy") == 1]
    assert (b.timestamps[:, :, 1] == months[:2]).all()
    # consecutive steps are one month apart (year advances at the wrap), in every sample, even
    # where the export's month labels repeat one (the model takes strictly increasing dates)
    for split in (test, train):
        ts = split.load(np.arange(len(split))).timestamps
        assert (np.diff(ts[:, :, 2] * 12 + ts[:, :, 1], axis=1) == 1).all()
    cls = AlgaeBlooms(root, target="classification").split("test")
    assert cls.labels.min() >= 0 and cls.labels.max() <= 4


def test_eolearn_knn_with_v1_fixture_end_to_end(real_data, v1_nano_checkpoint, tmp_path):
    r = run_eval("eolearn-lulc-cls", str(v1_nano_checkpoint), "knn", seeds=1,
                 data_root=real_data / "eolearn", cache=str(tmp_path / "c"), progress=False,
                 settings={"n_boot": 100})[0]  # fmt: skip
    assert r.n_test == 72 and 0 <= r.primary.mean <= 1
    assert r.model["checkpoint"] == str(v1_nano_checkpoint)
