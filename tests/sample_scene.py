"""Helpers over the built-in sample scene written as GeoTIFFs (``write_scene_geotiffs``): its
Sentinel-2 file source, its footprint and point labels taken from its class map.

A root-level helper module so that every test folder can import it (``tests/`` is on
``sys.path`` because the root ``conftest.py`` lives there).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import shapely

from geolatent.data.synthetic import SampleScene
from geolatent.data.window import WGS84, reproject_geometry
from geolatent.modalities import MODALITIES

S2 = "sentinel2_l2a"


def s2_source(folder: Path, name: str = "s2", pattern: str = "sentinel2_l2a_*.tif") -> dict:
    """A data-layer file source for the scene's Sentinel-2 files."""
    return dict(name=name, type="files", modality=S2, paths=[str(folder / pattern)],
                bands=list(MODALITIES[S2].bands), date_pattern=r"_(\d{4}-\d{2}-\d{2})\.tif",
                date_format="%Y-%m-%d")


def scene_box(scene: SampleScene, inset_px: float = 0.0) -> shapely.Polygon:
    """The scene footprint in lon/lat, shrunk by ``inset_px`` pixels on each side."""
    t = scene.transform
    x0, y0 = t @ (inset_px, inset_px)
    x1, y1 = t @ (scene.width - inset_px, scene.height - inset_px)
    poly = shapely.segmentize(shapely.box(x0, y1, x1, y0), 50.0)
    return reproject_geometry(poly, scene.crs.to_string(), WGS84)


def write_point_labels(scene: SampleScene, path: Path, rows: np.ndarray, cols: np.ndarray,
                       label: Callable[[int], object] = int) -> Path:
    """A ``lat,lon,landcover`` CSV of points at the centres of pixels ``(rows, cols)``, each
    labelled ``label(class index)`` from the scene's class map."""
    lines = ["lat,lon,landcover"]
    for r, c in zip(rows, cols, strict=True):
        x, y = scene.transform @ (c + 0.5, r + 0.5)
        p = reproject_geometry(shapely.Point(x, y), scene.crs.to_string(), WGS84)
        lines.append(f"{p.y},{p.x},{label(int(scene.labels[r, c]))}")
    path.write_text("\n".join(lines) + "\n")
    return path
