"""``geolatent archive build``: embeddings of every location of an area into a Zarr v3 archive.

Pipeline (on the tiled-run driver, :mod:`geolatent.data.run`)::

    area + dates -> build tiles (``tile_size`` px squares on each UTM zone's global grid,
    :func:`geolatent.data.tile_windows`)
    -> prepare_output_dir(out, "archive")   a new folder or one of ours (``.geolatent-archive``)
    -> OutputLock(out)                       one build per archive, "already running (pid N)"
    -> check_free_space                      the estimate fits before any work
    -> WorkStore(out/.work, fingerprint)     PCA fitted once on a deterministic sample of tiles
       (``projection``), then per tile: materialize (executor: serial, process pool or Dask)
       -> :func:`.tile.embed_arrays` -> :func:`.tile.encode_block` -> ``store.put(tile key)``
    -> publish: the Zarr store written from the work store in the work area, PCA RGB overview,
       GeoParquet samples; its nodes moved into ``out``, the root ``zarr.json`` last
    -> store.discard()

What is stored per location (:mod:`.vectors`): for models without location tokens (v1,
v1.1, v1.2) one vector per ``p x p`` patch (``10 * p`` m pixels), the feature map of
:func:`geolatent.model.embed.embed` (the mean over time steps and bandsets of the encoder's
tokens at that patch); for models with location tokens (v1.3) one vector per pixel (10 m; per
``s x s`` pixels with ``location_patch_size=s``), the model's distilled location embedding.
Each tile is embedded on its own (no overlap margin); the encoder sees a window as a whole, so
a vector depends on the tile it sits in, as for any tiled run.

Dimensions: patch vectors (``D`` dims: 128 for Nano, 768 for Base) are reduced to ``dims``
(128 or 64) by a PCA whose components are ordered by explained variance, then L2-normalized.
These models have no Matryoshka-trained (distilled) embedding, so taking the leading ``dims``
of the raw vector would keep arbitrary axes; PCA coordinates are nested by construction: the
first ``k`` coordinates are the best ``k``-dim linear summary, so every prefix listed in
``geoemb:matryoshka_prefixes`` is a valid lower-dimensional embedding (renormalize after
slicing). The PCA is fitted on up to ``pca_tiles`` tiles spread evenly over the plan. The
distilled location embedding is Matryoshka-trained: ``dims`` is one of its widths and the
stored vector is its prefix (``projection`` then holds that selection, no tile is sampled).

Resumable with the driver's one scheme: the work store's fingerprint is the build's settings
(model and weights, dims, dtype, patch and tile size, dates, area, imagery); the PCA is stored
before any tile, and a tile's marker is written after its block, so a rerun after an
interruption (even ``kill -9``) embeds only the missing tiles and publishes the same arrays as
an uninterrupted run. A rerun with other settings restarts the unfinished work (the driver's
rule); a published archive is never rewritten: a rerun with the same settings returns at
once, with other settings it is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
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
    encode,
    quantization_attrs,
)
from geolatent.archive.store import (
    FORMAT,
    FORMAT_VERSION,
    ArchiveError,
    ZoneGrid,
    beside,
    create_zone,
    is_archive,
)
from geolatent.archive.tile import embed_arrays, materialize_tile, project
from geolatent.archive.vectors import VectorPlan, plan_vectors
from geolatent.data.config import SourceConfig
from geolatent.data.executor import make_executor
from geolatent.data.run import (
    LOCK_FILE,
    WORK_SUFFIX,
    OutputLock,
    WorkStore,
    check_free_space,
    disk_error,
    drop_empty_work_on_error,
    marker_name,
    prepare_output_dir,
    temp_path,
    wait_for_ranks,
)
from geolatent.data.sources import Source, open_sources
from geolatent.data.window import WGS84, Window, reproject_geometry, tile_windows

DTYPES = ("int8", "float16", "float32")
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
    """A model folder (release of any version or geolatent), a release id such as
    ``allenai/OlmoEarth-v1_2-Nano`` (through :mod:`geolatent.model.hub`), or a loaded model."""
    if isinstance(model, torch.nn.Module):
        return model.eval()
    from geolatent.model import hub, load_model

    p = Path(model)
    if not p.exists() and not hub.looks_like_id(str(model)):
        raise FileNotFoundError(
            f"--model {model}: no model folder there and not a release id (give a folder with "
            "config.json and weights, or an id such as allenai/OlmoEarth-v1_2-Nano; no random "
            "weights are ever used)"
        )
    m = load_model(p if p.exists() else str(model))
    m.__dict__.setdefault("_archive_source", str(p.resolve()) if p.exists() else str(model))
    return m


def model_identity(model) -> dict:
    """``{"id", "revision", "embedding_size", "provenance"}`` recorded in ``geoemb:model``.

    ``revision`` is the provenance revision when the model carries one, else the SHA-256 of
    its weights (state dict in key order), so two different weight sets never match.
    """
    prov = getattr(model, "provenance", None) or {}
    prov = json.loads(json.dumps(prov, default=str))
    src = getattr(model, "_archive_source", None)
    model_id = prov.get("repo_id") or prov.get("model_id") or prov.get("id") \
        or (Path(src).name if src else None) or f"olmoearth-v1-{model.config.size or 'custom'}"
    revision = prov.get("revision") or (f"sha256:{prov['sha256'][:16]}" if prov.get("sha256")
                                        else None)
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
    from geolatent.config import read_yaml_mapping
    from geolatent.platform.config import resolve_source_paths

    path = Path(config)
    raw = read_yaml_mapping(path)
    if not raw.get("sources"):
        raise ValueError(f"--config {path}: expected a mapping with a `sources:` list")
    srcs = TypeAdapter(list[SourceConfig]).validate_python(raw["sources"])
    return resolve_source_paths(srcs, path.resolve().parent)


def time_range_of(start: str | date, end: str | date) -> tuple[date, date]:
    """``[start, end + 1 day)`` of two inclusive ISO dates."""
    try:
        s = date.fromisoformat(str(start))
        e = date.fromisoformat(str(end))
    except ValueError:
        raise ValueError(f"--start {start} / --end {end}: give ISO dates (2024-01-31)") from None
    if e < s:
        raise ValueError(f"--end {e} is before --start {s}")
    return s, e + timedelta(days=1)  # end inclusive -> exclusive


def archive_imagery(imagery: str, aoi, start: str | date, end: str | date, *,
                    collection: str | None = None, **overrides) -> list[Source]:
    """The sources of ``--imagery PRESET``: :func:`geolatent.data.imagery.imagery_sources`
    (the one function behind ``--imagery``) over the AOI and the build's dates, ``end``
    inclusive as everywhere in a build.

    Args:
        imagery: a preset (``earth-search``, ``planetary-computer``) or a STAC API URL (then
            ``collection`` is required).
        collection: the collection (default: the preset's Sentinel-2 L2A).
        overrides: ``stac_api`` fields set on the source (``url`` for a mirror, ``cache_dir``,
            ``max_cloud``, ...).

    Raises:
        ValueError: an unknown preset, a URL without a collection, or no scene over the AOI in
            the dates (instead of an archive of nodata).
    """
    from geolatent.data.imagery import imagery_sources

    if "://" in imagery and not collection:
        raise ValueError(f"--imagery {imagery} is a STAC API URL: also give --collection")
    t0, t1 = time_range_of(start, end)  # imagery takes [t0, t1)
    return list(imagery_sources(imagery, aoi, t0.isoformat(), t1.isoformat(),
                                collection=collection, **overrides))


def plan_zones(area_wgs84, windows: Sequence[Window], tile_size: int, cell: int
               ) -> dict[str, tuple[ZoneGrid, list[Window]]]:
    """Group build tiles by CRS and fix each zone's output grid (output pixels of ``cell x
    cell`` input pixels)."""
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
                        cell, ws[0].resolution)  # fmt: skip
        ws.sort(key=lambda w: (w.pixel_bounds[1], w.pixel_bounds[0]))
        out[crs] = (grid, ws)
    return out


def area_mask(area_wgs84, window: Window, cell: int) -> np.ndarray:
    """bool ``[H/c, W/c]``: output pixels (``cell x cell`` input pixels) whose centre lies
    inside the area."""
    geom = reproject_geometry(shapely.segmentize(area_wgs84, 0.001), WGS84, window.crs)
    t = window.transform @ window.transform.scale(cell)
    h, w = window.height // cell, window.width // cell
    return rasterio.features.geometry_mask([geom], (h, w), t, invert=True, all_touched=False)


# -- settings and resume ----------------------------------------------------------------------
# Operational settings of a source that do not change its pixels (kept out of the signature).
_OPERATIONAL = ("cache_dir", "cache_max_mb", "offline", "timeout_s", "retries", "backoff_s")


def sources_key(srcs: Sequence[Source]) -> list[dict]:
    """What identifies the imagery of a build: each source's configuration without its
    operational settings (cache folder, timeouts, ...), sorted by name."""
    out = []
    for s in srcs:
        cfg = s.config.model_dump(mode="json")
        out.append({k: v for k, v in cfg.items() if k not in _OPERATIONAL})
    return sorted(out, key=lambda c: json.dumps(c, sort_keys=True))


def _signature(ident: dict, vec: VectorPlan, dtype: str, tile_size: int,
               time_range: tuple[date, date], area_wgs84, srcs: Sequence[Source]) -> dict:
    # location vectors add their cell; patch archives keep the keys (and fingerprints) they had
    loc = {} if vec.location_patch_size is None else \
        {"vectors": vec.source, "location_patch_size": vec.location_patch_size}
    return {"model": ident["id"], "revision": ident["revision"], "dims": vec.dims,
            "dtype": dtype, "patch_size": vec.patch_size, "tile_size": tile_size, **loc,
            "time_range": [time_range[0].isoformat(), time_range[1].isoformat()],
            "area_sha256": hashlib.sha256(shapely.to_wkb(area_wgs84)).hexdigest()[:16],
            "sources_sha256": hashlib.sha256(json.dumps(sources_key(srcs), sort_keys=True)
                                             .encode()).hexdigest()[:16]}  # fmt: skip


def _check_signature(path: Path, old: dict, new: dict) -> None:
    diff = [k for k in new if k in old and old[k] != new[k]] + \
        [k for k in ("model", "revision", "dims", "dtype", "location_patch_size")
         if k in new and k not in old]
    if not diff:
        return
    names = {"model": "--model", "revision": "--model (other weights)", "dims": "--dims",
             "dtype": "--dtype", "patch_size": "--patch-size", "time_range": "--start/--end",
             "location_patch_size": "--location-patch-size", "vectors": "--model (other vectors)",
             "area_sha256": "--aoi", "tile_size": "tile_size",
             "sources_sha256": "--config/--imagery (other imagery)"}  # fmt: skip
    detail = "; ".join(f"{names[k]}: archive has {old.get(k)!r}, asked {new[k]!r}" for k in diff)
    raise ArchiveError(
        f"--out {path} already holds an archive built with other settings ({detail}). "
        f"Choose another --out, or delete {path} to rebuild; nothing was changed."
    )


def fit_projection(samples: list[np.ndarray], dims: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA of the sampled feature maps ``[h, w, D]`` (float64 SVD of the centred data).

    Returns float32 ``(mean [D], components [dims, D], explained_variance_ratio [dims])``.
    Signs are fixed (largest-magnitude loading of each component positive) so a refit gives
    the same components.
    """
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
    return (mean.astype(np.float32), comps.astype(np.float32),
            (var[:dims] / var.sum()).astype(np.float32))


PROJECTION_KEY = "projection"


def tile_key(grid: ZoneGrid, w: Window) -> str:
    """The work-store key of a build tile: ``tile-<zone>-<tile row>-<tile col>``."""
    tr, tc = grid.tile_of(w.pixel_bounds[0], w.pixel_bounds[1])
    return f"tile-{grid.name}-{tr:05d}-{tc:05d}"


def estimate_bytes(zones: dict[str, tuple[ZoneGrid, list[Window]]], dims: int,
                   dtype: str) -> int:
    """Disk a build needs while running: the encoded tiles in the work store, the archive
    (uncompressed, an upper bound) and its overview."""
    item = np.dtype(dtype).itemsize
    n = 0
    for grid, ws in zones.values():
        px = len(ws) * grid.tile_out**2
        n += 2 * px * dims * item + 3 * grid.shape[0] * grid.shape[1]
    return n


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
    rank: int = 0,
    world: int = 1,
    rank_timeout_s: float = 86400.0,
    location_patch_size: int | None = None,
) -> BuildResult:
    """Build (or resume) an embedding archive.

    Args:
        model: model folder (geolatent or v1 release) or a loaded
            :class:`~geolatent.model.latent_mim.LatentMIM`.
        aoi: the area: GeoJSON / GeoPackage path, GeoJSON mapping, lon/lat shapely geometry or
            ``(lon_min, lat_min, lon_max, lat_max)``.
        start, end: ISO dates, both inclusive (at most 12 monthly time steps).
        out: the Zarr store to create or resume (``.zarr`` folder; a new folder, or one this
            function created).
        sources: imagery sources (configs or opened sources, e.g. those of
            :func:`geolatent.data.imagery.imagery_sources`, which the CLI's ``--imagery``
            uses); or ``config``: a YAML with a ``sources:`` list.
        patch_size: p (1-8), the model's token size: for models without location tokens one
            vector per ``p x p`` input pixels, ``10 * p`` m.
        dims: 128 or 64 (PCA prefix, see the module docstring); for a model with a distilled
            location embedding one of its widths (128 or 64 for v1.3 Base).
        dtype: ``int8`` (signed square root of unit vectors), ``float16`` or ``float32``.
        tile_size: build tile side in input pixels (a multiple of p; one Zarr chunk per tile).
        executor, workers, scheduler: where imagery is materialized (``serial``, ``process``,
            ``dask``; see :func:`geolatent.data.make_executor`).
        pca_tiles: tiles embedded to fit the PCA.
        samples_max: at most this many GeoParquet point samples.
        progress: called with ``(tiles finished, tiles total)`` (of this rank's tiles).
        rank, world: torchrun-style ranks sharing the build (one process each, a shared
            folder): rank ``r`` embeds every ``world``-th tile from ``r``; rank 0 fits the PCA
            first, waits for every rank's tiles, then publishes. The CLI reads ``RANK`` and
            ``WORLD_SIZE``.
        rank_timeout_s: how long a rank waits for another (rank 0's store and PCA, the other
            ranks' tiles) before raising :class:`TimeoutError` naming the missing rank.
        location_patch_size: models with location tokens (v1.3) only: one vector per ``s x s``
            input pixels (divides p; default 1, one per 10 m pixel); see :mod:`.vectors`.

    Raises:
        ArchiveError: ``out`` holds an archive built with other settings, or the area is too
            small for the PCA.
        OutputConflictError: ``out`` is a file or a folder of other files (left untouched).
        RunLockedError: another build writes ``out``.
        DiskFullError: the disk cannot hold the build, or filled up (rerun to resume).
    """
    t_start = time.perf_counter()
    check_dtype(dtype)
    if not 1 <= patch_size <= 8:
        raise ValueError(f"patch_size must be in 1..8, got {patch_size}")
    if tile_size <= 0 or tile_size % patch_size:
        raise ValueError(f"tile_size must be a positive multiple of patch_size {patch_size}, "
                         f"got {tile_size}")  # fmt: skip
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} must be in 0..{world - 1} (world {world}; CLI: the RANK "
                         f"and WORLD_SIZE environment variables)")  # fmt: skip
    if (sources is None) == (config is None):
        raise ValueError("give exactly one of sources= or config= (CLI: --config data.yaml or "
                         "--imagery PRESET)")  # fmt: skip
    from geolatent.platform.area import read_area

    area = read_area(aoi)
    time_range = time_range_of(start, end)
    srcs_cfg = list(sources) if sources is not None else read_sources(config)  # type: ignore[arg-type]
    opened = [s for s in srcs_cfg if isinstance(s, Source)]
    srcs = opened + (open_sources([s for s in srcs_cfg if not isinstance(s, Source)])
                     if len(opened) < len(srcs_cfg) else [])  # fmt: skip
    net = load_archive_model(model)
    modalities = list(net.config.modalities)
    if not any(s.modality in modalities for s in srcs):
        raise ValueError(f"none of the sources' modalities {sorted({s.modality for s in srcs})} "
                         f"is one the model takes ({modalities})")  # fmt: skip
    vec = plan_vectors(net.config, patch_size, location_patch_size, dims)
    ident = model_identity(net)
    windows = tile_windows(area, time_range=time_range, tile_size=tile_size)
    if not windows:
        raise ValueError("the area covers no build tile")
    zones = plan_zones(area, windows, tile_size, vec.cell)
    out = Path(out)
    sig = _signature(ident, vec, dtype, tile_size, time_range, area, srcs)
    all_jobs = [(grid, w) for grid, ws in zones.values() for w in ws]
    total = len(all_jobs)

    if is_archive(out):  # published, so complete: never rewritten
        root = zarr.open_group(str(out), mode="r")
        _check_signature(out, dict(root.attrs.get("geolatent:build", {})), sig)
        if progress:
            progress(total, total)
        n = int(root.attrs.get("geolatent:vectors", 0))
        return BuildResult(out, sorted(zones), total, 0, total, n, n * vec.resolution_m**2 / 1e6,
                           time.perf_counter() - t_start,
                           float(root.attrs["geoemb:dequantization_cosine"][dtype]))  # fmt: skip

    fingerprint = hashlib.sha256(json.dumps(sig, sort_keys=True).encode()).hexdigest()
    created = rank == 0 and not out.exists()
    work = out / WORK_SUFFIX  # the archive folder's work area (work_dir_for of a folder)
    if rank == 0:
        # The folder (with its marker) first, so that the lock and the work store always live
        # in region.zarr/.work: work_dir_for() of a path that is not yet a folder is beside it.
        prepare_output_dir(out, "archive", option="--out")
        lock = OutputLock(out, "archive build")
        cleanup: contextlib.AbstractContextManager = drop_empty_work_on_error(work)
    else:  # rank 0 prepares the folder and owns the store: wait until it is this plan's
        shared = WorkStore(work, fingerprint, create=False)
        ready = _wait_for_rank0(out, lambda: _store_ready(shared), f"prepare {work}",
                                rank_timeout_s)  # fmt: skip
        if ready:
            ready = _wait_for_rank0(out, lambda: shared.done(PROJECTION_KEY),
                                    "store the projection (PCA)", rank_timeout_s)
        if not ready:  # rank 0 did every tile and published meanwhile
            return BuildResult(out, sorted(zones), total, 0, len(all_jobs[rank::world]), 0,
                               0.0, time.perf_counter() - t_start, float("nan"))  # fmt: skip
        lock = OutputLock(out, "archive build", f"{LOCK_FILE}-rank{rank}")
        cleanup = contextlib.nullcontext()
    try:
        with lock, cleanup:
            if rank == 0:
                check_free_space(out, estimate_bytes(zones, dims, dtype), "this archive")
            # rank 0 removes a killed run's temporaries and another plan's items
            store = WorkStore(work, fingerprint, create=rank == 0)
            run, resumed = _run_tiles(store, net, area, srcs, modalities, all_jobs, vec, dtype,
                                      pca_tiles, executor, workers, scheduler, progress, rank,
                                      world, published=lambda: is_archive(out))  # fmt: skip
            if rank != 0:  # rank 0 publishes
                return BuildResult(out, sorted(zones), total, run, resumed, 0, 0.0,
                                   time.perf_counter() - t_start, float("nan"))  # fmt: skip
            keys = [tile_key(g, w) for g, w in all_jobs]
            if world > 1:
                wait_for_ranks(store, {r: keys[r::world] for r in range(1, world)},
                               rank_timeout_s)  # fmt: skip
            cos = _dequantization_cosines(store, keys)
            attrs = _archive_attrs(sig, ident, vec, dtype, zones, srcs,
                                   store.get_record(PROJECTION_KEY), cos)  # fmt: skip
            n_vectors = _publish(store, out, zones, attrs, vec, dtype, samples_max)
            store.discard()
    except OSError as e:  # a full disk: one line naming the path; the run stays resumable
        full = disk_error(e, out)
        if full is e:
            raise
        raise full from e
    finally:
        if created:
            _remove_if_only_marker(out)
        if rank != 0 and is_archive(out):  # published, its work area removed: leave no lock
            (work / f"{LOCK_FILE}-rank{rank}").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                work.rmdir()
    km2 = n_vectors * vec.resolution_m**2 / 1e6
    return BuildResult(out, sorted(zones), total, run, resumed, n_vectors, km2,
                       time.perf_counter() - t_start, float(cos[dtype]))  # fmt: skip


def _run_tiles(store: WorkStore, net, area, srcs: list[Source], modalities: list[str],
               all_jobs: list[tuple[ZoneGrid, Window]], vec: VectorPlan, dtype: str,
               pca_tiles: int, executor: str, workers: int | None, scheduler: str | None,
               progress: Progress | None, rank: int = 0, world: int = 1,
               published: Callable[[], bool] | None = None) -> tuple[int, int]:
    """Store the projection (rank 0, unless stored: a PCA fitted on ``pca_tiles`` tiles, or the
    prefix selection of a distilled embedding) and put every tile of this rank not yet in
    ``store``; returns ``(tiles embedded, tiles found done)``. Each tile is ``store.put(key,
    block [n, n, dims], record)``, its record holding the dequantization cosine of its vectors
    for every dtype.

    A rank's tiles: every ``world``-th tile from ``rank``, except the PCA's sample tiles, which
    are all rank 0's (it embeds them to fit the PCA; so no rank ever embeds a tile rank 0 has
    in hand, and a rank 0 resumed after a kill finishes them).
    """
    keys = {tile_key(g, w): (g, w) for g, w in all_jobs}
    key_of = {w.name: k for k, (_, w) in keys.items()}
    total = len(all_jobs)
    pick = [] if vec.reduction != "pca" else \
        np.unique(np.linspace(0, total - 1, min(pca_tiles, total)).round().astype(int)).tolist()
    sample = {tile_key(*all_jobs[i]) for i in pick}
    mine = [k for i, k in enumerate(keys)
            if (rank == 0 if k in sample else i % world == rank)]

    def features(w: Window, value: dict) -> np.ndarray:
        f = embed_arrays(net, value["arrays"], value["timestamps"], vec.patch_size,
                         vec.location_patch_size)  # fmt: skip
        f[~area_mask(area, w, vec.cell)] = np.nan
        return f

    cache: dict[str, np.ndarray] = {}
    failures: list[str] = []
    ex = make_executor(executor, workers, scheduler)  # type: ignore[arg-type]
    try:
        if rank == 0 and not store.done(PROJECTION_KEY):
            if vec.reduction == "pca":
                picked = [all_jobs[i][1] for i in pick]
                for o in ex.map_unordered(materialize_tile,
                                          [(w, srcs, modalities) for w in picked]):
                    if o.error:
                        raise RuntimeError(f"tile {o.item[0].name}: {o.error}")
                    cache[o.item[0].name] = features(o.item[0], o.value)
                mean, comps, evr = fit_projection([cache[w.name] for w in picked], vec.dims)
                record = {"method": "pca", "explained_variance_ratio": evr.tolist(),
                          "fitted_on_tiles": len(pick)}  # fmt: skip
            else:  # a Matryoshka embedding: its leading dims, nothing to fit
                mean = np.zeros(vec.width, np.float32)
                comps = np.eye(vec.dims, vec.width, dtype=np.float32)
                record = {"method": "matryoshka_prefix"}
            # the projection before any tile: every tile of a resumed run uses these arrays
            store.put(PROJECTION_KEY, np.vstack([mean[None], comps]), record)
        proj = store.get_array(PROJECTION_KEY)  # other ranks waited for rank 0's
        mean, comps = proj[0], proj[1:]

        def put(key: str, f: np.ndarray) -> None:
            grid, w = keys[key]
            coords = project(f, mean, comps)
            ok = ~np.isnan(coords).any(axis=-1)
            cos = {d: dequantization_cosine(coords[ok], d) if ok.any() else None for d in DTYPES}
            store.put(key, encode(coords, dtype),
                      {"zone": grid.name, "tile": list(grid.tile_of(*w.pixel_bounds[:2])),
                       "vectors": int(ok.sum()), "dequantization_cosine": cos})  # fmt: skip

        pending = store.pending(mine)
        resumed = len(mine) - len(pending)
        # the PCA's tiles are embedded already, whichever rank they belong to
        for name, f in cache.items():
            if not store.done(key_of[name]):
                put(key_of[name], f)
        todo = store.pending(mine)
        if rank != 0 and published is not None and published():
            # rank 0 did the rest and published (then removed the store): nothing left here
            return 0, len(mine)
        run = len(pending) - len(todo)
        finished = len(mine) - len(todo)
        if progress:
            progress(finished, len(mine))
        for o in ex.map_unordered(materialize_tile, [(keys[k][1], srcs, modalities)
                                                     for k in todo]):
            w = o.item[0]
            if o.error:
                failures.append(f"tile {w.name}: {o.error}")
                continue
            put(key_of[w.name], features(w, o.value))
            finished += 1
            run += 1
            if progress:
                progress(finished, len(mine))
    finally:
        ex.close()
    if failures:
        raise RuntimeError(f"{len(failures)} tiles failed ({finished} of {len(mine)} tiles are "
                           "done and kept; rerun the same command to resume):\n"
                           + "\n".join(failures[:10]))  # fmt: skip
    return run, resumed


def _dequantization_cosines(store: WorkStore, keys: Sequence[str]) -> dict[str, float]:
    """Mean cosine of dequantized to float vectors over every vector of the build, per dtype
    (from the tiles' records, weighted by their vector counts)."""
    out = {}
    for d in DTYPES:
        num = den = 0.0
        for k in keys:
            rec = store.get_record(k)
            c = rec["dequantization_cosine"][d]
            if c is not None:
                num += c * rec["vectors"]
                den += rec["vectors"]
        out[d] = num / den if den else float("nan")
    return out


def _store_ready(store: WorkStore) -> bool:
    try:
        store.wait_ready(0)
    except TimeoutError:
        return False
    return True


def _wait_for_rank0(out: Path, ready: Callable[[], bool], what: str, timeout_s: float,
                    poll_s: float = 0.2) -> bool:
    """Wait until ``ready()`` (returns True) or until rank 0 has published ``out`` (False: rank
    0 may finish every tile itself, then it removes the store a rank would wait on)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if is_archive(out):
            return False
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 did not {what} within {timeout_s:.1f} s; check rank 0's "
                               "log (it may have failed before starting), then rerun")
        time.sleep(poll_s)
    return True


def _archive_attrs(sig: dict, ident: dict, vec: VectorPlan, dtype: str, zones: dict,
                   srcs: Sequence[Source], projection: dict, cosines: dict) -> dict:
    if vec.reduction == "pca":
        reduction = {"method": "pca", "from_dims": vec.width, "to_dims": vec.dims,
                     "fitted_on_tiles": projection["fitted_on_tiles"],
                     "note": "coordinates ordered by explained variance; every prefix "
                             "is a valid embedding after renormalizing"}  # fmt: skip
    else:
        reduction = {"method": "matryoshka_prefix", "from_dims": vec.width, "to_dims": vec.dims,
                     "note": "the leading dims of the model's Matryoshka-trained embedding; "
                             "every listed prefix is a valid embedding after renormalizing"}
    return {
        "geolatent:format": FORMAT, "geolatent:format_version": FORMAT_VERSION,
        "geolatent:build": sig, "geolatent:sources": sources_key(srcs),
        "geoemb:model": ident, "geoemb:dims": vec.dims,
        "geoemb:matryoshka_prefixes": list(vec.prefixes),
        "geoemb:quantization": quantization_attrs(dtype),
        "geoemb:time_range": sig["time_range"], "geoemb:time_range_end": "exclusive",
        "geoemb:patch_size": vec.patch_size, "geoemb:pixel_size_m": vec.resolution_m,
        "geoemb:vectors": vec.attrs(), "geoemb:reduction": reduction,
        "geoemb:dequantization_cosine": cosines,
        "geoemb:crs": sorted(zones), "geolatent:complete": True,
    }  # fmt: skip


def _publish(store: WorkStore, out: Path, zones: dict[str, tuple[ZoneGrid, list[Window]]],
             attrs: dict, vec: VectorPlan, dtype: str, samples_max: int) -> int:
    """Write the archive from the finished store and publish it into ``out``; returns the
    number of valid vectors.

    The whole store is first written in the work area (``.archive.zarr.tmp-*``, removed with
    the other temporaries if a run is killed), then its nodes are moved into ``out``, the root
    ``zarr.json`` last: until that rename ``out`` is no Zarr group, after it a complete one.
    """
    from geolatent.archive.overview import write_overviews
    from geolatent.archive.samples import write_samples

    stage = temp_path(store.root / "archive.zarr")
    root = zarr.open_group(str(stage), mode="w-", zarr_format=3)
    root.attrs.update(attrs)
    if vec.reduction == "pca":  # a prefix of a Matryoshka embedding has nothing to record
        proj = store.get_array(PROJECTION_KEY)
        rec = store.get_record(PROJECTION_KEY)
        g = root.create_group("projection")
        g.create_array("mean", data=proj[0])
        g.create_array("components", data=proj[1:])
        g.create_array("explained_variance_ratio",
                       data=np.asarray(rec["explained_variance_ratio"], np.float32))
    for grid, ws in zones.values():
        planned = np.zeros((grid.tile_rows, grid.tile_cols), dtype=np.uint8)
        for w in ws:
            planned[grid.tile_of(*w.pixel_bounds[:2])] = 1
        emb = create_zone(root, grid, vec.dims, dtype, planned)["embeddings"]
        n = grid.tile_out
        for w in ws:
            tr, tc = grid.tile_of(*w.pixel_bounds[:2])
            emb[tr * n:(tr + 1) * n, tc * n:(tc + 1) * n, :] = store.get_array(tile_key(grid, w))
    write_overviews(root)
    samples = temp_path(store.root / "samples.parquet")
    n_vectors = write_samples(root, samples, samples_max)
    root.attrs["geolatent:vectors"] = n_vectors

    os.replace(samples, beside(out, ".samples.parquet"))
    for name in [n for n in ("projection", "zones") if (stage / n).exists()]:
        dest = out / name
        if dest.exists():  # moved by a run killed while publishing (never an archive: no root)
            shutil.rmtree(dest)
        os.replace(stage / name, dest)
    os.replace(stage / "zarr.json", out / "zarr.json")  # the publication point
    shutil.rmtree(stage)
    return n_vectors


def _remove_if_only_marker(out: Path) -> None:
    """Remove a folder this build created when it holds nothing but its marker (a build that
    failed before finishing any tile leaves nothing behind)."""
    marker = out / marker_name("archive")
    if out.is_dir() and [p.name for p in out.iterdir()] == [marker.name]:
        marker.unlink()
        out.rmdir()


__all__ = ["BuildResult", "archive_imagery", "build", "fit_projection", "load_archive_model",
           "model_identity", "project", "sources_key", "tile_key"]
