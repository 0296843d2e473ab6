"""``geolatent archive build``: embeddings of every location of an area into a Zarr v3 archive.

Pipeline::

    area + dates -> build tiles (``tile_size`` px squares on each UTM zone's global grid,
    :func:`geolatent.data.tile_windows`) -> PCA fitted once on a deterministic sample of tiles
    (stored in the archive) -> per tile: materialize (executor: serial, process pool or Dask)
    -> :func:`.tile.embed_arrays` -> :func:`.tile.encode_block` -> write the tile's chunk ->
    mark the tile done -> (all done) PCA RGB overview + GeoParquet samples.

One vector per ``p x p`` patch (``10 * p`` m pixels), the feature map of
:func:`geolatent.model.embed.embed` (the mean over time steps and bandsets of the encoder's
tokens at that patch). Each tile is embedded on its own (no overlap margin); v1 encodes a window
as a whole, so a patch's vector depends on the tile it sits in, as for any tiled run.

Dimensions: the model's ``D`` dims (128 for Nano, 768 for Base) are reduced to ``dims`` (128 or
64) by a PCA whose components are ordered by explained variance, then L2-normalized. OlmoEarth v1
has no Matryoshka-trained (distilled) embedding, so taking the leading ``dims`` of the raw
vector would keep arbitrary axes; PCA coordinates are nested by construction: the first ``k``
coordinates are the best ``k``-dim linear summary, so every prefix listed in
``geoemb:matryoshka_prefixes`` is a valid lower-dimensional embedding (renormalize after
slicing). The PCA is fitted on up to ``pca_tiles`` tiles spread evenly over the plan.

Resumable: the PCA is written before any tile and reused by a rerun; a tile is marked done only
after its chunk is written, so a rerun after an interruption (even ``kill -9``) recomputes only
unfinished tiles and produces the same arrays as an uninterrupted run. A rerun with different
settings (model, dims, dtype, patch size, dates, area) into the same store is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import rasterio.features
import shapely
import torch
import zarr
from pydantic import TypeAdapter

from geolatent.archive.quantize import (
    check_dtype,
    dequantization_cosine,
    quantization_attrs,
)
from geolatent.archive.store import (
    FORMAT,
    FORMAT_VERSION,
    ArchiveError,
    ZoneGrid,
    beside,
    create_zone,
    grid_from_attrs,
)
from geolatent.archive.tile import embed_arrays, encode_block, materialize_tile, project
from geolatent.data.config import SourceConfig
from geolatent.data.executor import make_executor
from geolatent.data.sources import Source, open_sources
from geolatent.data.window import WGS84, Window, reproject_geometry, tile_windows
from geolatent.modalities import BASE_RESOLUTION_M

DIMS = (128, 64)
Progress = Callable[[int, int], None]


@dataclass
class BuildResult:
    """Summary of a :func:`build` run."""

    path: Path
    zones: list[str]
    tiles_total: int
    tiles_run: int
    tiles_resumed: int
    vectors: int
    area_km2: float
    seconds: float
    dequantization_cosine: float

    @property
    def km2_per_s(self) -> float:
        return self.area_km2 / self.seconds if self.seconds > 0 else float("nan")


# -- model identity -----------------------------------------------------------------------------
def load_archive_model(model: str | os.PathLike | torch.nn.Module):
    """A model folder (geolatent or v1 release) or an already loaded model."""
    if isinstance(model, torch.nn.Module):
        return model.eval()
    from geolatent.model import load_model

    p = Path(model)
    if not p.exists():
        raise FileNotFoundError(
            f"--model {model}: no model folder there (give a folder with config.json and "
            f"weights; no random weights are ever used)"
        )
    m = load_model(p)
    m.__dict__.setdefault("_archive_source", str(p.resolve()))
    return m


def model_identity(model) -> dict:
    """``{"id", "revision", "embedding_size", "provenance"}`` recorded in ``geoemb:model``.

    ``revision`` is the provenance revision when the model carries one, else the SHA-256 of
    its weights (state dict in key order), so two different weight sets never match.
    """
    prov = getattr(model, "provenance", None) or {}
    prov = json.loads(json.dumps(prov, default=str))
    src = getattr(model, "_archive_source", None)
    model_id = prov.get("model_id") or prov.get("id") or (Path(src).name if src else None) \
        or f"olmoearth-v1-{model.config.size or 'custom'}"
    revision = prov.get("revision")
    if not revision:
        h = hashlib.sha256()
        for k, v in sorted(model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        revision = "sha256:" + h.hexdigest()[:16]
    return {"id": str(model_id), "revision": str(revision),
            "embedding_size": int(model.config.embedding_size), "provenance": prov}  # fmt: skip


# -- inputs ---------------------------------------------------------------------------------------
def read_sources(config: str | os.PathLike) -> list[SourceConfig]:
    """The ``sources:`` list of a data / fine-tuning YAML (relative paths against the file)."""
    from geolatent.platform.config import resolve_source_paths
    from geolatent.yaml_io import read_yaml_mapping

    path = Path(config)
    raw = read_yaml_mapping(path)
    if not raw.get("sources"):
        raise ValueError(f"--config {path}: expected a mapping with a `sources:` list")
    srcs = TypeAdapter(list[SourceConfig]).validate_python(raw["sources"])
    return resolve_source_paths(srcs, path.resolve().parent)


def _time_range(start: str | date, end: str | date) -> tuple[date, date]:
    s = date.fromisoformat(str(start))
    e = date.fromisoformat(str(end))
    if e < s:
        raise ValueError(f"--end {e} is before --start {s}")
    return s, e + timedelta(days=1)  # end inclusive -> exclusive


def plan_zones(area_wgs84, windows: Sequence[Window], tile_size: int, patch_size: int
               ) -> dict[str, tuple[ZoneGrid, list[Window]]]:
    """Group build tiles by CRS and fix each zone's output grid."""
    by_crs: dict[str, list[Window]] = {}
    for w in windows:
        by_crs.setdefault(w.crs, []).append(w)
    out = {}
    for crs, ws in sorted(by_crs.items()):
        c0 = min(w.pixel_bounds[0] for w in ws)
        r0 = min(w.pixel_bounds[1] for w in ws)
        c1 = max(w.pixel_bounds[2] for w in ws)
        r1 = max(w.pixel_bounds[3] for w in ws)
        grid = ZoneGrid(crs, c0, r0, (r1 - r0) // tile_size, (c1 - c0) // tile_size, tile_size,
                        patch_size, ws[0].resolution)  # fmt: skip
        ws.sort(key=lambda w: (w.pixel_bounds[1], w.pixel_bounds[0]))
        out[crs] = (grid, ws)
    return out


def area_mask(area_wgs84, window: Window, patch_size: int) -> np.ndarray:
    """bool ``[H/p, W/p]``: output pixels whose centre lies inside the area."""
    geom = reproject_geometry(shapely.segmentize(area_wgs84, 0.001), WGS84, window.crs)
    t = window.transform @ window.transform.scale(patch_size)
    h, w = window.height // patch_size, window.width // patch_size
    return rasterio.features.geometry_mask([geom], (h, w), t, invert=True, all_touched=False)


# -- the store ------------------------------------------------------------------------------------
def _signature(ident: dict, dims: int, dtype: str, patch_size: int, tile_size: int,
               time_range: tuple[date, date], area_wgs84) -> dict:
    return {"model": ident["id"], "revision": ident["revision"], "dims": dims, "dtype": dtype,
            "patch_size": patch_size, "tile_size": tile_size,
            "time_range": [time_range[0].isoformat(), time_range[1].isoformat()],
            "area_sha256": hashlib.sha256(shapely.to_wkb(area_wgs84)).hexdigest()[:16]}


def _check_signature(path: Path, old: dict, new: dict) -> None:
    diff = [k for k in new if old.get(k) != new[k]]
    if not diff:
        return
    names = {"model": "--model", "revision": "--model (other weights)", "dims": "--dims",
             "dtype": "--dtype", "patch_size": "--patch-size", "time_range": "--start/--end",
             "area_sha256": "--aoi", "tile_size": "tile_size"}  # fmt: skip
    detail = "; ".join(f"{names[k]}: archive has {old.get(k)!r}, asked {new[k]!r}" for k in diff)
    raise ArchiveError(
        f"--out {path} already holds an archive built with other settings ({detail}). "
        f"Choose another --out, or delete {path} to rebuild; nothing was changed."
    )


def _open_or_create(path: Path, sig: dict, attrs: dict) -> zarr.Group:
    if path.exists():
        if not (path / "zarr.json").is_file():
            raise ArchiveError(f"--out {path} exists and is not a Zarr archive; choose another "
                               f"--out (nothing of yours is overwritten)")
        root = zarr.open_group(str(path), mode="r+")
        if root.attrs.get("geolatent:format") != FORMAT:
            raise ArchiveError(f"--out {path} is a Zarr store but not a geolatent archive; "
                               f"choose another --out")
        _check_signature(path, dict(root.attrs.get("geolatent:build", {})), sig)
        return root
    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    root.attrs.update(attrs)
    return root


def _fit_projection(root: zarr.Group, samples: list[np.ndarray], dims: int) -> None:
    """PCA of the sampled feature vectors (float64 SVD of the centred data), stored in
    ``projection/``. Signs are fixed (largest-magnitude loading of each component positive) so
    a refit gives the same components."""
    x = np.concatenate([s.reshape(-1, s.shape[-1]) for s in samples])
    x = x[~np.isnan(x).any(axis=1)].astype(np.float64)
    if len(x) < dims:
        raise ArchiveError(
            f"only {len(x)} embedded locations in the sampled tiles, fewer than --dims {dims}: "
            f"the PCA to {dims} dims needs at least that many; use a larger --aoi, a smaller "
            f"--patch-size or --dims 64"
        )
    if dims > x.shape[1]:
        raise ArchiveError(f"--dims {dims} exceeds the model's embedding size {x.shape[1]}")
    mean = x.mean(axis=0)
    # numpy's SVD rather than scikit-learn's PCA: the same decomposition, without importing
    # scikit-learn (and SciPy) into every build.
    _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = vt[:dims]
    flip = np.sign(comps[np.arange(dims), np.abs(comps).argmax(axis=1)])
    comps *= flip[:, None]
    var = sv**2
    g = root.require_group("projection")
    g.create_array("mean", data=mean.astype(np.float32), overwrite=True)
    g.create_array("components", data=comps.astype(np.float32), overwrite=True)
    g.create_array("explained_variance_ratio", data=(var[:dims] / var.sum()).astype(np.float32),
                   overwrite=True)


def _projection(root: zarr.Group, require_complete: bool = True
                ) -> tuple[np.ndarray, np.ndarray] | None:
    if "projection" not in root:
        return None
    g = root["projection"]
    if require_complete and not g.attrs.get("complete"):
        return None
    return g["mean"][:], g["components"][:]


def build(
    model: str | os.PathLike | torch.nn.Module,
    aoi,
    start: str | date,
    end: str | date,
    out: str | os.PathLike,
    *,
    sources: Sequence[SourceConfig | Source] | None = None,
    config: str | os.PathLike | None = None,
    patch_size: int = 4,
    dims: int = 128,
    dtype: str = "int8",
    tile_size: int = 64,
    executor: str = "serial",
    workers: int | None = None,
    scheduler: str | None = None,
    pca_tiles: int = 8,
    samples_max: int = 100_000,
    progress: Progress | None = None,
) -> BuildResult:
    """Build (or resume) an embedding archive.

    Args:
        model: model folder (geolatent or v1 release) or a loaded
            :class:`~geolatent.model.latent_mim.LatentMIM`.
        aoi: the area: GeoJSON / GeoPackage path, GeoJSON mapping, lon/lat shapely geometry or
            ``(lon_min, lat_min, lon_max, lat_max)``.
        start, end: ISO dates, both inclusive (at most 12 monthly time steps).
        out: the Zarr store to create or resume (``.zarr`` folder).
        sources: imagery sources (configs or opened sources); or ``config``: a YAML with a
            ``sources:`` list.
        patch_size: p (1-8): one vector per ``p x p`` input pixels, ``10 * p`` m.
        dims: 128 or 64 (PCA prefix, see the module docstring).
        dtype: ``int8`` (signed square root of unit vectors), ``float16`` or ``float32``.
        tile_size: build tile side in input pixels (a multiple of p; one Zarr chunk per tile).
        executor, workers, scheduler: where imagery is materialized (``serial``, ``process``,
            ``dask``; see :func:`geolatent.data.make_executor`).
        pca_tiles: tiles embedded to fit the PCA.
        samples_max: at most this many GeoParquet point samples.
        progress: called with ``(tiles finished, tiles total)``.
    """
    t_start = time.perf_counter()
    check_dtype(dtype)
    if dims not in DIMS:
        raise ValueError(f"dims must be one of {DIMS}, got {dims}")
    if not 1 <= patch_size <= 8:
        raise ValueError(f"patch_size must be in 1..8, got {patch_size}")
    if tile_size <= 0 or tile_size % patch_size:
        raise ValueError(f"tile_size must be a positive multiple of patch_size {patch_size}, "
                         f"got {tile_size}")  # fmt: skip
    if (sources is None) == (config is None):
        raise ValueError("give exactly one of sources= or config= (CLI: --config data.yaml)")
    from geolatent.platform.area import read_area

    area = read_area(aoi)
    time_range = _time_range(start, end)
    srcs_cfg = list(sources) if sources is not None else read_sources(config)  # type: ignore[arg-type]
    opened = [s for s in srcs_cfg if isinstance(s, Source)]
    srcs = opened + (open_sources([s for s in srcs_cfg if not isinstance(s, Source)])
                     if len(opened) < len(srcs_cfg) else [])  # fmt: skip
    net = load_archive_model(model)
    modalities = list(net.config.modalities)
    if not any(s.modality in modalities for s in srcs):
        raise ValueError(f"none of the sources' modalities {sorted({s.modality for s in srcs})} "
                         f"is one the model takes ({modalities})")  # fmt: skip
    ident = model_identity(net)
    if dims > ident["embedding_size"]:
        raise ArchiveError(f"--dims {dims} exceeds the model's embedding size "
                           f"{ident['embedding_size']}; use --dims 64")  # fmt: skip
    windows = tile_windows(area, time_range=time_range, tile_size=tile_size)
    if not windows:
        raise ValueError("the area covers no build tile")
    zones = plan_zones(area, windows, tile_size, patch_size)
    out = Path(out)
    sig = _signature(ident, dims, dtype, patch_size, tile_size, time_range, area)
    prefixes = [d for d in (16, 32, 64, 128) if d <= dims]
    attrs = {
        "geolatent:format": FORMAT, "geolatent:format_version": FORMAT_VERSION,
        "geolatent:build": sig,
        "geolatent:area": shapely.geometry.mapping(area),
        "geoemb:model": ident, "geoemb:dims": dims, "geoemb:matryoshka_prefixes": prefixes,
        "geoemb:quantization": quantization_attrs(dtype),
        "geoemb:time_range": sig["time_range"], "geoemb:time_range_end": "exclusive",
        "geoemb:patch_size": patch_size, "geoemb:pixel_size_m": BASE_RESOLUTION_M * patch_size,
        "geoemb:reduction": {"method": "pca", "from_dims": ident["embedding_size"],
                             "to_dims": dims, "fitted_on_tiles": 0,
                             "note": "coordinates ordered by explained variance; every prefix "
                                     "is a valid embedding after renormalizing"},
        "geoemb:crs": sorted(zones), "geolatent:complete": False,
    }  # fmt: skip
    root = _open_or_create(out, sig, attrs)
    for crs, (grid, ws) in zones.items():
        if "zones" in root and grid.name in root["zones"]:
            if not {"embeddings", "tiles_planned", "tiles_done"} <= set(
                    root["zones"][grid.name].array_keys()):
                del root["zones"][grid.name]  # interrupted while being created: recreate it
        if "zones" in root and grid.name in root["zones"]:
            if grid_from_attrs(dict(root["zones"][grid.name].attrs)) != grid:
                raise ArchiveError(f"{out}: zone {crs} grid differs from the plan; "
                                   f"choose another --out")  # fmt: skip
            continue
        planned = np.zeros((grid.tile_rows, grid.tile_cols), dtype=np.uint8)
        for w in ws:
            planned[grid.tile_of(w.pixel_bounds[0], w.pixel_bounds[1])] = 1
        create_zone(root, grid, dims, dtype, planned)

    all_jobs = [(grid, w) for grid, ws in zones.values() for w in ws]
    proj = _projection(root)
    cache: dict[str, np.ndarray] = {}
    ex = make_executor(executor, workers, scheduler)  # type: ignore[arg-type]
    try:
        if proj is None:
            pick = np.unique(np.linspace(0, len(all_jobs) - 1, min(pca_tiles, len(all_jobs)))
                             .round().astype(int))  # fmt: skip
            feats = {}
            for o in ex.map_unordered(materialize_tile,
                                      [(all_jobs[i][1], srcs, modalities) for i in pick]):
                if o.error:
                    raise RuntimeError(f"tile {o.item[0].name}: {o.error}")
                w = o.item[0]
                f = embed_arrays(net, o.value["arrays"], o.value["timestamps"], patch_size)
                f[~area_mask(area, w, patch_size)] = np.nan
                feats[w.name] = f
            sample = [feats[all_jobs[i][1].name] for i in pick]
            _fit_projection(root, sample, dims)
            m_, c_ = _projection(root, require_complete=False)  # type: ignore[misc]
            coords = np.concatenate([project(f, m_, c_).reshape(-1, dims) for f in sample])
            root.attrs["geoemb:dequantization_cosine"] = {
                d: dequantization_cosine(coords, d) for d in ("int8", "float16", "float32")}
            root["projection"].attrs["complete"] = True  # last: a rerun refits until here
            reduction = dict(root.attrs["geoemb:reduction"], fitted_on_tiles=len(pick))
            root.attrs["geoemb:reduction"] = reduction
            proj = _projection(root)
            cache = feats
        mean, comps = proj  # type: ignore[misc]

        done_arrays = {g.name: root["zones"][g.name]["tiles_done"] for g, _ in zones.values()}
        done_now = {g.name: done_arrays[g.name][:] for g, _ in zones.values()}
        todo = [(g, w) for g, w in all_jobs
                if not done_now[g.name][g.tile_of(w.pixel_bounds[0], w.pixel_bounds[1])]]
        resumed = len(all_jobs) - len(todo)
        finished = resumed
        if progress:
            progress(finished, len(all_jobs))
        grid_of = {w.name: g for g, w in todo}

        def write(grid: ZoneGrid, w: Window, feats: np.ndarray) -> None:
            block = encode_block(feats, mean, comps, dtype)
            tr, tc = grid.tile_of(w.pixel_bounds[0], w.pixel_bounds[1])
            n = grid.tile_out
            zg = root["zones"][grid.name]
            zg["embeddings"][tr * n:(tr + 1) * n, tc * n:(tc + 1) * n, :] = block
            done_arrays[grid.name][tr, tc] = 1  # only after the chunk is written

        pending = []
        for g, w in todo:
            if w.name in cache:
                write(g, w, cache.pop(w.name))
                finished += 1
                if progress:
                    progress(finished, len(all_jobs))
            else:
                pending.append((w, srcs, modalities))
        for o in ex.map_unordered(materialize_tile, pending):
            if o.error:
                raise RuntimeError(f"tile {o.item[0].name}: {o.error} (finished tiles are kept; "
                                   f"rerun the same command to resume)")
            w = o.item[0]
            f = embed_arrays(net, o.value["arrays"], o.value["timestamps"], patch_size)
            f[~area_mask(area, w, patch_size)] = np.nan
            write(grid_of[w.name], w, f)
            finished += 1
            if progress:
                progress(finished, len(all_jobs))
    finally:
        ex.close()

    from geolatent.archive.overview import write_overviews
    from geolatent.archive.samples import write_samples

    write_overviews(root)
    n_vectors = write_samples(root, beside(out, ".samples.parquet"), samples_max)
    cos = float(root.attrs["geoemb:dequantization_cosine"][dtype])
    root.attrs["geolatent:complete"] = True
    seconds = time.perf_counter() - t_start
    km2 = n_vectors * (BASE_RESOLUTION_M * patch_size) ** 2 / 1e6
    return BuildResult(out, sorted(zones), len(all_jobs), len(todo), resumed, n_vectors, km2,
                       seconds, cos)  # fmt: skip


__all__ = ["BuildResult", "build", "load_archive_model", "model_identity", "project"]
