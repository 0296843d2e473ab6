"""MADOS: Marine Debris and Oil Spill (Kikaki et al. 2024), Sentinel-2, 15-class segmentation.

On-disk format (``MADOS.zip`` from Zenodo 10664073, unpacked)::

    <root>/Scene_<i>/10/Scene_<i>_L2R_rhorc_<wavelength>_<crop>.tif   10 m bands (240 x 240)
    <root>/Scene_<i>/20/Scene_<i>_L2R_rhorc_<wavelength>_<crop>.tif   20 m bands (120 x 120)
    <root>/Scene_<i>/60/Scene_<i>_L2R_rhorc_<wavelength>_<crop>.tif   60 m bands (40 x 40)
    <root>/Scene_<i>/10/Scene_<i>_L2R_cl_<crop>.tif                   class mask (0 = unlabeled)
    <root>/Scene_<i>/10/Scene_<i>_L2R_conf_<crop>.tif                 annotation confidence
    <root>/splits/{train,val,test}_X.txt                             crop names "Scene_<i>_<crop>"

Band contract: the 11 ACOLITE Rayleigh-corrected reflectance bands (``rhorc``, 0-1) are named by
central wavelength (S2A / S2B differ by a few nm) and mapped to the nearest band: B01, B02, B03,
B04, B05, B06, B07, B08, B8A, B11, B12. Units: reflectance x 10000 -> L2A-scale DN (note:
Rayleigh-corrected top-of-atmosphere, not Sen2Cor L2A). NaN (land / no data) -> missing. B09 is
not distributed, so the [B01, B09] bandset is masked. Coarser bands are upsampled to 10 m by
pixel repetition (as the model's own data are).
Labels: classes 1-15 -> 0-14; 0 (unlabeled) -> ``ignore_index`` (-1).
Samples: each 240 px crop is cut into ``tile`` x ``tile`` tiles (default 80, the benchmark's size).
MADOS stores no acquisition date: timestamps use ``default_date``.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import rasterio

from geolatent.evals.datasets.base import (
    Batch,
    DatasetNotFoundError,
    EvalDataset,
    SplitData,
    single_modality_batch,
    tiled_split,
    to_missing,
)

CLASSES = (
    "Marine Debris", "Dense Sargassum", "Sparse Floating Algae", "Natural Organic Material",
    "Ship", "Oil Spill", "Marine Water", "Sediment-Laden Water", "Foam", "Turbid Water",
    "Shallow Water", "Waves & Wakes", "Oil Platform", "Jellyfish", "Sea snot",
)  # fmt: skip

# Central wavelength (nm) of each band the files may hold.
_WAVELENGTHS = {"B01": 443, "B02": 492, "B03": 560, "B04": 665, "B05": 704, "B06": 740,
                "B07": 783, "B08": 833, "B8A": 865, "B11": 1612, "B12": 2194}  # fmt: skip


def band_for_wavelength(nm: int) -> str:
    """The Sentinel-2 band whose central wavelength is nearest ``nm`` (within 15 nm)."""
    band, ref = min(_WAVELENGTHS.items(), key=lambda kv: abs(kv[1] - nm))
    if abs(ref - nm) > 15:
        raise ValueError(f"no Sentinel-2 band near {nm} nm")
    return band


class MADOS(EvalDataset):
    """MADOS marine pollution segmentation (see the module docstring for the band contract)."""

    name = "mados"
    task_type = "segmentation"
    class_names = CLASSES

    def __init__(self, root=None, tile: int = 80, default_date: dt.date = dt.date(2020, 7, 15)):
        super().__init__(root)
        if not (self.root / "splits").is_dir():
            raise DatasetNotFoundError(f"{self.root}: no splits/ folder (is this MADOS?)")
        self.tile, self.default_date = tile, default_date

    def options(self) -> dict:
        return {"tile": self.tile, "default_date": str(self.default_date)}

    def _crop_files(self, crop: str) -> tuple[dict[str, Path], Path]:
        m = re.fullmatch(r"(Scene_\d+)_(\d+)", crop)
        if not m:
            raise ValueError(f"unexpected MADOS crop name {crop!r}")
        scene, n = m.groups()
        files: dict[str, Path] = {}
        for p in (self.root / scene).glob(f"*/{scene}_L2R_rhorc_*_{n}.tif"):
            nm = int(p.name.split("_rhorc_")[1].split("_")[0])
            files[band_for_wavelength(nm)] = p
        return files, self.root / scene / "10" / f"{scene}_L2R_cl_{n}.tif"

    def split(self, name: str) -> SplitData:
        path = self.root / "splits" / f"{name}_X.txt"
        if not path.exists():
            raise KeyError(f"MADOS: no split file {path}")
        crops = [c for c in path.read_text().split() if c]

        def label_maps():
            for crop in crops:
                _, cl_path = self._crop_files(crop)
                with rasterio.open(cl_path) as src:
                    cl = src.read(1).astype(np.int64)
                yield crop, np.where(cl > 0, cl - 1, self.ignore_index)

        return tiled_split(label_maps(), self.tile, self._load)

    def _read_crop(self, crop: str) -> tuple[np.ndarray, list[str]]:
        files, cl_path = self._crop_files(crop)
        with rasterio.open(cl_path) as src:
            size = src.height
        names = [b for b in _WAVELENGTHS if b in files]
        planes = []
        for b in names:
            with rasterio.open(files[b]) as src:
                a = src.read(1).astype(np.float32)
            rep = size // a.shape[0]
            planes.append(np.repeat(np.repeat(a, rep, axis=0), rep, axis=1))
        x = to_missing(np.stack(planes, axis=-1) * 10000.0)  # [H, W, C]
        return x, names

    def _load(self, samples: list[tuple[str, int, int]]) -> Batch:
        cache: dict[str, tuple[np.ndarray, list[str]]] = {}
        tiles = []
        names: list[str] = []
        for crop, r, c in samples:
            if crop not in cache:
                cache[crop] = self._read_crop(crop)
            x, names = cache[crop]
            tiles.append(x[r : r + self.tile, c : c + self.tile])
        x = np.stack(tiles)[:, :, :, None, :]  # [B, H, W, T=1, C]
        return single_modality_batch("sentinel2_l2a", x, names, [self.default_date])
