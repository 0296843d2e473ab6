"""BreizhCrops (Russwurm et al. 2020): crop type of field parcels in Brittany from Sentinel-2
time series (2017), 9 classes.

On-disk format (as the ``breizhcrops`` package downloads it)::

    <root>/classmapping.csv                 columns: <index>, id, classname, code
    <root>/<year>/<level>/<region>.csv      index: <index>, idx, CODE_CULTU, path, ...,
                                            sequencelength, ...
    <root>/<year>/<level>/<region>.h5       one dataset per parcel, keyed by the index's
                                            ``path``: [T, columns]

with columns, for ``level`` L2A: B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12, CLD, EDG, SAT, doa;
for L1C: B1, B10, B11, B12, B2, B3, B4, B5, B6, B7, B8, B8A, B9, QA10, QA20, QA60, doa. ``doa`` is
the acquisition time in nanoseconds since 1970. Regions: frh01-frh04 (train frh01 + frh02,
val frh03, test frh04, the usual protocol). Parcels whose CODE_CULTU is not in the class
mapping are skipped.

Band contract: each parcel is one 1 x 1 px sample (patch size 1). The raw series (top-of-
atmosphere DN for L1C, surface reflectance x 10000 for L2A) is reduced to 12 monthly medians
(Jan-Dec of ``year``); with L2A, observations whose CLD (cloud probability, %) exceeds
``max_cloud`` are dropped first. Bands given: B02-B12 as available (L1C: also B01, B09; B10
dropped).
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import h5py
import numpy as np

from geolatent.evals.datasets.base import (
    Batch,
    DatasetNotFoundError,
    EvalDataset,
    SplitData,
    mid_month_dates,
    month_sequence,
    monthly_composite,
    single_modality_batch,
)

COLUMNS = {
    "L2A": ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12", "CLD", "EDG", "SAT",
            "doa"],
    "L1C": ["B1", "B10", "B11", "B12", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9",
            "QA10", "QA20", "QA60", "doa"],
}  # fmt: skip
REGIONS = {"train": ("frh01", "frh02"), "val": ("frh03",), "test": ("frh04",)}


class BreizhCrops(EvalDataset):
    """BreizhCrops parcel classification (see the module docstring)."""

    name = "breizhcrops"
    task_type = "classification"

    def __init__(self, root=None, year: int = 2017, level: str = "L2A", max_cloud: float = 50.0):
        super().__init__(root)
        if level not in COLUMNS:
            raise ValueError(f"level must be one of {sorted(COLUMNS)}")
        self.year, self.level, self.max_cloud = year, level, max_cloud
        mapping = self.root / "classmapping.csv"
        if not mapping.exists():
            raise DatasetNotFoundError(f"{mapping} not found (is this BreizhCrops?)")
        with open(mapping, newline="") as f:
            rows = list(csv.DictReader(f))
        self.code_to_id = {r["code"]: int(r["id"]) for r in rows}
        names = {int(r["id"]): r["classname"] for r in rows}
        self.class_names = tuple(names[i] for i in sorted(names))
        self.num_classes = len(self.class_names)
        self.months = month_sequence(dt.date(year, 1, 1), 12)

    def options(self) -> dict:
        return {"year": self.year, "level": self.level, "max_cloud": self.max_cloud}

    def fingerprint_files(self) -> list[Path]:
        d = self.root / str(self.year) / self.level
        return [self.root / "classmapping.csv", *d.glob("*.csv"), *d.glob("*.h5")]

    def split(self, name: str) -> SplitData:
        if name not in REGIONS:
            raise KeyError(f"BreizhCrops: no split {name!r}")
        refs, labels = [], []
        for region in REGIONS[name]:
            d = self.root / str(self.year) / self.level
            with open(d / f"{region}.csv", newline="") as f:
                for row in csv.DictReader(f):
                    code = row["CODE_CULTU"]
                    if code in self.code_to_id and int(float(row.get("sequencelength", 1))) > 0:
                        refs.append((d / f"{region}.h5", row["path"]))
                        labels.append(self.code_to_id[code])
        ids = [p for _, p in refs]
        return SplitData(np.array(labels, dtype=np.int64),
                         lambda idx: self._load([refs[i] for i in idx]), ids)  # fmt: skip

    def _series(self, h5: h5py.File, key: str) -> np.ndarray:
        """``[12, C]`` monthly composite of one parcel, bands in :meth:`bands` order."""
        cols = COLUMNS[self.level]
        x = np.asarray(h5[key], dtype=np.float64)
        dates = [dt.datetime.fromtimestamp(t / 1e9, dt.UTC).date() for t in x[:, cols.index("doa")]]
        keep = np.ones(len(x), bool)
        if self.level == "L2A":
            keep = x[:, cols.index("CLD")] <= self.max_cloud
        idx = [cols.index(b) for b in self._source_bands()]
        vals = x[keep][:, idx].astype(np.float32)
        return monthly_composite(vals, [d for d, k in zip(dates, keep, strict=True) if k],
                                 self.months)  # fmt: skip

    def _source_bands(self) -> list[str]:
        return [c for c in COLUMNS[self.level] if c.startswith("B") and c != "B10"]

    def _load(self, refs: list[tuple[Path, str]]) -> Batch:
        # One HDF5 dataset per parcel: reading is per sample by construction of the format.
        out = []
        files: dict[Path, h5py.File] = {}
        try:
            for path, key in refs:
                if path not in files:
                    files[path] = h5py.File(path, "r")
                out.append(self._series(files[path], key))
        finally:
            for f in files.values():
                f.close()
        x = np.stack(out)[:, None, None]  # [B, 1, 1, 12, C]
        names = ["B" + c[1:].zfill(2) if c[1:].isdigit() else c for c in self._source_bands()]
        return single_modality_batch("sentinel2_l2a", x, names, mid_month_dates(self.months))
