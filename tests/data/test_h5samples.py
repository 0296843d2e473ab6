"""Sample files: the spec layout, round trip, atomic writes, clear errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from geolatent.data.h5samples import SampleFileError, read_sample, write_sample
from geolatent.modalities import MISSING_VALUE


def _sample(t: int = 3, hw: int = 8) -> dict:
    rng = np.random.default_rng(0)
    s2 = rng.uniform(0, 10000, (hw, hw, t, 12)).astype(np.float32)
    s2[:, :, 1] = MISSING_VALUE  # a missing timestep
    s1 = np.full((hw, hw, t, 2), MISSING_VALUE, np.float32)
    s1[..., 0] = -12.5  # vv only: the [vv, vh] bandset is half present
    wc = np.full((hw, hw, 1, 1), 10.0, np.float32)
    return {
        "arrays": {"sentinel2_l2a": s2, "sentinel1": s1, "worldcover": wc},
        "timestamps": np.array([[1, m, 2020] for m in range(t)]),
        "latlon": np.array([43.6, 4.5]),
        "missing_timesteps": {
            "sentinel2_l2a": np.array([False, True, False][:t]),
            "sentinel1": np.zeros(t, bool),
            "worldcover": np.array([False]),
        },
    }


def test_layout_matches_the_spec(tmp_path):
    path = write_sample(tmp_path / "a.h5", **_sample(), attrs={"crs": "EPSG:32631"})
    with h5py.File(path) as f:
        assert set(f.keys()) == {
            "latlon",
            "timestamps",
            "sentinel2_l2a",
            "sentinel1",
            "worldcover",
            "missing_timesteps_masks",
        }
        assert f["latlon"].shape == (2,)
        assert f["timestamps"].shape == (3, 3) and f["timestamps"].dtype == np.int64
        assert f["sentinel2_l2a"].shape == (8, 8, 3, 12) and f["sentinel2_l2a"].dtype == np.float32
        assert f["worldcover"].shape == (8, 8, 1, 1)
        assert f["missing_timesteps_masks/sentinel2_l2a"].dtype == bool
        assert f["missing_timesteps_masks/sentinel2_l2a"][()].tolist() == [False, True, False]
        # zstd (HDF5 filter 32015) at level 3
        plist = f["sentinel2_l2a"].id.get_create_plist()
        filt = plist.get_filter(0)
        assert filt[0] == 32015 and filt[2][0] == 3
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary file


def test_round_trip(tmp_path):
    s = _sample()
    back = read_sample(write_sample(tmp_path / "a.h5", **s))
    for k, v in s["arrays"].items():
        np.testing.assert_array_equal(back["arrays"][k], v)
        np.testing.assert_array_equal(back["missing_timesteps"][k], s["missing_timesteps"][k])
    np.testing.assert_array_equal(back["timestamps"], s["timestamps"])
    np.testing.assert_array_equal(back["latlon"], s["latlon"])
    # read_sample returns write_sample's arguments: copying a sample is one line
    copy = read_sample(write_sample(tmp_path / "b.h5", **back))
    np.testing.assert_array_equal(copy["arrays"]["sentinel1"], s["arrays"]["sentinel1"])
    only = read_sample(tmp_path / "a.h5", modalities=["worldcover"])
    assert list(only["arrays"]) == ["worldcover"]


def test_truncated_file_names_the_file(tmp_path):
    path = write_sample(tmp_path / "a.h5", **_sample(hw=32))
    data = path.read_bytes()
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(SampleFileError, match="truncated.h5"):
        read_sample(bad)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all")
    with pytest.raises(SampleFileError, match="garbage.h5"):
        read_sample(garbage)


def test_invalid_samples_are_rejected(tmp_path):
    s = _sample()
    bad_shape = dict(s, arrays={**s["arrays"], "sentinel1": np.zeros((8, 8, 3, 3), np.float32)})
    with pytest.raises(SampleFileError, match=r"x.h5: sentinel1 must be \[H, W, 3, 2\]"):
        write_sample(tmp_path / "x.h5", **bad_shape)
    unknown = dict(s, arrays={**s["arrays"], "modis": np.zeros((8, 8, 3, 1), np.float32)})
    with pytest.raises(SampleFileError, match="unknown modality 'modis'"):
        write_sample(tmp_path / "x.h5", **unknown)
    nan = s["arrays"]["sentinel1"].copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(SampleFileError, match="NaN"):
        write_sample(tmp_path / "x.h5", **dict(s, arrays={**s["arrays"], "sentinel1": nan}))
    with pytest.raises(SampleFileError, match="missing_timesteps"):
        write_sample(tmp_path / "x.h5", **dict(s, missing_timesteps={}))
    assert not (tmp_path / "x.h5").exists()
    # a file with a dataset that is not a modality
    path = write_sample(tmp_path / "ok.h5", **s)
    with h5py.File(path, "a") as f:
        f.create_dataset("modis", data=np.zeros((8, 8, 3, 1)))
    with pytest.raises(SampleFileError, match="ok.h5: unknown modalities"):
        read_sample(path)
    # a file whose array does not match the registry
    path = write_sample(tmp_path / "shape.h5", **s)
    with h5py.File(path, "a") as f:
        del f["worldcover"]
        f.create_dataset("worldcover", data=np.zeros((8, 8, 1, 2), np.float32))
    with pytest.raises(SampleFileError, match="shape.h5: worldcover"):
        read_sample(path)
