"""Helpers of the data-layer tests: locating the real data, writing small rasters, opening
them as a source."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from shared_data import REAL_DATA as REAL

from geolatent.data.config import FileSourceConfig
from geolatent.data.sources import Source, open_source


def real_path(*parts: str) -> Path:
    """A file or folder of the shared real-data set; skips the test when it is absent."""
    p = REAL.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real test data not found at {p} (set GEOLATENT_SHARED to the shared/ folder)")
    return p


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = "EPSG:32631",
    origin: tuple[float, float] = (500_000.0, 4_800_000.0),
    res: float = 10.0,
    nodata: float | None = None,
    tags: dict[str, str] | None = None,
    georeferenced: bool = True,
    **profile,
) -> Path:
    """Write ``data`` ``[C, H, W]`` (or ``[H, W]``) as a GeoTIFF with a north-up transform."""
    data = data[None] if data.ndim == 2 else data
    kw = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        nodata=nodata,
        **profile,
    )
    if crs is not None:
        kw["crs"] = crs
    if georeferenced:
        kw["transform"] = Affine(res, 0.0, origin[0], 0.0, -res, origin[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # intended when not georeferenced
        with rasterio.open(path, "w", **kw) as dst:
            dst.write(data)
            if tags:
                dst.update_tags(**tags)
    return path


def vv_source(paths: str | list[str], **config) -> Source:
    """A Sentinel-1 ``files`` source named ``s1`` reading the ``vv`` band from ``paths`` (globs);
    ``config`` adds or overrides :class:`FileSourceConfig` fields (dates, nodata, units)."""
    paths = [paths] if isinstance(paths, str) else paths
    return open_source(FileSourceConfig(**{
        "name": "s1", "modality": "sentinel1", "bands": ["vv"], "paths": paths, **config}))
