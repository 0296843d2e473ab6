"""GeoParquet point samples of an archive, for DuckDB / GeoPandas / LanceDB users.

``samples.parquet`` in the archive folder: one row per sampled output pixel (the valid pixels
on a regular stride chosen so that at most ``samples_max`` rows are written), columns

* ``geometry``: WKB point at the pixel centre, lon/lat (OGC:CRS84), GeoParquet 1.1 ``geo``
  metadata;
* ``crs`` (the zone's EPSG code string), ``row``, ``col`` (output pixel in the zone's
  ``embeddings``), ``x``, ``y`` (pixel centre in the zone CRS, metres);
* ``embedding``: ``fixed_size_list<float32>[dims]``, the dequantized unit vector.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
import zarr
from pyproj import Transformer

from geolatent.archive.quantize import decode
from geolatent.archive.store import grid_from_attrs


def count_valid(zone: zarr.Group) -> int:
    emb = zone["embeddings"]
    n = 0
    for r in range(0, emb.shape[0], emb.chunks[0]):
        n += int(decode(emb[r:r + emb.chunks[0]])[1].sum())
    return n


def write_samples(root: zarr.Group, path: str | os.PathLike, samples_max: int) -> int:
    """Write the samples file at ``path``; returns the number of valid vectors in the archive.

    The build writes it inside its work area and moves it into place (atomic publication)."""
    path = Path(path)
    zones = [root["zones"][n] for n in sorted(root["zones"])]
    totals = [count_valid(z) for z in zones]
    total = sum(totals)
    stride = max(1, math.ceil(math.sqrt(total / samples_max))) if samples_max > 0 else 0
    tables = []
    for zone in zones:
        grid = grid_from_attrs(dict(zone.attrs))
        emb = zone["embeddings"]
        step = emb.chunks[0]
        to_ll = Transformer.from_crs(grid.crs, "OGC:CRS84", always_xy=True)
        for r0 in range(0, emb.shape[0], step):
            block = emb[r0:r0 + step]
            v, ok = decode(block)
            rows, cols = np.nonzero(ok)
            keep = ((rows + r0) % stride == 0) & (cols % stride == 0)
            rows, cols = rows[keep], cols[keep]
            if not len(rows):
                continue
            x, y = grid.transform @ (cols + 0.5, rows + r0 + 0.5)
            lon, lat = to_ll.transform(np.asarray(x), np.asarray(y))
            vec = v[rows, cols].astype(np.float32)
            dims = vec.shape[1]
            tables.append(pa.table({
                "geometry": pa.array(shapely.to_wkb(shapely.points(lon, lat)), pa.binary()),
                "crs": pa.array([grid.crs] * len(rows)),
                "row": pa.array(rows + r0, pa.int32()), "col": pa.array(cols, pa.int32()),
                "x": pa.array(x, pa.float64()), "y": pa.array(y, pa.float64()),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), dims),
            }))  # fmt: skip
    dims = int(root.attrs["geoemb:dims"])
    schema = pa.schema([("geometry", pa.binary()), ("crs", pa.string()), ("row", pa.int32()),
                        ("col", pa.int32()), ("x", pa.float64()), ("y", pa.float64()),
                        ("embedding", pa.list_(pa.float32(), dims))])  # fmt: skip
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    bbox = [-180.0, -90.0, 180.0, 90.0]
    if table.num_rows:
        b = shapely.total_bounds(shapely.from_wkb(table["geometry"].to_numpy(False)))
        bbox = [float(v) for v in b]
    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"],
                                    "bbox": bbox}}}  # fmt: skip
    meta = dict(schema.metadata or {})
    meta[b"geo"] = json.dumps(geo).encode()
    meta[b"geoemb"] = json.dumps({"model": root.attrs["geoemb:model"], "dims": dims,
                                  "stride": stride}).encode()  # fmt: skip
    table = table.cast(schema).replace_schema_metadata(meta)
    pq.write_table(table, path)
    return total
