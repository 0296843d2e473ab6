"""The on-disk layout of an embedding archive: a Zarr v3 store (``zarr>=3``).

::

    region.zarr/
      zarr.json                    root group; ``geoemb:*`` attributes (below)
      projection/                  PCA from the model's D dims to the stored dims (PCA archives)
        mean        float32 [D_model]
        components  float32 [dims, D_model]   rows ordered by explained variance
        explained_variance_ratio float32 [dims]
      zones/<EPSG code>/           one group per UTM zone, e.g. zones/32633
        embeddings  int8|float16|float32 [rows, cols, dims]
                    chunks (tile/p, tile/p, dims): one chunk per build tile holding every dim,
                    so a map read of an area touches the tiles it covers and a vector read
                    touches exactly one chunk; dimension_names (y, x, dim)
        tiles_planned uint8 [tile_rows, tile_cols]  1 where a build tile intersects the area
        overview_rgb  uint8 [3, rows, cols]  first three principal components stretched to
                      0-255 (for viewing; written when the build completes)
      .geolatent-archive           marker: this folder holds a geolatent archive (run driver)
    region.samples.parquet         beside the store: GeoParquet point samples (:mod:`.samples`)
    region.faiss, region.faiss.json  beside the store: FAISS index, built on demand (:mod:`.index`)

Root attributes (the ``geoemb:`` convention of community geo-embedding Zarr stores):
``geoemb:model`` (id, revision, provenance), ``geoemb:dims``, ``geoemb:matryoshka_prefixes``,
``geoemb:quantization`` (rule and inverse, :func:`.quantize.quantization_attrs`),
``geoemb:time_range``, ``geoemb:patch_size`` (the model's p), ``geoemb:pixel_size_m``,
``geoemb:vectors`` (what each vector is, its cell and resolution), ``geoemb:reduction``.
Zone attributes: ``geoemb:crs`` and ``geoemb:transform`` (GDAL order ``[a, b, c, d, e, f]`` of
the affine pixel -> CRS transform of ``embeddings``; pixels of ``10 * p`` m, or 10 m for a
per-pixel archive).

An archive is only ever seen complete: :func:`geolatent.archive.build` keeps finished tiles in
the run driver's work store (``region.zarr/.work``) and publishes the store's nodes when every
tile is done, the root ``zarr.json`` last (see :mod:`.build`). Chunks are tiles, so no two
tiles ever share a chunk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from affine import Affine

FORMAT = "geolatent-embedding-archive"
FORMAT_VERSION = 1


class ArchiveError(ValueError):
    """An archive that cannot be used as asked; the message says what to change."""


@dataclass(frozen=True)
class ZoneGrid:
    """The output grid of one UTM zone.

    Attributes:
        crs: e.g. ``"EPSG:32633"``.
        col0, row0: upper-left input pixel (10 m) on the zone's global grid.
        tile_rows, tile_cols: number of build tiles down / across.
        tile_size: build tile side in input pixels.
        patch_size: the output pixel's side in input pixels: p for patch vectors, the location
            patch size (1 for per-pixel archives) for location vectors (:mod:`.vectors`).
        resolution: input pixel size in metres.
    """

    crs: str
    col0: int
    row0: int
    tile_rows: int
    tile_cols: int
    tile_size: int
    patch_size: int
    resolution: float

    @property
    def name(self) -> str:
        return self.crs.split(":")[-1]

    @property
    def tile_out(self) -> int:
        """Tile side in output pixels."""
        return self.tile_size // self.patch_size

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the output grid."""
        return self.tile_rows * self.tile_out, self.tile_cols * self.tile_out

    @property
    def transform(self) -> Affine:
        step = self.resolution * self.patch_size
        return Affine(step, 0.0, self.col0 * self.resolution, 0.0, -step,
                      -self.row0 * self.resolution)  # fmt: skip

    def tile_of(self, col: int, row: int) -> tuple[int, int]:
        """``(tile_row, tile_col)`` of the tile whose upper-left input pixel is (col, row)."""
        return (row - self.row0) // self.tile_size, (col - self.col0) // self.tile_size


def zone_attrs(grid: ZoneGrid) -> dict:
    t = grid.transform
    return {"geoemb:crs": grid.crs, "geoemb:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
            "geolatent:grid": {"col0": grid.col0, "row0": grid.row0,
                               "tile_rows": grid.tile_rows, "tile_cols": grid.tile_cols,
                               "tile_size": grid.tile_size, "patch_size": grid.patch_size,
                               "resolution": grid.resolution}}  # fmt: skip


def grid_from_attrs(attrs: dict) -> ZoneGrid:
    g = attrs["geolatent:grid"]
    return ZoneGrid(attrs["geoemb:crs"], int(g["col0"]), int(g["row0"]), int(g["tile_rows"]),
                    int(g["tile_cols"]), int(g["tile_size"]), int(g["patch_size"]),
                    float(g["resolution"]))  # fmt: skip


def beside(path: str | Path, suffix: str) -> Path:
    """``region.zarr`` -> ``region<suffix>`` in the same folder (files kept out of the store, so
    Zarr readers see only Zarr nodes)."""
    p = Path(path)
    stem = p.name[: -len(".zarr")] if p.name.endswith(".zarr") else p.name
    return p.with_name(stem + suffix)


def is_archive(path: str | Path) -> bool:
    p = Path(path)
    if not (p / "zarr.json").is_file():
        return False
    meta = json.loads((p / "zarr.json").read_text())
    return (meta.get("attributes") or {}).get("geolatent:format") == FORMAT


def create_zone(root: zarr.Group, grid: ZoneGrid, dims: int, dtype: str,
                planned: np.ndarray) -> zarr.Group:
    """Create the group and arrays of one zone (empty; unwritten chunks read as nodata)."""
    g = root.require_group("zones").create_group(grid.name, attributes=zone_attrs(grid))
    rows, cols = grid.shape
    fill = -128 if dtype == "int8" else float("nan")
    g.create_array("embeddings", shape=(rows, cols, dims), dtype=dtype,
                   chunks=(grid.tile_out, grid.tile_out, dims), fill_value=fill,
                   dimension_names=("y", "x", "dim"))  # fmt: skip
    g.create_array("tiles_planned", data=planned.astype(np.uint8), chunks=planned.shape)
    return g


def create_archive(path: str | Path, *, model: dict, dims: int, dtype: str, patch_size: int = 4,
                   time_range: tuple[str, str] = ("", ""), extra: dict | None = None
                   ) -> zarr.Group:
    """A new, empty archive store with its root attributes (no projection, no zones).

    :func:`geolatent.archive.build` uses its own path; this is for archives whose vectors come
    from elsewhere (synthetic benchmarks, tests, conversions), written with
    :func:`write_zone_vectors`.
    """
    from geolatent.archive.quantize import quantization_attrs
    from geolatent.modalities import BASE_RESOLUTION_M

    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    root.attrs.update({
        "geolatent:format": FORMAT, "geolatent:format_version": FORMAT_VERSION,
        "geolatent:build": {"model": model.get("id"), "revision": model.get("revision"),
                            "dims": dims, "dtype": dtype, "patch_size": patch_size},
        "geoemb:model": model, "geoemb:dims": dims,
        "geoemb:matryoshka_prefixes": [d for d in (16, 32, 64, 128) if d <= dims],
        "geoemb:quantization": quantization_attrs(dtype),
        "geoemb:time_range": list(time_range), "geoemb:patch_size": patch_size,
        "geoemb:pixel_size_m": BASE_RESOLUTION_M * patch_size, "geolatent:complete": True,
        **(extra or {}),
    })  # fmt: skip
    return root


def write_zone_vectors(root: zarr.Group, crs: str, col0: int, row0: int, rows: int, cols: int,
                       strips, *, tile_out: int = 64) -> ZoneGrid:
    """Add a zone of ``rows x cols`` output pixels filled from ``strips``.

    Args:
        root: an archive from :func:`create_archive`.
        crs: the zone's CRS; ``col0``, ``row0``: its upper-left 10 m pixel on the global grid.
        strips: iterable of float unit vectors ``[tile_out, cols, dims]`` (NaN = nodata), top to
            bottom (the last may be shorter); encoded with the archive's dtype.
        tile_out: chunk side in output pixels.
    """
    from geolatent.archive.quantize import encode

    p = int(root.attrs["geoemb:patch_size"])
    dims = int(root.attrs["geoemb:dims"])
    dtype = root.attrs["geoemb:quantization"]["dtype"]
    tr, tc = -(-rows // tile_out), -(-cols // tile_out)
    grid = ZoneGrid(crs, col0, row0, tr, tc, tile_out * p, p, 10.0)
    g = create_zone(root, grid, dims, dtype, np.ones((tr, tc), np.uint8))
    arr = g["embeddings"]
    r = 0
    for block in strips:
        arr[r:r + block.shape[0], :block.shape[1]] = encode(block, dtype)
        r += block.shape[0]
    return grid
