"""Helpers for the archive tests: the built-in sample scene written as GeoTIFFs, its sources
and its area as lon/lat GeoJSON."""

from __future__ import annotations

import json
from pathlib import Path

import shapely
import yaml
from shapely.geometry import box, mapping

from geolatent.data.config import FileSourceConfig
from geolatent.data.synthetic import make_sample_scene, write_scene_geotiffs
from geolatent.data.window import WGS84, reproject_geometry
from geolatent.modalities import MODALITIES

# 2 x 3 build tiles of 32 px (2 x 2 of the default 64 px) on the global grid.
ORIGIN = (400_000.0, 5_100_480.0)  # row 510048 = 32 * 15939: aligned to 32 px tiles
HEIGHT, WIDTH = 64, 96


def write_sample(folder: Path, seed: int = 0, months: int = 3) -> dict:
    """Write the sample scene and a ``data.yaml`` of its source; return ``{"sources": [...],
    "aoi": path, "scene": scene, "config": data.yaml, "dir": folder}``."""
    scene = make_sample_scene(HEIGHT, WIDTH, timesteps=months, seed=seed, origin=ORIGIN)
    write_scene_geotiffs(scene, folder / "imagery")
    sources = [
        FileSourceConfig(name="s2", type="files", modality="sentinel2_l2a",
                         paths=[str(folder / "imagery" / "sentinel2_l2a_*.tif")],
                         bands=list(MODALITIES["sentinel2_l2a"].bands), nodata=0,
                         date_pattern=r"_(\d{4}-\d{2}-\d{2})\.tif", date_format="%Y-%m-%d"),
    ]  # fmt: skip
    x0, y1 = ORIGIN
    area = box(x0 + 5, y1 - HEIGHT * 10 + 5, x0 + WIDTH * 10 - 5, y1 - 5)
    ll = reproject_geometry(shapely.segmentize(area, 20), scene.crs.to_string(), WGS84)
    aoi = folder / "area.geojson"
    aoi.write_text(json.dumps(mapping(ll)))
    cfg = folder / "data.yaml"
    cfg.write_text(yaml.safe_dump({"sources": [sources[0].model_dump(mode="json")]}))
    return {"sources": sources, "aoi": aoi, "scene": scene, "config": cfg, "dir": folder}


# -- a deterministic synthetic archive with planted matches --------------------------------------
ZONE_CRS = "EPSG:32633"
COL0, ROW0 = 40_000, -510_000  # upper-left 10 m pixel: x 400 000 m, y 5 100 000 m
MODEL = {"id": "synthetic-test-model", "revision": "r1", "embedding_size": 32, "provenance": {}}


def planted_vectors(rows: int, cols: int, dims: int, n_planted: int, noise: float, seed: int = 0):
    """Gaussian unit background, ``n_planted`` pixels near one target direction.

    Returns ``(vectors [rows, cols, dims], planted (row, col) array [n, 2])``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    v = rng.normal(size=(rows, cols, dims)).astype(np.float32)
    target = rng.normal(size=dims).astype(np.float32)
    target /= np.linalg.norm(target)
    flat = rng.choice(rows * cols, n_planted, replace=False)
    pr, pc = np.divmod(flat, cols)
    v[pr, pc] = target + noise * rng.normal(size=(n_planted, dims)) / np.sqrt(dims)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return v, np.stack([pr, pc], 1)


def write_planted_archive(path: Path, vectors, dtype: str = "int8", tile_out: int = 32,
                          model: dict | None = None) -> None:
    from geolatent.archive.store import create_archive, write_zone_vectors

    rows, cols, dims = vectors.shape
    root = create_archive(path, model=dict(model or MODEL, embedding_size=dims), dims=dims,
                          dtype=dtype)
    strips = (vectors[r:r + tile_out] for r in range(0, rows, tile_out))
    write_zone_vectors(root, ZONE_CRS, COL0, ROW0, rows, cols, strips, tile_out=tile_out)


def pixel_lonlat(rc, patch_size: int = 4, crs: str = ZONE_CRS, col0: int = COL0,
                 row0: int = ROW0):
    """lon/lat of the centres of output pixels ``[(row, col)]`` of the synthetic zone."""
    import numpy as np
    from pyproj import Transformer

    rc = np.asarray(rc, dtype=np.float64).reshape(-1, 2)
    step = 10.0 * patch_size
    x = col0 * 10.0 + (rc[:, 1] + 0.5) * step
    y = -row0 * 10.0 - (rc[:, 0] + 0.5) * step
    lon, lat = Transformer.from_crs(crs, "OGC:CRS84", always_xy=True).transform(x, y)
    return [(float(a), float(b)) for a, b in zip(lon, lat, strict=True)]
