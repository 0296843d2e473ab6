"""eo-learn example patch (Slovenia): land-use classification / segmentation from Sentinel-2.

On-disk format (the eo-learn test data, an EOPatch folder plus a reference scene array)::

    <root>/REFERENCE_SCENES.npy                      float32 [5, 101, 100, 13]
    <root>/TestEOPatch/mask_timeless/LULC.npy       uint16 [101, 100, 1]

Band contract: REFERENCE_SCENES holds Sentinel-2 L1C top-of-atmosphere reflectance (0-1) of
B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B10, B11, B12 on five dates (2015-07-11 ...
2015-09-09, stored out of order; sorted here). Handed over: x 10000 -> L1C DN (the model was
pretrained on L2A DN), B10 dropped, T = 5.
Labels (LULC): 0 no data -> ignored; 1 cultivated land, 2 forest, 3 grassland, 4 shrubland,
8 artificial surface -> classes 0-4.

Spatial split (the patch is 101 x 100 px; row / column ranges, end excluded): train = rows 0-44
x columns 0-72; validation = rows 0-44 x columns 76-100 (4-column gap); test = rows 52-100 x all
columns (8-row gap below the train and validation blocks). Gaps keep chips of different splits
from sharing pixels. The test block holds forest, grassland, shrubland and artificial surface;
cultivated land (11 px in the whole patch) only occurs in validation.

* ``kind="classification"``: 8 x 8 px chips, label = majority class of the chip's labeled
  pixels (chips less than half labeled are skipped); train and validation chips with stride 4
  (overlapping), test chips with stride 8 (disjoint: test samples share no pixels, which keeps
  the bootstrap honest).
* ``kind="segmentation"``: 16 x 16 px windows, per-pixel labels; train and validation windows
  with stride 8, test windows disjoint.

The patch is small: validation holds ~50 chips / 8 windows, mostly forest, so selections made on
it (learning rates) are coarse.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from geolatent.evals.datasets.base import (
    DatasetNotFoundError,
    EvalDataset,
    SplitData,
    array_split,
    constant_timestamps,
)

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
DATES = (dt.date(2015, 8, 20), dt.date(2015, 7, 31), dt.date(2015, 9, 9), dt.date(2015, 8, 30),
         dt.date(2015, 7, 11))  # fmt: skip
LULC_CODES = (1, 2, 3, 4, 8)
CLASSES = ("cultivated land", "forest", "grassland", "shrubland", "artificial surface")
REGIONS = {"train": ((0, 44), (0, 72)), "val": ((0, 44), (76, 100)), "test": ((52, 100), (0, 100))}


class EOLearnLULC(EvalDataset):
    """eo-learn LULC patch, spatially split (see the module docstring)."""

    name = "eolearn-lulc"
    dirname = "eolearn"
    class_names = CLASSES
    split_names = ("train", "val", "test")

    def __init__(self, root=None, kind: str = "classification", chip: int | None = None):
        super().__init__(root)
        if kind not in ("classification", "segmentation"):
            raise ValueError("kind must be 'classification' or 'segmentation'")
        scenes = self.root / "REFERENCE_SCENES.npy"
        lulc = self.root / "TestEOPatch" / "mask_timeless" / "LULC.npy"
        if not scenes.exists() or not lulc.exists():
            raise DatasetNotFoundError(f"{self.root}: REFERENCE_SCENES.npy / LULC.npy not found")
        self.kind = kind
        self.task_type = kind
        self.chip = chip or (8 if kind == "classification" else 16)
        order = np.argsort(np.array(DATES, dtype="datetime64[D]"))
        x = np.load(scenes)[order] * 10000.0  # [T, H, W, 13] DN
        keep = [i for i, b in enumerate(BANDS) if b != "B10"]
        self.image = np.moveaxis(x[..., keep], 0, 2).astype(np.float32)  # [H, W, T, C]
        self.bands = [BANDS[i] for i in keep]
        self.dates = [DATES[i] for i in order]
        raw = np.load(lulc)[..., 0].astype(np.int64)
        lut = np.full(raw.max() + 1, self.ignore_index, np.int64)
        lut[list(LULC_CODES)] = np.arange(len(LULC_CODES))
        self.labels = lut[raw]  # [H, W]

    def options(self) -> dict:
        return {"kind": self.kind, "chip": self.chip, "regions": REGIONS}

    def fingerprint_files(self):
        return [self.root / "REFERENCE_SCENES.npy", self.root / "TestEOPatch" / "mask_timeless" /
                "LULC.npy"]  # fmt: skip

    def _corners(self, region, stride: int) -> list[tuple[int, int]]:
        (r0, r1), (c0, c1) = region
        c = self.chip
        return [(r, q) for r in range(r0, r1 - c + 1, stride)
                for q in range(c0, c1 - c + 1, stride)]  # fmt: skip

    def split(self, name: str) -> SplitData:
        if name not in self.split_names:
            raise KeyError(f"eolearn: no split {name!r}")
        c = self.chip
        stride = c if name == "test" else c // 2
        corners = self._corners(REGIONS[name], stride)
        # One fancy-indexing gather for all chips: [N, c, c, ...].
        rr = np.array([r for r, _ in corners])[:, None] + np.arange(c)
        qq = np.array([q for _, q in corners])[:, None] + np.arange(c)
        x = self.image[rr[:, :, None], qq[:, None, :]]  # [N, c, c, T, C]
        y = self.labels[rr[:, :, None], qq[:, None, :]]  # [N, c, c]
        if self.kind == "classification":
            counts = np.stack([(y == k).sum(axis=(1, 2)) for k in range(self.num_classes)], 1)
            ok = counts.sum(1) * 2 >= c * c
            x, y = x[ok], counts[ok].argmax(1)
            corners = [k for k, o in zip(corners, ok, strict=True) if o]
        ts = constant_timestamps(len(y), self.dates)
        ids = [f"{r},{q}" for r, q in corners]
        return array_split({"sentinel2_l2a": x}, {"sentinel2_l2a": self.bands}, ts, y, ids)
