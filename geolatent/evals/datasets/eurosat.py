"""EuroSAT-MS (Helber et al. 2019) in its GeoTIFF folder layout: 10-class land-use
classification of 64 x 64 px Sentinel-2 L1C patches.

On-disk format (``EuroSAT_MS.zip``; older archives nest it as
``ds/images/remote_sensing/otherDatasets/sentinel_2/tif``)::

    <root>/<Class>/<Class>_<n>.tif       13-band uint16 GeoTIFF, 64 x 64 px
    <root>/eurosat-{train,val,test}.txt   optional split files (TorchGeo's: one file name per
                                          line, ``.jpg`` or ``.tif``)

Band contract: the GeoTIFF channels are B01, B02, B03, B04, B05, B06, B07, B08, B09, B10, B11,
B12, B8A (B8A last: EuroSAT issue #7 and TorchGeo PR #2480; ``band_order`` overrides it). L1C
top-of-atmosphere DN as is (the model was pretrained on L2A DN); B10 (cirrus) is dropped.
No acquisition date per patch (EuroSAT was sampled 2015-2017): timestamps use ``default_date``.
Splits: the split files when present, else a seeded stratified 60 / 20 / 20 split.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import rasterio

from geolatent.evals.datasets.base import (
    Batch,
    DatasetNotFoundError,
    EvalDataset,
    SplitData,
    constant_timestamps,
    stratified_split,
)

CLASSES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
           "PermanentCrop", "Residential", "River", "SeaLake")  # fmt: skip
BAND_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12",
              "B8A")  # fmt: skip


class EuroSATMS(EvalDataset):
    """EuroSAT multispectral GeoTIFFs (see the module docstring)."""

    name = "eurosat-ms"
    dirname = "eurosat"
    task_type = "classification"
    class_names = CLASSES

    def __init__(
        self,
        root=None,
        band_order: tuple[str, ...] = BAND_ORDER,
        default_date: dt.date = dt.date(2017, 7, 15),
        split_seed: int = 0,
    ):
        super().__init__(root)
        self.folder = self._find_class_root(self.root)
        self.band_order = tuple(band_order)
        self.default_date, self.split_seed = default_date, split_seed
        self.files = sorted(
            (p for c in CLASSES for p in (self.folder / c).glob("*.tif")), key=lambda p: p.name
        )
        self.labels = np.array([CLASSES.index(p.parent.name) for p in self.files], np.int64)

    @staticmethod
    def _find_class_root(root: Path) -> Path:
        for cand in (root, *sorted(p.parent for p in root.rglob("AnnualCrop"))):
            if (cand / "AnnualCrop").is_dir():
                return cand
        raise DatasetNotFoundError(f"no EuroSAT class folders (AnnualCrop/, ...) under {root}")

    def options(self) -> dict:
        return {"band_order": self.band_order, "default_date": str(self.default_date),
                "split_seed": self.split_seed}  # fmt: skip

    def split(self, name: str) -> SplitData:
        split_file = next(iter(self.root.rglob(f"eurosat-{name}.txt")), None)
        if split_file is not None:
            stems = {Path(s.strip()).stem for s in split_file.read_text().split() if s.strip()}
            idx = np.array([i for i, p in enumerate(self.files) if p.stem in stems], np.int64)
        else:
            order = {"train": 0, "val": 1, "test": 2}
            if name not in order:
                raise KeyError(f"EuroSAT: no split {name!r}")
            idx = stratified_split(self.labels, [0.6, 0.2, 0.2], self.split_seed)[order[name]]
        files = [self.files[i] for i in idx]
        return SplitData(self.labels[idx], lambda i: self._load([files[j] for j in i]),
                         [f.stem for f in files])  # fmt: skip

    def _load(self, files: list[Path]) -> Batch:
        arrays = []
        for f in files:
            with rasterio.open(f) as src:
                arrays.append(src.read())  # [13, H, W]
        x = np.moveaxis(np.stack(arrays).astype(np.float32), 1, -1)[:, :, :, None, :]
        keep = [i for i, b in enumerate(self.band_order) if b != "B10"]
        ts = constant_timestamps(len(files), [self.default_date])
        return Batch({"sentinel2_l2a": x[..., keep]},
                     {"sentinel2_l2a": [self.band_order[i] for i in keep]}, ts)  # fmt: skip
