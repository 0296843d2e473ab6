"""Sample files, manifest, dataset and loader: normalization on load, bad files, workers."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from geolatent.data.h5samples import read_sample, write_sample
from geolatent.modalities import MISSING_VALUE
from geolatent.normalize import normalize
from geolatent.pretrain.dataset import (
    PretrainDataset,
    SampleUnusable,
    collate_samples,
    make_loader,
)
from geolatent.pretrain.sampler import PretrainBatchSampler, SampleRequest
from geolatent.pretrain.samples import Manifest, build_manifest, write_builtin_samples

from .conftest import raw_sample


def _bad_files(root):
    """Corrupt, truncated, wrong-shape, unknown-modality and imagery-less files."""
    (root / "corrupt.h5").write_bytes(b"this is not hdf5" * 64)
    good = (root / "s1.h5").read_bytes()
    (root / "truncated.h5").write_bytes(good[: len(good) // 2])
    for name, key, shape in (("shape.h5", "sentinel2_l2a", (16, 16, 4, 5)),
                             ("unknown.h5", "sentinel3", (16, 16, 4, 2))):  # fmt: skip
        with h5py.File(root / name, "w") as f:
            f["latlon"] = np.zeros(2)
            f["timestamps"] = np.zeros((4, 3), dtype=np.int64)
            f[key] = np.zeros(shape, dtype=np.float32)
    rng = np.random.default_rng(5)
    write_sample(root / "maps_only.h5", **raw_sample(rng, modalities=("worldcover", "srtm")))
    return ["corrupt.h5", "truncated.h5", "shape.h5", "unknown.h5", "maps_only.h5"]


def test_manifest_reports_bad_files_by_name(sample_dir):
    bad = _bad_files(sample_dir)
    manifest, errors = build_manifest(sample_dir)
    assert sorted(r.path for r in manifest.records) == [f"s{i}.h5" for i in range(4)]
    assert len(errors) == len(bad)
    for name in bad:
        assert sum(name in e for e in errors) == 1, (name, errors)
    rec = manifest.records[0]
    assert rec.present == {"sentinel2_l2a": 4, "sentinel1": 2, "worldcover": 1}
    assert (rec.height, rec.width, rec.timesteps) == (16, 16, 4)
    again = Manifest.load(manifest.save())
    assert again.records == manifest.records and again.root == sample_dir
    assert manifest.modality_counts() == {"sentinel2_l2a": 4, "sentinel1": 4, "worldcover": 4}


def _request(index=0, p=2, crop=8, t=3, seed=11):
    return SampleRequest(index, p, crop, t, seed, step=0, micro_index=0)


def test_dataset_crops_and_normalizes_on_load(sample_dir):
    manifest, _ = build_manifest(sample_dir)
    ds = PretrainDataset(manifest)
    s = ds[_request()]
    assert not s.errors and s.index == 0
    assert s.arrays["sentinel2_l2a"].shape == (8, 8, 3, 12)
    assert s.arrays["worldcover"].shape == (8, 8, 1, 1)
    assert s.timestamps.shape == (3, 3)
    raw = read_sample(manifest.path(0))
    t0 = int(s.timestamps[0, 1])  # months are 0..3 = the timestep index in these files
    s2 = raw["arrays"]["sentinel2_l2a"][:, :, t0 : t0 + 3]
    # Find the crop offset and check the values are the normalized raw crop.
    hits = [(r, c) for r in range(9) for c in range(9)
            if np.allclose(normalize("sentinel2_l2a", s2[r : r + 8, c : c + 8]),
                           s.arrays["sentinel2_l2a"])]  # fmt: skip
    assert len(hits) == 1
    s1 = s.arrays["sentinel1"]
    missing_t = [t for t in range(3) if t0 + t in (1, 2)]
    assert all((s1[:, :, t] == MISSING_VALUE).all() for t in missing_t)
    assert ds[_request()].arrays["sentinel1"].tobytes() == s1.tobytes()  # same seed, same crop
    assert ds[_request(seed=12)].arrays["sentinel2_l2a"].tobytes() != s.arrays[
        "sentinel2_l2a"].tobytes()  # fmt: skip


def test_bad_sample_is_replaced_and_reported(sample_dir):
    manifest, _ = build_manifest(sample_dir)
    (sample_dir / "s2.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # corrupted later
    ds = PretrainDataset(manifest)
    s = ds[_request(index=2)]
    assert s.index != 2 and len(s.errors) == 1 and "s2.h5" in s.errors[0]


def test_all_bad_raises_clear_error(sample_dir):
    manifest, _ = build_manifest(sample_dir)
    ds = PretrainDataset(manifest, max_retries=2)
    with pytest.raises(SampleUnusable, match=r"3 samples in a row could not be used; check "
                                             r"data.root.*s\d.h5: 16x16 px is smaller"):
        ds[_request(crop=32, p=4)]


def test_collate_fills_absent_modalities(sample_dir):
    rng = np.random.default_rng(1)
    write_sample(
        sample_dir / "s9.h5", **raw_sample(rng, modalities=("sentinel2_l2a",), timesteps=2)
    )
    manifest, _ = build_manifest(sample_dir)
    ds = PretrainDataset(manifest)
    idx = [r.path for r in manifest.records].index("s9.h5")
    batch = collate_samples([ds[_request(0, t=3)], ds[_request(idx, t=3)]])
    assert set(batch.inputs) == {"sentinel2_l2a", "sentinel1", "worldcover"}
    assert batch.inputs["sentinel2_l2a"].shape == (2, 8, 8, 3, 12)
    assert (batch.inputs["sentinel1"][1] == MISSING_VALUE).all()
    assert (batch.inputs["sentinel2_l2a"][1, :, :, 2] == MISSING_VALUE).all()  # T=2 padded
    assert batch.timestamps.shape == (2, 3, 3) and batch.patch_size == 2


def test_loader_workers_give_the_same_batches(tmp_path):
    write_builtin_samples(tmp_path / "data", num_samples=5, size_px=16, timesteps=3)
    manifest, errors = build_manifest(tmp_path / "data")
    assert not errors and len(manifest) == 5
    ds = PretrainDataset(manifest)

    def batches(workers):
        sampler = PretrainBatchSampler(5, 4, 2, seed=0, end_step=3, min_sample_px=16)
        return list(make_loader(ds, sampler, num_workers=workers))

    serial, parallel = batches(0), batches(2)
    assert len(serial) == 6
    for a, b in zip(serial, parallel, strict=True):
        assert (a.step, a.micro_index, a.indices.tolist()) == (
            b.step,
            b.micro_index,
            b.indices.tolist(),
        )
        assert all(torch.equal(a.inputs[m], b.inputs[m]) for m in a.inputs)
    assert set(serial[0].inputs) == {"sentinel2_l2a", "sentinel1"}
