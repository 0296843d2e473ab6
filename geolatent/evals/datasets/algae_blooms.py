"""Algae blooms (the Presto evaluation export): algal-bloom severity of US Midwest water
bodies from monthly Sentinel-1 + Sentinel-2 pixel time series.

On-disk format (numpy arrays, as exported by the Presto evaluation code)::

    <root>/npy/s1_s2_era5_srtm.npy  float64 [N, 12, 18]: the CropHarvest / Presto columns VV, VH
                                    (dB), B2, B3, B4, B5, B6, B7, B8, B8A, B9, B11, B12 (S2 DN),
                                    temperature_2m, total_precipitation, elevation, slope, NDVI
    <root>/npy/month.npy            [N, 12] calendar month 0-11 of each step
    <root>/npy/target.npy           [N] severity 1-5
    <root>/npy/is_test.npy          [N] 1 = test

Band contract: ``sentinel1`` [vv, vh] dB and ``sentinel2_l2a`` B02-B12 DN (no B01, B10: the
[B01, B09] bandset is masked); 1 x 1 px samples, use patch size 1. Weather / terrain columns
and the (wrong upstream) NDVI are not model inputs. Timestamps: day 15 of consecutive months
from the first step's month. The export's month labels of later steps repeat or skip a month
in 1 of 5 samples (its composites are not calendar months), which would give two steps the
same date; the model takes strictly increasing dates, and the steps are consecutive composites,
so each step is one month after the previous. The year only orders the steps (the model does
not encode years).
Targets: ``target="regression"`` -> severity as a float (RMSE / R^2), ``"classification"`` ->
severity 1-5 as classes 0-4. Splits: the export's own ``is_test`` (test) and the rest (train);
selection holds out part of train.
"""

from __future__ import annotations

import numpy as np

from geolatent.evals.datasets.base import (
    DatasetNotFoundError,
    EvalDataset,
    SplitData,
    array_split,
)
from geolatent.evals.datasets.cropharvest import presto_arrays_to_inputs


class AlgaeBlooms(EvalDataset):
    """Presto algae-blooms severity (see the module docstring)."""

    name = "algae-blooms"
    dirname = "algae_blooms"
    split_names = ("train", "test")

    def __init__(self, root=None, target: str = "regression"):
        super().__init__(root)
        base = self.root / "npy" if (self.root / "npy").is_dir() else self.root
        if not (base / "s1_s2_era5_srtm.npy").exists():
            raise DatasetNotFoundError(f"{base}: s1_s2_era5_srtm.npy not found")
        if target not in ("regression", "classification"):
            raise ValueError("target must be 'regression' or 'classification'")
        self.base, self.target = base, target
        self.task_type = target
        self.num_classes = 5 if target == "classification" else 0
        self.class_names = ("1", "2", "3", "4", "5") if target == "classification" else ()

    def options(self) -> dict:
        return {"target": self.target}

    def fingerprint_files(self):
        return [p for p in self.base.glob("*.npy")]

    def split(self, name: str) -> SplitData:
        if name not in self.split_names:
            raise KeyError(f"algae-blooms: no split {name!r}")
        x = np.load(self.base / "s1_s2_era5_srtm.npy").astype(np.float32)
        month = np.load(self.base / "month.npy").astype(np.int64)
        y = np.load(self.base / "target.npy")
        test = np.load(self.base / "is_test.npy").astype(bool)
        sel = test if name == "test" else ~test
        inputs, bands = presto_arrays_to_inputs(x[sel])
        m = month[sel]
        # Steps are consecutive composites: month k is k months after the first step's (the
        # export's own labels repeat or skip a month in some samples; see the module doc).
        k = m[:, :1] + np.arange(m.shape[1])[None, :]
        ts = np.stack([np.full_like(k, 15), k % 12, 2020 + k // 12], axis=-1)
        labels = y[sel].astype(np.float32) if self.target == "regression" else y[sel] - 1
        uid_path = self.base / "uid.npy"
        ids = [str(u) for u in np.load(uid_path)[sel]] if uid_path.exists() else None
        return array_split(inputs, bands, ts, labels, ids)
