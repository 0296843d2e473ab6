"""Class maps -> polygons (GeoJSON, lon/lat), block by block with bounded memory.

The map is read in ``block`` x ``block`` windows; each window's connected regions of one class
become polygons (:func:`rasterio.features.shapes`), reprojected to lon/lat (RFC 7946) and
streamed to the file, which is written under a temporary name and renamed when complete. A
region crossing a block edge is split there (one polygon per block it touches), which keeps
memory independent of the map size; dissolve by ``class`` downstream when whole regions matter.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window as RasterWindow
from shapely.geometry import mapping, shape

from geolatent.data.window import WGS84, reproject_geometry
from geolatent.platform.classes import ClassTable


def write_class_polygons(
    map_path: str | os.PathLike,
    out_path: str | os.PathLike,
    classes: ClassTable,
    block: int = 1024,
) -> int:
    """Write the polygons of a class map as a GeoJSON FeatureCollection.

    Args:
        map_path: a single-band class-index raster (nodata = no polygon).
        out_path: the ``.geojson`` to write.
        classes: names and label values of the class indices.
        block: read window side in pixels.

    Returns:
        The number of features written. Properties: ``class`` (index), ``name``, ``value``.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex[:8]}")
    n = 0
    try:
        with rasterio.open(map_path) as src, open(tmp, "w") as fh:
            nodata = src.nodata
            crs = src.crs.to_string()
            fh.write('{"type": "FeatureCollection", "features": [\n')
            for r in range(0, src.height, block):
                for c in range(0, src.width, block):
                    win = RasterWindow(c, r, min(block, src.width - c), min(block, src.height - r))
                    data = src.read(1, window=win)
                    mask = data != nodata if nodata is not None else np.ones_like(data, bool)
                    if not mask.any():
                        continue
                    found = list(rasterio.features.shapes(
                        data, mask=mask, connectivity=4,
                        transform=src.transform @ Affine.translation(c, r)))
                    geoms = np.array([shape(g) for g, _ in found], dtype=object)
                    geoms = reproject_geometry(geoms, crs, WGS84)
                    for geom, (_, value) in zip(np.atleast_1d(geoms), found, strict=True):
                        k = int(value)
                        name = classes.names[k] if k < classes.num_classes else str(k)
                        label = classes.values[k] if k < classes.num_classes else None
                        feat = {"type": "Feature", "geometry": mapping(shapely.set_precision(
                            geom, 1e-7)), "properties": {"class": k, "name": name,
                                                         "value": label}}
                        fh.write(("" if n == 0 else ",\n") + json.dumps(feat))
                        n += 1
            fh.write("\n]}\n")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return n
