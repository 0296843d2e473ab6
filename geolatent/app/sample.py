"""The built-in sample project: the synthetic sample scene of ``geolatent demo`` written as
monthly COGs into the project's imagery folder, its footprint as AOI and its classes as the
label schema."""

from __future__ import annotations

import tempfile
from pathlib import Path

import rasterio
import rasterio.shutil
from pyproj import Transformer
from shapely.geometry import box, mapping
from shapely.ops import transform as shp_transform

from geolatent.data.synthetic import (
    CLASS_COLORS,
    CLASS_NAMES,
    make_sample_scene,
    write_scene_geotiffs,
)

SAMPLE_SIZE = 128  # pixels of 10 m: 1.28 km square
SAMPLE_YEAR = 2024


def sample_label_schema() -> dict:
    return {"kind": "class", "classes": [
        {"value": name, "name": name.replace("_", " "), "color": "#" + bytes(rgb).hex()}
        for name, rgb in zip(CLASS_NAMES, CLASS_COLORS, strict=True)]}


def write_sample_imagery(folder: Path) -> dict:
    """Write the sample scene's monthly Sentinel-2 and Sentinel-1 images as COGs into
    ``folder``; returns the footprint as a lon/lat GeoJSON polygon."""
    scene = make_sample_scene(SAMPLE_SIZE, SAMPLE_SIZE, 12, seed=0, year=SAMPLE_YEAR)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".sample-") as tmp:
        files = write_scene_geotiffs(scene, tmp)
        for paths in (files["sentinel2_l2a"], files["sentinel1"]):
            for p in paths:
                # COG with overviews: what the tile server expects of any imagery
                rasterio.shutil.copy(p, folder / p.name, driver="COG", compress="DEFLATE",
                                     blocksize=256, overview_resampling="average")
    h, w = scene.labels.shape
    t = scene.transform
    footprint = box(t.c, t.f + h * t.e, t.c + w * t.a, t.f)
    to_ll = Transformer.from_crs(scene.crs.to_wkt(), "EPSG:4326", always_xy=True).transform
    return mapping(shp_transform(to_ll, footprint))


def sample_dates() -> tuple[str, str]:
    return f"{SAMPLE_YEAR}-01-01", f"{SAMPLE_YEAR}-12-31"
