"""CropHarvest (Tseng et al. 2021): crop / non-crop from monthly Sentinel-1 + Sentinel-2 pixel
time series, worldwide.

On-disk format (Zenodo 5533193, ``features.tar.gz`` and ``labels.geojson`` unpacked)::

    <root>/labels.geojson                        properties per point: index (or dataset_index),
                                                 dataset, is_crop, is_test, export_end_date,
                                                 lat, lon, ...
    <root>/features/arrays/<index>_<dataset>.h5  dataset "array": [12, 18] float

The 18 columns: VV, VH (dB), B2, B3, B4, B5, B6, B7, B8, B8A, B9, B11, B12 (S2 L1C DN),
temperature_2m, total_precipitation, elevation, slope, NDVI (the engineer's ``BANDS``). The 12
rows are 30-day steps ending at ``export_end_date``; each step is dated at its midpoint.

Band contract: ``sentinel1`` [vv, vh] in dB and ``sentinel2_l2a`` B02-B12 (no B01, B10: the
[B01, B09] bandset is masked), 1 x 1 px samples (patch size 1). Weather, elevation and NDVI
are not model inputs. Labels: ``is_crop`` (0 / 1). Splits: ``is_test`` points are the test
split; of the others, a stratified, seeded ``val_fraction`` is held out for validation.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import h5py
import numpy as np

from geolatent.evals.datasets.base import (
    Batch,
    DatasetNotFoundError,
    EvalDataset,
    SplitData,
    date_to_timestamp,
    stratified_split,
    to_missing,
)

COLUMNS = ["VV", "VH", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12",
           "temperature_2m", "total_precipitation", "elevation", "slope", "NDVI"]  # fmt: skip
S2_COLUMNS = {"B02": "B2", "B03": "B3", "B04": "B4", "B08": "B8", "B05": "B5", "B06": "B6",
              "B07": "B7", "B8A": "B8A", "B11": "B11", "B12": "B12"}  # fmt: skip


def step_dates(export_end: dt.date, steps: int = 12, days: int = 30) -> list[dt.date]:
    """Midpoints of the ``steps`` 30-day windows that end at ``export_end``."""
    start = export_end - dt.timedelta(days=steps * days)
    return [start + dt.timedelta(days=i * days + days // 2) for i in range(steps)]


def presto_arrays_to_inputs(x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """``[N, T, 18]`` CropHarvest / Presto feature arrays -> model inputs ``[N, 1, 1, T, C]``."""
    s1 = to_missing(x[..., [COLUMNS.index("VV"), COLUMNS.index("VH")]])
    s2 = to_missing(x[..., [COLUMNS.index(c) for c in S2_COLUMNS.values()]])
    return (
        {"sentinel1": s1[:, None, None], "sentinel2_l2a": s2[:, None, None]},
        {"sentinel1": ["vv", "vh"], "sentinel2_l2a": list(S2_COLUMNS)},
    )


class CropHarvest(EvalDataset):
    """CropHarvest crop / non-crop (see the module docstring)."""

    name = "cropharvest"
    task_type = "classification"
    class_names = ("non-crop", "crop")

    def __init__(self, root=None, val_fraction: float = 0.1, split_seed: int = 0):
        super().__init__(root)
        labels = self.root / "labels.geojson"
        if not labels.exists():
            raise DatasetNotFoundError(f"{labels} not found (is this CropHarvest?)")
        props = [f["properties"] for f in json.loads(labels.read_text())["features"]]
        rows = []
        for p in props:
            index = p.get("index", p.get("dataset_index"))
            path = self.root / "features" / "arrays" / f"{index}_{p['dataset']}.h5"
            if path.exists():
                end = dt.date.fromisoformat(str(p["export_end_date"])[:10])
                rows.append((path, int(bool(p["is_crop"])), bool(p.get("is_test")), end))
        self.rows = rows
        self.val_fraction, self.split_seed = val_fraction, split_seed

    def options(self) -> dict:
        return {"val_fraction": self.val_fraction, "split_seed": self.split_seed}

    def fingerprint_files(self) -> list[Path]:
        return [self.root / "labels.geojson", *(r[0] for r in self.rows)]

    def split(self, name: str) -> SplitData:
        test = np.array([r[2] for r in self.rows], bool)
        y = np.array([r[1] for r in self.rows], np.int64)
        if name == "test":
            idx = np.flatnonzero(test)
        elif name in ("train", "val"):
            pool = np.flatnonzero(~test)
            parts = stratified_split(y[pool], [1 - self.val_fraction, self.val_fraction],
                                     self.split_seed)  # fmt: skip
            idx = pool[parts[0] if name == "train" else parts[1]]
        else:
            raise KeyError(f"CropHarvest: no split {name!r}")
        rows = [self.rows[i] for i in idx]
        ids = [r[0].stem for r in rows]
        return SplitData(y[idx], lambda i: self._load([rows[j] for j in i]), ids)

    def _load(self, rows) -> Batch:
        arrays = []
        for path, *_ in rows:  # one small file per point: per-sample reads are the format
            with h5py.File(path, "r") as f:
                arrays.append(np.asarray(f["array"], dtype=np.float32))
        x = np.stack(arrays)
        inputs, bands = presto_arrays_to_inputs(x)
        ts = np.array([[date_to_timestamp(d) for d in step_dates(r[3], x.shape[1])] for r in rows])
        return Batch(inputs, bands, ts.astype(np.int64))
