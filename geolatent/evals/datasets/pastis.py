"""PASTIS / PASTIS-R (Garnot et al. 2021/2022): crop-type semantic segmentation from Sentinel-2
and Sentinel-1 time series (France, Sep 2018 - Nov 2019).

On-disk format::

    <root>/metadata.geojson            features with properties ID_PATCH, Fold (1-5),
                                       dates-S2 / dates-S1A / dates-S1D ({"0": 20180924, ...})
    <root>/DATA_S2/S2_<id>.npy          [T, 10, 128, 128] int16
    <root>/DATA_S1A/S1A_<id>.npy        [T, 3, 128, 128] float (PASTIS-R, ascending orbit)
    <root>/DATA_S1D/S1D_<id>.npy        same, descending orbit
    <root>/ANNOTATIONS/TARGET_<id>.npy  [3, 128, 128]; channel 0 = semantic class 0-19

Band contract: S2 channels B02, B03, B04, B05, B06, B07, B08, B8A, B11, B12, surface reflectance
x 10000 (L2A-scale DN) as is; no B01 / B09, so the [B01, B09] bandset is masked. S1 channels VV,
VH (dB) and VV/VH ratio (dropped), given as ``sentinel1`` [vv, vh].
Time: the irregular series are reduced to 12 monthly median composites starting at
``start_month`` (default September 2018); a month without acquisitions is missing.
Labels: class 0-18 (0 = background); 19 (void) -> ``ignore_index``.
Splits: the official folds: train 1-3, val 4, test 5. Each 128 px patch is cut into ``tile`` x
``tile`` tiles (default 64).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

from geolatent.evals.datasets.base import (
    Batch,
    DatasetNotFoundError,
    EvalDataset,
    SplitData,
    constant_timestamps,
    mid_month_dates,
    month_sequence,
    monthly_composite,
    tiled_split,
)

CLASSES = (
    "Background", "Meadow", "Soft winter wheat", "Corn", "Winter barley", "Winter rapeseed",
    "Spring barley", "Sunflower", "Grapevine", "Beet", "Winter triticale", "Winter durum wheat",
    "Fruits, vegetables, flowers", "Potatoes", "Leguminous fodder", "Soybeans", "Orchard",
    "Mixed cereal", "Sorghum",
)  # fmt: skip
S2_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
FOLDS = {"train": (1, 2, 3), "val": (4,), "test": (5,)}
VOID = 19


def _parse_dates(value) -> list[dt.date]:
    if isinstance(value, str):
        value = json.loads(value)
    items = sorted(value.items(), key=lambda kv: int(kv[0])) if isinstance(value, dict) else list(
        enumerate(value)
    )
    return [dt.datetime.strptime(str(int(v)), "%Y%m%d").date() for _, v in items]


class PASTIS(EvalDataset):
    """PASTIS semantic segmentation; ``modalities`` any of ``sentinel2_l2a``, ``sentinel1``."""

    name = "pastis"
    task_type = "segmentation"
    class_names = CLASSES

    def __init__(
        self,
        root=None,
        modalities: tuple[str, ...] = ("sentinel2_l2a",),
        orbit: str = "S1A",
        tile: int = 64,
        start_month: dt.date | str = dt.date(2018, 9, 1),
    ):
        super().__init__(root)
        meta = self.root / "metadata.geojson"
        if not meta.exists():
            raise DatasetNotFoundError(f"{meta} not found (is this PASTIS?)")
        self.features = [f["properties"] for f in json.loads(meta.read_text())["features"]]
        self.modalities, self.orbit, self.tile = tuple(modalities), orbit, tile
        if isinstance(start_month, str):
            start_month = dt.date.fromisoformat(start_month)
        self.months = month_sequence(start_month, 12)

    def options(self) -> dict:
        return {"modalities": self.modalities, "orbit": self.orbit, "tile": self.tile,
                "months": self.months}  # fmt: skip

    def fingerprint_files(self) -> list[Path]:
        return [self.root / "metadata.geojson"]

    def split(self, name: str) -> SplitData:
        if name not in FOLDS:
            raise KeyError(f"PASTIS: no split {name!r}")
        patches = [f for f in self.features if int(f["Fold"]) in FOLDS[name]]

        def label_maps():
            for f in patches:
                pid = f["ID_PATCH"]
                target = np.load(self.root / "ANNOTATIONS" / f"TARGET_{pid}.npy")[0]
                target = target.astype(np.int64)
                yield f, np.where(target == VOID, self.ignore_index, target)

        return tiled_split(label_maps(), self.tile, self._load, key_id=lambda f: f["ID_PATCH"])

    def _composite(self, props: dict, modality: str) -> np.ndarray:
        """``[128, 128, 12, C]`` monthly composite of one patch."""
        pid = props["ID_PATCH"]
        if modality == "sentinel2_l2a":
            arr = np.load(self.root / "DATA_S2" / f"S2_{pid}.npy")
            dates = _parse_dates(props["dates-S2"])
        else:
            arr = np.load(self.root / f"DATA_{self.orbit}" / f"{self.orbit}_{pid}.npy")[:, :2]
            dates = _parse_dates(props[f"dates-{self.orbit}"])
        x = np.moveaxis(arr.astype(np.float32), (0, 1), (2, 3))  # [H, W, T, C]
        return monthly_composite(x, dates, self.months)

    def _load(self, samples: list[tuple[dict, int, int]]) -> Batch:
        cache: dict[tuple, np.ndarray] = {}
        inputs: dict[str, list[np.ndarray]] = {m: [] for m in self.modalities}
        for props, r, c in samples:
            for m in self.modalities:
                key = (props["ID_PATCH"], m)
                if key not in cache:
                    cache[key] = self._composite(props, m)
                inputs[m].append(cache[key][r : r + self.tile, c : c + self.tile])
        bands = {"sentinel2_l2a": S2_BANDS, "sentinel1": ["vv", "vh"]}
        ts = constant_timestamps(len(samples), mid_month_dates(self.months))
        return Batch(
            {m: np.stack(v) for m, v in inputs.items()}, {m: bands[m] for m in self.modalities}, ts
        )
