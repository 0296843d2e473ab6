"""Unit plausibility at pretraining data loading: a sample file in other units (written by an
older build or by hand) is refused naming the file, modality and bands; +-inf is missing data."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest

from geolatent.data.h5samples import write_sample
from geolatent.modalities import MISSING_VALUE
from geolatent.pretrain.dataset import PretrainDataset, SampleUnusable, make_loader
from geolatent.pretrain.sampler import PretrainBatchSampler, SampleRequest
from geolatent.pretrain.samples import build_manifest, write_builtin_samples

from .conftest import raw_sample


def _dataset(root, name: str, change, **kw) -> tuple[PretrainDataset, int]:
    """The dataset of ``root`` with one more file ``name`` whose raw sample ``change`` edits;
    returns it and that file's manifest index."""
    sample = raw_sample(np.random.default_rng(3))
    change(sample["arrays"])
    write_sample(root / name, **sample)
    manifest, errors = build_manifest(root)
    assert not errors
    index = [r.path for r in manifest.records].index(name)
    return PretrainDataset(manifest, **kw), index


def _load(ds: PretrainDataset, index: int):
    request = SampleRequest(index, 2, 8, 3, 11, step=0, micro_index=0)
    return ds.load_crop(index, request, np.random.default_rng(0))


def _scale_s2(a, factor):
    a["sentinel2_l2a"] *= factor


@pytest.mark.parametrize("name, change, message", [
    ("reflectance.h5", lambda a: _scale_s2(a, 1 / 10000),
     r"reflectance.h5 \(sentinel2_l2a\).*reflectance in 0-1.*bands B02, B03"),
    ("dn_x100.h5", lambda a: _scale_s2(a, 100), r"dn_x100.h5 \(sentinel2_l2a\).*outside 0..25000"),
    ("linear_s1.h5", lambda a: a.__setitem__("sentinel1", 10 ** (a["sentinel1"] / 10)),
     r"linear_s1.h5 \(sentinel1\).*linear backscatter.*bands vv, vh"),
])
def test_a_sample_in_other_units_is_refused_naming_file_modality_bands(sample_dir, name, change,
                                                                        message):
    ds, i = _dataset(sample_dir, name, change)
    with pytest.raises(SampleUnusable, match=message) as info:
        _load(ds, i)
    assert "geolatent data build" in str(info.value) and "check_units=False" in str(info.value)
    # In a run the file is reported by name and replaced by another sample (never trained on).
    s = ds[SampleRequest(i, 2, 8, 3, 11, step=0, micro_index=0)]
    assert s.index != i and any(name in e for e in s.errors)
    # Units of one's own: the check can be turned off.
    off, _ = _dataset(sample_dir, name, lambda a: None, check_units=False)
    _load(off, i)


def test_inf_is_missing_data_counted_once_per_file(sample_dir, caplog):
    def one_inf(a):
        a["sentinel2_l2a"][3, 4, 0, 2] = np.inf
        a["sentinel1"][5, 5, 1, 0] = -np.inf  # 10*log10(0) at a SAR scene border

    ds, i = _dataset(sample_dir, "inf.h5", one_inf)
    with caplog.at_level(logging.WARNING, logger="geolatent.pretrain.dataset"):
        arrays, _ = _load(ds, i)
        _load(ds, i)  # checked once per file (per worker process)
    warned = [r.getMessage() for r in caplog.records if "infinite" in r.getMessage()]
    assert len(warned) == 2  # one per modality, from the first load only
    assert any("inf.h5 (sentinel2_l2a): 1 infinite values (B04: 1) are treated as missing"
               in w for w in warned)
    assert any("inf.h5 (sentinel1): 1 infinite values (vv: 1)" in w for w in warned)
    for x in arrays.values():
        assert np.isfinite(x).all() and not np.isnan(x).any()


def test_timesteps_marked_missing_are_not_checked(sample_dir):
    """Fill values under a file's missing-timestep mask are not data (no false refusal)."""
    sample = raw_sample(np.random.default_rng(4), missing={"sentinel1": [1]})
    sample["arrays"]["sentinel1"][:, :, 1] = 0.0  # linear-looking, but the mask says missing
    write_sample(sample_dir / "masked.h5", **sample)
    manifest, _ = build_manifest(sample_dir)
    ds = PretrainDataset(manifest)
    index = [r.path for r in manifest.records].index("masked.h5")
    arrays, _ = _load(ds, index)
    assert (arrays["sentinel1"] != MISSING_VALUE).any()


def test_all_samples_refused_in_a_worker_is_one_clear_error(tmp_path):
    """Raised in a DataLoader worker, the error still reads as the message (no traceback)."""
    root = tmp_path / "old"
    for path in write_builtin_samples(root, 2, 16, 2):
        with h5py.File(path, "r+") as f:
            f["sentinel2_l2a"][...] = f["sentinel2_l2a"][...] / 10000
    manifest, _ = build_manifest(root)
    sampler = PretrainBatchSampler(2, 2, 2, seed=0, end_step=1, min_sample_px=16)
    loader = make_loader(PretrainDataset(manifest, max_retries=1), sampler, num_workers=1)
    with pytest.raises(SampleUnusable) as info:
        next(iter(loader))
    msg = str(info.value)
    assert msg.startswith("2 samples in a row could not be used; check data.root. The last: ")
    assert "builtin_0000" in msg and "reflectance in 0-1" in msg and "Traceback" not in msg
