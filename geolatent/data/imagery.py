"""Imagery for any area from STAC APIs: the library behind ``geolatent imagery search|fetch``
and the ``--imagery NAME`` option of the area commands.

- :func:`imagery_source` turns ``--imagery NAME`` (a preset or a STAC API URL) + AOI + dates
  into the ``stac_api`` source config the data layer reads.
- :func:`search_scenes` lists the scenes of an AOI (id, date, cloud %, AOI coverage);
  :func:`write_footprints` writes them as GeoJSON.
- :func:`fetch_composites` materializes the AOI window by window (monthly, cloud-masked median
  of the least cloudy scenes) and writes one COG per modality and month; a per-window report
  names every asset that could not be read while the rest proceeds.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import shapely
from affine import Affine
from pydantic import TypeAdapter, ValidationError
from rasterio.windows import Window as RioWindow
from shapely.geometry import box, mapping, shape

from geolatent.data.area import AreaLike, read_area
from geolatent.data.config import SourceConfig, StacApiSourceConfig
from geolatent.data.materialize import materialize_window
from geolatent.data.remote import STATS
from geolatent.data.run import (
    TMP_TAG,
    OutputLock,
    WorkStore,
    clean_temporaries,
    prepare_output_dir,
    temp_path,
    work_dir_for,
    write_json_atomic,
)
from geolatent.data.sources import Source
from geolatent.data.stac_api import StacApiSource, search_items
from geolatent.data.stac_presets import PRESETS
from geolatent.data.window import (
    WGS84,
    Window,
    tile_windows,
    to_utc_naive,
    utm_crs_for,
)
from geolatent.modalities import MISSING_VALUE, MODALITIES

_COLLECTION_MODALITY = (
    (r"sentinel-?2", "sentinel2_l2a"),
    (r"sentinel-?1", "sentinel1"),
    (r"landsat", "landsat"),
    (r"worldcover", "worldcover"),
    (r"dem|srtm", "srtm"),
)


def _guess_modality(collection: str) -> str:
    for pattern, modality in _COLLECTION_MODALITY:
        if re.search(pattern, collection, re.IGNORECASE):
            return modality
    raise ValueError(
        f"cannot tell the modality of collection {collection!r}; pass --modality "
        f"(one of {list(MODALITIES)})"
    )


def imagery_source(
    imagery: str,
    *,
    collection: str | None = None,
    modality: str | None = None,
    max_cloud: float | None = None,
    cache_dir: str | Path | None = None,
    offline: bool = False,
    **overrides: Any,
) -> StacApiSourceConfig:
    """The ``stac_api`` source for ``--imagery NAME``.

    Args:
        imagery: a preset name (``earth-search``, ``planetary-computer``) or the http(s) URL
            of any STAC API (then ``collection`` is required and assets are mapped to bands by
            their ``eo:bands`` names / common names).
        collection: the collection (default: the preset's Sentinel-2 L2A).
        modality: registry modality for a URL source (default: guessed from the collection).
        max_cloud: keep scenes with ``eo:cloud_cover`` below this percent.
        cache_dir, offline: the window cache and offline mode (see ``StacApiSourceConfig``).
        overrides: any other ``stac_api`` field.

    Raises:
        ValueError: an unknown preset / collection, a URL without ``collection``, or a
            collection that cannot feed the model (the message says why and what to do).
    """
    extra: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if max_cloud is not None:
        extra["max_cloud"] = max_cloud
    if cache_dir is not None:
        extra["cache_dir"] = str(cache_dir)
    if offline:
        extra["offline"] = True
    if re.match(r"^https?://", imagery):
        if not collection:
            raise ValueError(f"{imagery} is a STAC API URL: also give --collection")
        spec: dict[str, Any] = {
            "type": "stac_api", "name": collection, "url": imagery, "collections": [collection],
            "modality": modality or _guess_modality(collection), **extra,
        }
        if spec["modality"] == "sentinel1":
            spec.setdefault("units", "linear")
    elif imagery in PRESETS:
        spec = {"preset": imagery, **({"collection": collection} if collection else {}), **extra}
        if modality is not None:
            spec["modality"] = modality
    else:
        raise ValueError(
            f"unknown imagery {imagery!r}: give a preset ({', '.join(sorted(PRESETS))}) or the "
            "http(s) URL of a STAC API"
        )
    try:
        cfg = TypeAdapter(SourceConfig).validate_python(spec)
    except ValidationError as e:
        detail = "; ".join(f"{err['loc'][-1]}: {err['msg']}" if err["loc"] else err["msg"]
                           for err in e.errors())
        raise ValueError(f"imagery {imagery!r}: {detail}") from None
    assert isinstance(cfg, StacApiSourceConfig)
    return cfg


def imagery_sources(
    imagery: str,
    aoi: AreaLike,
    start: str,
    end: str,
    *,
    modalities: list[str] | None = None,
    collection: str | None = None,
    max_cloud: float | None = None,
    cache_dir: str | Path | None = None,
    offline: bool = False,
    **overrides: Any,
) -> list[StacApiSource]:
    """``--imagery NAME`` + AOI + dates -> opened sources, already searched over the AOI.

    The one function behind ``--imagery`` on the area commands (``predict``, ``embed``): pass
    the result as their ``sources``. With ``modalities`` (e.g. those a model was trained on)
    every collection of the preset feeding one of them is used; else ``collection`` or the
    preset's Sentinel-2 L2A.

    Raises:
        ValueError: a bad name / AOI / date range, a modality the preset cannot supply (saying
            why), or no scene at all over the AOI in the dates (instead of an all-nodata map).

    ``overrides`` are ``stac_api`` fields set on every source (``url`` for a mirror, ...).
    """
    from geolatent.data.sources import open_source

    geom = read_area(aoi)
    t0, t1 = _time_range(start, end)
    if collection or not modalities or imagery not in PRESETS:
        configs = [imagery_source(imagery, collection=collection, max_cloud=max_cloud,
                                  cache_dir=cache_dir, offline=offline, **overrides)]
    else:
        configs = []
        for name, entry in PRESETS[imagery]["collections"].items():
            if "error" in entry or entry["modality"] not in modalities:
                continue
            configs.append(imagery_source(imagery, collection=name, max_cloud=max_cloud,
                                          cache_dir=cache_dir, offline=offline, **overrides))
        lacking = set(modalities) - {c.modality for c in configs}
        if lacking:
            raise ValueError(
                f"--imagery {imagery} supplies no collection for {sorted(lacking)}; give "
                "--sources with a source for them (or a model without them)"
            )
    out: list[StacApiSource] = []
    total = 0
    for cfg in configs:
        src = open_source(cfg)
        assert isinstance(src, StacApiSource)
        total += len(src.search_area(tuple(geom.bounds), (t0, t1)))  # type: ignore[arg-type]
        out.append(src)
    if total == 0:
        raise ValueError(
            f"--imagery {imagery}: no scene of {[c.collections[0] for c in configs]} over the "
            f"AOI between {t0:%Y-%m-%d} and {t1:%Y-%m-%d}; check the area and dates"
        )
    return out


def _time_range(start: str | datetime, end: str | datetime) -> tuple[datetime, datetime]:
    t0, t1 = to_utc_naive(start), to_utc_naive(end)
    if t1 <= t0:
        raise ValueError(f"--end ({t1:%Y-%m-%d}) must be after --start ({t0:%Y-%m-%d})")
    return t0, t1


@dataclass
class SceneInfo:
    """One search result: what ``imagery search`` prints."""

    id: str
    datetime: str
    cloud_cover: float | None
    aoi_coverage: float
    footprint: dict


def search_scenes(
    cfg: StacApiSourceConfig, aoi: AreaLike, start: str, end: str
) -> list[SceneInfo]:
    """Scenes of the source intersecting the AOI in ``[start, end)``, in time order."""
    geom = read_area(aoi)
    t0, t1 = _time_range(start, end)
    items = search_items(cfg, tuple(geom.bounds), t0, t1)  # type: ignore[arg-type]
    out = []
    for it in items:
        foot = it.get("geometry") or mapping(box(*it["bbox"][:4]))
        inter = shapely.intersection(shape(foot), geom)
        if inter.is_empty:
            continue
        props = it.get("properties", {})
        cov = float(inter.area / geom.area) if geom.area > 0 else 1.0
        out.append(SceneInfo(str(it["id"]), str(props.get("datetime")),
                             props.get("eo:cloud_cover"), cov, foot))
    return sorted(out, key=lambda s: (s.datetime, s.id))


def write_footprints(scenes: list[SceneInfo], path: str | Path) -> Path:
    """The scenes' footprints as a GeoJSON FeatureCollection (lon/lat), written atomically."""
    path = Path(path)
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": s.footprint,
         "properties": {k: v for k, v in asdict(s).items() if k != "footprint"}}
        for s in scenes
    ]}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(fc))
    os.replace(tmp, path)
    return path


# -- fetching monthly composites ----------------------------------------------------------------
@dataclass
class FetchResult:
    """What ``fetch_composites`` wrote.

    Attributes:
        files: the monthly COGs written (``{modality}_{YYYY-MM}.tif``).
        missing_months: ``{modality}_{YYYY-MM}`` without any valid pixel (no file written).
        report: per window name -> the problems (unreadable / missing assets) of that window.
        windows, scenes_read, fetched_windows, cached_windows, fetched_bytes: counts.
    """

    files: list[str] = field(default_factory=list)
    missing_months: list[str] = field(default_factory=list)
    report: dict[str, list[str]] = field(default_factory=dict)
    windows: int = 0
    scenes_read: int = 0
    fetched_windows: int = 0
    cached_windows: int = 0
    fetched_bytes: int = 0


def _grid(windows: list[Window]) -> tuple[int, int, int, int]:
    c0 = min(w.pixel_bounds[0] for w in windows)
    r0 = min(w.pixel_bounds[1] for w in windows)
    c1 = max(w.pixel_bounds[2] for w in windows)
    r1 = max(w.pixel_bounds[3] for w in windows)
    return c0, r0, c1, r1


def _fetch_fingerprint(srcs: list, geom: shapely.Geometry, t0: datetime, t1: datetime,
                       crs: str, resolution: float, tile_size: int) -> str:
    """Identifies everything that shapes the composites: each source's settings (not its
    cache / network tuning), the scenes its search found, the AOI, dates and grid. Windows
    stored under another fingerprint are never reused."""
    skip = {"cache_dir", "cache_max_mb", "offline", "timeout_s", "retries", "backoff_s"}
    parts = []
    for s in srcs:
        cfg = s.config.model_dump(mode="json", exclude=skip & set(type(s.config).model_fields))
        parts.append([cfg, [sc.id for sc in s.scenes]])
    payload = [parts, shapely.to_wkt(geom, rounding_precision=9), f"{t0:%Y-%m-%d}",
               f"{t1:%Y-%m-%d}", crs, resolution, tile_size]
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _publish_if_changed(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final`` unless ``final`` already holds the same bytes: a rerun then
    leaves a finished file (and its modification time) alone, so work keyed on it (an embed
    run over the composites) stays valid."""
    if final.exists() and filecmp.cmp(tmp, final, shallow=False):
        tmp.unlink()
    else:
        os.replace(tmp, final)


def fetch_composites(
    sources: list[SourceConfig] | list[StacApiSourceConfig] | list[Source],
    aoi: AreaLike,
    start: str,
    end: str,
    out_dir: str | Path,
    *,
    crs: str | None = None,
    resolution: float = 10.0,
    tile_size: int = 256,
    progress: Callable[[dict[str, int]], None] | None = None,
) -> FetchResult:
    """Monthly composites of the AOI as COGs in ``out_dir``.

    The AOI is tiled on the global grid of ``crs`` (default: the UTM zone of its centre) at
    ``resolution`` metres; each tile is materialized by the data layer (scene choice, cloud
    masks, median) and written into one GeoTIFF per modality and month, published as a COG
    (float32, registry band order, band descriptions, nodata -99999) when all tiles are done.

    Resume (the run driver's scheme, :mod:`geolatent.data.run`): one run per ``out_dir``
    (a lock in ``out_dir/.work``); each finished tile goes to the work store there, so a
    rerun after a kill materializes only the tiles left, and the store goes once the COGs are
    published. A COG equal to the one already at its path is not rewritten. The window cache
    (``cache_dir``) stays a cache: asset windows read by another run, or by a tile killed
    half-way, are not fetched again.

    Args:
        sources: source configs, or opened sources (e.g. from :func:`imagery_sources`).
        progress: called after each tile with counts (``windows_done``, ``windows``,
            ``scenes``, ``bytes``).

    Returns:
        A :class:`FetchResult`; ``report.json`` in ``out_dir`` holds the same.
    """
    from geolatent.data.sources import open_sources

    geom = read_area(aoi)
    t0, t1 = _time_range(start, end)
    # A new folder or one of an earlier fetch (marker file): never a folder of the user's files,
    # whose names could collide with the composites (checked before any search or download).
    out_dir = prepare_output_dir(out_dir, "imagery", "--out")
    c = geom.centroid
    crs = crs or utm_crs_for(c.x, c.y)
    windows = tile_windows(geom, time_range=(t0, t1), geometry_crs=WGS84, crs=crs,
                           tile_size=tile_size, resolution=resolution)
    if not windows:
        raise ValueError(f"AOI {aoi}: no tiles (empty area)")
    srcs = [s if isinstance(s, Source) else open_sources([s])[0] for s in sources]
    for s in srcs:
        if isinstance(s, StacApiSource):
            s.search_area(tuple(geom.bounds), (t0, t1))  # one search for the whole AOI
    with OutputLock(out_dir, "imagery fetch"):
        clean_temporaries(out_dir)  # a COG half-written by a killed run
        store = WorkStore(work_dir_for(out_dir),
                          _fetch_fingerprint(srcs, geom, t0, t1, crs, resolution, tile_size))
        result = _materialize_into(store, windows, srcs, progress)
        report = _publish(store, windows, srcs, result, out_dir, crs, resolution, t0, t1)
        write_json_atomic(out_dir / "report.json", report)
        store.discard()
    return result


def _window_key(i: int) -> str:
    return f"window_{i:06d}"


def _materialize_into(store: WorkStore, windows: list[Window], srcs: list,
                      progress: Callable[[dict[str, int]], None] | None) -> FetchResult:
    """Materialize every window not in ``store`` yet; per window one array per modality
    (``[H, W, T, C]`` float32) and, written last, the window's record (warnings, scenes read,
    output file tag per timestep)."""
    result = FetchResult(windows=len(windows))
    before = STATS.snapshot()
    for i, w in enumerate(windows):
        key = _window_key(i)
        if not store.done(key):
            mw = materialize_window(w, srcs)
            tags: dict[str, list[str]] = {}
            for modality, arr in mw.arrays.items():
                if MODALITIES[modality].multitemporal:
                    tags[modality] = [f"{modality}_{int(y):04d}-{int(m0) + 1:02d}"
                                      for _, m0, y in mw.timestamps[: arr.shape[2]]]
                else:
                    tags[modality] = [modality] * arr.shape[2]
                store.put(f"{key}__{modality}", np.ascontiguousarray(arr, dtype=np.float32))
            store.put(key, None, {"warnings": list(mw.warnings), "tags": tags,
                                  "scenes": sum(len(v) for v in mw.scenes_used.values())})
        rec = store.get_record(key)
        result.report[w.name] = rec["warnings"]
        result.scenes_read += rec["scenes"]
        if progress is not None:
            progress({"windows_done": i + 1, "windows": len(windows),
                      "scenes": result.scenes_read,
                      "bytes": STATS.snapshot()["fetched_bytes"] - before["fetched_bytes"]})
    after = STATS.snapshot()
    result.fetched_windows = after["fetched"] - before["fetched"]
    result.cached_windows = after["cache_hits"] - before["cache_hits"]
    result.fetched_bytes = after["fetched_bytes"] - before["fetched_bytes"]
    return result


def _publish(store: WorkStore, windows: list[Window], srcs: list, result: FetchResult,
             out_dir: Path, crs: str, resolution: float, t0: datetime, t1: datetime) -> dict:
    """Assemble the stored windows into one GeoTIFF per modality and month (in the store),
    publish each with valid pixels as a COG in ``out_dir``; returns the report."""
    gc0, gr0, gc1, gr1 = _grid(windows)
    transform = Affine(resolution, 0, gc0 * resolution, 0, -resolution, -gr0 * resolution)
    width, height = gc1 - gc0, gr1 - gr0
    files: dict[str, rasterio.io.DatasetWriter] = {}
    valid: dict[str, bool] = {}
    try:
        for i, w in enumerate(windows):
            key = _window_key(i)
            for modality, tags in store.get_record(key)["tags"].items():
                mod = MODALITIES[modality]
                arr = store.get_array(f"{key}__{modality}")
                for t, tag in enumerate(tags):
                    if tag not in files:
                        files[tag] = rasterio.open(
                            store.root / f".{tag}{TMP_TAG}{os.getpid()}.tif", "w",
                            driver="GTiff", width=width, height=height, count=mod.num_bands,
                            dtype="float32", crs=crs, transform=transform,
                            nodata=MISSING_VALUE, tiled=True, blockxsize=256, blockysize=256,
                            compress="deflate",
                        )
                        files[tag].descriptions = tuple(mod.bands)
                        valid[tag] = False
                    block = arr[:, :, t, :].transpose(2, 0, 1)
                    valid[tag] |= bool((block != MISSING_VALUE).any())
                    c0, r0, c1, r1 = w.pixel_bounds
                    files[tag].write(block, window=RioWindow(c0 - gc0, r0 - gr0, c1 - c0, r1 - r0))
    finally:
        for f in files.values():
            f.close()
    for tag in sorted(files):
        if not valid[tag]:
            result.missing_months.append(tag)
            continue
        final = out_dir / f"{tag}.tif"
        tmp = temp_path(final)
        with rasterio.open(files[tag].name) as src:
            rasterio.shutil.copy(src, tmp, driver="COG", compress="deflate", blocksize=256,
                                 overview_resampling="average")
        _publish_if_changed(tmp, final)
        result.files.append(str(final))
    return {
        "start": f"{t0:%Y-%m-%d}", "end": f"{t1:%Y-%m-%d}", "crs": crs,
        "files": [Path(f).name for f in result.files], "missing": result.missing_months,
        "windows": result.report,
        "sources": [s.name for s in srcs],
        "search_problems": [str(p) for s in srcs for p in s.problems],
    }


def composite_inputs(result: FetchResult) -> dict[str, list[tuple[Path, date]]]:
    """The monthly COGs of a fetch as time series: per modality ``(path, first day of the
    month)`` in time order (the day-1 timestamps ``materialize_window`` gives composites), the
    inputs ``embed`` takes.

    Raises:
        ValueError: a static layer (WorldCover, DEM): not a time series to embed.
    """
    out: dict[str, list[tuple[Path, date]]] = {}
    for f in map(Path, result.files):
        m = re.fullmatch(r"(?P<mod>\w+?)_(?P<y>\d{4})-(?P<m>\d{2})", f.stem)
        if m is None:
            raise ValueError(f"{f.name}: a static layer ({f.stem}), not a monthly time series; "
                             "embed takes Sentinel-2, Sentinel-1 or Landsat collections")
        out.setdefault(m["mod"], []).append((f, date(int(m["y"]), int(m["m"]), 1)))
    return {k: sorted(v, key=lambda x: x[1]) for k, v in out.items()}
