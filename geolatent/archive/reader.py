"""Read access to an archive, whatever its layout: zones of a pixel grid with stored vectors.

Two layouts are read in place:

* a geolatent Zarr v3 archive (:mod:`.store`): one zone per UTM zone group;
* the Google Satellite Embedding / AlphaEarth Foundations COG layout (:mod:`.alphaearth`):
  one zone per COG.

Both store unit vectors with the same int8 rule (or floats), so :func:`.quantize.decode` reads
both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import zarr
from affine import Affine

from geolatent.archive.store import FORMAT, ArchiveError, grid_from_attrs


class Zone(Protocol):
    """One pixel grid of an archive."""

    name: str
    crs: str
    transform: Affine
    shape: tuple[int, int]
    strip_rows: int

    def read_rows(self, r0: int, r1: int) -> np.ndarray:
        """Stored values ``[r1 - r0, cols, dims]``."""

    def read_pixels(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Stored values ``[N, dims]`` at the given pixels (inside the grid)."""


@dataclass
class ZarrZone:
    name: str
    crs: str
    transform: Affine
    shape: tuple[int, int]
    strip_rows: int
    array: zarr.Array

    def read_rows(self, r0: int, r1: int) -> np.ndarray:
        return self.array[r0:r1]

    def read_pixels(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros((0, self.array.shape[-1]), self.array.dtype)
        d = np.arange(self.array.shape[-1])[None, :]
        return self.array.vindex[np.asarray(rows)[:, None], np.asarray(cols)[:, None], d]


@dataclass
class ArchiveInfo:
    """What every layout tells: its model, dims, quantization and zones."""

    path: Path
    layout: str
    model: dict
    dims: int
    dtype: str
    zones: list
    attrs: dict
    complete: bool = True


def open_zarr(path: Path) -> ArchiveInfo:
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as e:
        raise ArchiveError(f"{path}: cannot open as a Zarr store ({type(e).__name__}: {e})") from e
    attrs = dict(root.attrs)
    if attrs.get("geolatent:format") != FORMAT:
        raise ArchiveError(f"{path} is a Zarr store but not a geolatent embedding archive "
                           f"(no geolatent:format attribute)")  # fmt: skip
    dims = int(attrs["geoemb:dims"])
    zones = []
    for name in sorted(root["zones"].group_keys()) if "zones" in root else []:
        g = root["zones"][name]
        grid = grid_from_attrs(dict(g.attrs))
        arr = g["embeddings"]
        if arr.shape[-1] != dims:
            raise ArchiveError(f"{path}: zone {name} stores {arr.shape[-1]}-d vectors but the "
                               f"archive declares geoemb:dims {dims}; the archive is damaged")
        zones.append(ZarrZone(name, grid.crs, grid.transform, arr.shape[:2], arr.chunks[0], arr))
    return ArchiveInfo(path, "zarr", dict(attrs["geoemb:model"]), dims,
                       attrs["geoemb:quantization"]["dtype"], zones, attrs,
                       bool(attrs.get("geolatent:complete")))  # fmt: skip
