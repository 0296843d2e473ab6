"""Sen1Floods11 (Bonafilia et al. 2020), hand-labeled flood chips, Sentinel-1, water segmentation.

On-disk format (``gs://sen1floods11``, version v1.1)::

    <root>/v1.1/data/flood_events/HandLabeled/S1Hand/<Country>_<id>_S1Hand.tif     2 bands
    <root>/v1.1/data/flood_events/HandLabeled/LabelHand/<Country>_<id>_LabelHand.tif
    <root>/v1.1/splits/flood_handlabeled/flood_{train,valid,test}_data.csv
    <root>/v1.1/Sen1Floods11_Metadata.geojson   (optional: per location s1_date)

Each split CSV has no header; a row is ``<S1Hand file>,<LabelHand file>``. ``root`` may also be
the ``v1.1`` folder itself.

Band contract: S1Hand band 1 = VV, band 2 = VH, backscatter in dB (float32; NaN = no data ->
missing), given as ``sentinel1`` [vv, vh]. 512 x 512 px at 10 m, cut into ``tile`` x ``tile``
tiles (default 64).
Labels: LabelHand int16: 0 = not water, 1 = water, -1 = no data -> ``ignore_index``.
Timestamps: the event's ``s1_date`` from the metadata GeoJSON when present, else
``default_date``.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import numpy as np
import rasterio

from geolatent.evals.datasets.base import (
    Batch,
    DatasetNotFoundError,
    EvalDataset,
    SplitData,
    date_to_timestamp,
    tiled_split,
    to_missing,
)


class Sen1Floods11(EvalDataset):
    """Sen1Floods11 hand-labeled split, S1 only (see the module docstring)."""

    name = "sen1floods11"
    task_type = "segmentation"
    class_names = ("not water", "water")

    def __init__(self, root=None, tile: int = 64, default_date: dt.date = dt.date(2018, 7, 15)):
        super().__init__(root)
        base = self.root / "v1.1" if (self.root / "v1.1").is_dir() else self.root
        self.data_dir = base / "data" / "flood_events" / "HandLabeled"
        self.split_dir = base / "splits" / "flood_handlabeled"
        if not self.split_dir.is_dir():
            raise DatasetNotFoundError(f"{self.split_dir} not found (is this Sen1Floods11 v1.1?)")
        self.tile, self.default_date = tile, default_date
        self.dates = self._read_dates(base / "Sen1Floods11_Metadata.geojson")

    def options(self) -> dict:
        return {"tile": self.tile, "default_date": str(self.default_date)}

    def fingerprint_files(self) -> list[Path]:
        return [p for p in self.split_dir.glob("*.csv")]

    @staticmethod
    def _read_dates(path: Path) -> dict[str, dt.date]:
        if not path.exists():
            return {}
        out = {}
        for feat in json.loads(path.read_text()).get("features", []):
            props = feat.get("properties", {})
            loc, date = props.get("location"), props.get("s1_date")
            if loc and date:
                out[str(loc)] = dt.date.fromisoformat(str(date)[:10])
        return out

    def split(self, name: str) -> SplitData:
        fname = {"val": "valid"}.get(name, name)
        path = self.split_dir / f"flood_{fname}_data.csv"
        if not path.exists():
            raise KeyError(f"Sen1Floods11: no split file {path}")
        with open(path, newline="") as f:
            rows = [(r[0].strip(), r[1].strip()) for r in csv.reader(f) if len(r) >= 2]

        def label_maps():
            for s1, lab_file in rows:
                with rasterio.open(self.data_dir / "LabelHand" / lab_file) as src:
                    lab = src.read(1).astype(np.int64)
                yield s1, np.where((lab == 0) | (lab == 1), lab, self.ignore_index)

        return tiled_split(label_maps(), self.tile, self._load)

    def _load(self, samples: list[tuple[str, int, int]]) -> Batch:
        cache: dict[str, np.ndarray] = {}
        tiles, ts = [], []
        for s1, r, c in samples:
            if s1 not in cache:
                with rasterio.open(self.data_dir / "S1Hand" / s1) as src:
                    cache[s1] = to_missing(np.moveaxis(src.read([1, 2]), 0, -1))  # [H, W, 2]
            tiles.append(cache[s1][r : r + self.tile, c : c + self.tile])
            date = self.dates.get(s1.split("_")[0], self.default_date)
            ts.append([date_to_timestamp(date)])
        x = np.stack(tiles)[:, :, :, None, :]
        return Batch({"sentinel1": x}, {"sentinel1": ["vv", "vh"]}, np.array(ts, dtype=np.int64))
