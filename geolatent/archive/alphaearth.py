"""The Google Satellite Embedding (AlphaEarth Foundations) COG layout, read in place.

Layout (as published for ``gs://alphaearth_foundations``): one folder per year, one sub-folder
per UTM zone (e.g. ``33N``), many COGs per zone, each 8192 x 8192 pixels at 10 m in that zone's
CRS with **64 int8 bands** ``A00`` ... ``A63`` (the axes of the 64-d embedding). Dequantization
(the published rule, identical to geolatent's int8 rule in :mod:`.quantize`):
``x = sign(q) * (q / 127.5) ** 2``; ``q = -128`` marks a masked pixel. Dequantized vectors
have unit length.

Each COG becomes one zone of the archive (its own CRS and transform), so search, lookups and
heatmaps work as on a geolatent archive. Files must be north-up (negative y pixel size), as
the official files are; bottom-up copies need their VRT wrappers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from geolatent.archive.reader import ArchiveInfo
from geolatent.archive.store import ArchiveError

BANDS = 64
MODEL = {"id": "google-satellite-embedding-v1", "revision": "annual", "embedding_size": BANDS,
         "provenance": {"source": "AlphaEarth Foundations COGs"}}  # fmt: skip


@dataclass
class CogZone:
    name: str
    crs: str
    transform: Affine
    shape: tuple[int, int]
    strip_rows: int
    path: Path

    def read_rows(self, r0: int, r1: int) -> np.ndarray:
        with rasterio.open(self.path) as src:
            data = src.read(window=Window(0, r0, self.shape[1], r1 - r0))
        return np.moveaxis(data, 0, -1)

    def read_pixels(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), BANDS), np.int8)
        with rasterio.open(self.path) as src:
            for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
                out[i] = src.read(window=Window(int(c), int(r), 1, 1))[:, 0, 0]
        return out


def find_cogs(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix.lower() in (".tif", ".tiff"))


def open_alphaearth(path: Path) -> ArchiveInfo:
    """Every COG under ``path`` (a file or a folder, searched recursively)."""
    files = find_cogs(path)
    if not files:
        raise ArchiveError(f"{path}: neither a geolatent Zarr archive (no zarr.json) nor a folder "
                           f"of Satellite Embedding COGs (no .tif files)")  # fmt: skip
    zones = []
    for f in files:
        with rasterio.open(f) as src:
            if src.count != BANDS or src.dtypes[0] != "int8":
                raise ArchiveError(
                    f"{f}: {src.count} band(s) of {src.dtypes[0]}; the Satellite Embedding "
                    f"layout has {BANDS} int8 bands (A00-A63), so this is the wrong dims or "
                    f"not an embedding file"
                )
            if src.crs is None or src.transform.e >= 0:
                raise ArchiveError(f"{f}: needs a CRS and a north-up transform (open the VRT "
                                   f"of a bottom-up copy instead)")  # fmt: skip
            strip = src.block_shapes[0][0]
            zones.append(CogZone(f.stem, src.crs.to_string(), src.transform,
                                 (src.height, src.width), strip, f))  # fmt: skip
    attrs = {"geoemb:dims": BANDS, "geoemb:model": MODEL,
             "geoemb:quantization": {"dtype": "int8", "rule": "signed_square_root",
                                     "scale": 127.5, "nodata": -128}}  # fmt: skip
    return ArchiveInfo(path, "alphaearth", dict(MODEL), BANDS, "int8", zones, attrs)


def write_alphaearth_cog(path: Path, vectors: np.ndarray, crs: str, transform: Affine) -> None:
    """Write unit vectors ``[H, W, 64]`` (NaN = masked) as a Satellite Embedding style COG.

    For tests and examples: int8, 64 bands named A00-A63, nodata -128, the published rule.
    """
    from geolatent.archive.quantize import encode

    q = encode(vectors, "int8")
    h, w, d = q.shape
    if d != BANDS:
        raise ValueError(f"vectors must have {BANDS} dims, got {d}")
    with rasterio.open(path, "w", driver="COG", width=w, height=h, count=BANDS, dtype="int8",
                       crs=crs, transform=transform, nodata=-128, blocksize=256,
                       compress="deflate") as dst:  # fmt: skip
        dst.write(np.moveaxis(q, -1, 0))
        dst.descriptions = tuple(f"A{i:02d}" for i in range(BANDS))
