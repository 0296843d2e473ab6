"""STAC API sources: search a public STAC API (``pystac-client``) for the scenes of a window.

A :class:`StacApiSource` is a :class:`~geolatent.data.sources.Source` whose scenes are found
lazily: the first window (or :meth:`StacApiSource.search_area` for a whole AOI) that falls
outside what was already searched triggers one search, whose items become scenes. Every command
that reads pixels through the data layer (``data build``, fine-tuning, ``predict``,
``imagery fetch``) therefore gets STAC APIs without knowing about them.

Scene choice: per window and calendar month, the ``scenes_per_month`` least cloudy scenes
(``eo:cloud_cover``), scenes covering the whole window first; the data layer then cloud-masks
them (SCL / QA_PIXEL) and takes the median.

Searches are cached on disk (``cache_dir/search``) so an offline run reuses them.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import box, shape

from geolatent.data.config import StacApiSourceConfig, source_band_names
from geolatent.data.sources import BandAsset, BBox, Scene, SceneProblem, Source
from geolatent.data.window import Window, to_utc_naive
from geolatent.modalities import MODALITIES

# eo:bands common names -> registry bands (unambiguous ones; red-edge bands go by their name).
COMMON_NAMES: dict[str, dict[str, str]] = {
    "sentinel2_l2a": {
        "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "nir": "B08",
        "nir08": "B8A", "nir09": "B09", "swir16": "B11", "swir22": "B12",
    },
    "landsat": {
        "coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "nir08": "B5",
        "swir16": "B6", "swir22": "B7", "pan": "B8", "cirrus": "B9", "lwir11": "B10",
        "lwir12": "B11",
    },
}

S2_OFFSET_BASELINE = 4.0
S2_BOA_OFFSET = 1000.0  # DN added to L2A reflectance from processing baseline 04.00 on


class StacSearchError(RuntimeError):
    """A STAC API search failed or cannot be answered (offline without a cached search)."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/geolatent/stac`` (``~/.cache/geolatent/stac``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "geolatent" / "stac"


def cache_dir_of(cfg: StacApiSourceConfig) -> Path:
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


# -- query / sort applied on the client when the server lacks the extensions ----------------
_OPS = {
    "eq": operator.eq, "neq": operator.ne, "lt": operator.lt, "lte": operator.le,
    "gt": operator.gt, "gte": operator.ge,
}


def effective_query(cfg: StacApiSourceConfig) -> dict[str, dict[str, Any]]:
    """``query`` plus ``max_cloud`` as ``eo:cloud_cover < max_cloud``."""
    q = {k: dict(v) for k, v in (cfg.query or {}).items()}
    if cfg.max_cloud is not None:
        q.setdefault("eo:cloud_cover", {})["lt"] = cfg.max_cloud
    for prop, ops in q.items():
        for op in ops:
            if op not in _OPS and op != "in":
                raise ValueError(f"query on {prop!r}: unknown operator {op!r}; use {sorted(_OPS)} "
                                 "or 'in'")
    return q


def matches_query(properties: dict[str, Any], query: dict[str, dict[str, Any]]) -> bool:
    """True when an item's properties satisfy every query-extension condition."""
    for prop, ops in query.items():
        value = properties.get(prop)
        for op, arg in ops.items():
            if value is None:
                return False
            if op == "in":
                if value not in arg:
                    return False
            elif not _OPS[op](value, arg):
                return False
    return True


def _sort_key(sort_by: str) -> tuple[str, bool]:
    desc = sort_by.startswith("-")
    prop = sort_by.lstrip("+-")
    return prop.removeprefix("properties."), desc


# -- searching ----------------------------------------------------------------------------------
def _search_key(cfg: StacApiSourceConfig, bbox: BBox, start: datetime, end: datetime) -> str:
    payload = {
        "url": cfg.url, "collections": cfg.collections, "bbox": [round(v, 7) for v in bbox],
        "datetime": [start.isoformat(), end.isoformat()], "query": effective_query(cfg),
        "sort_by": cfg.sort_by, "max_items": cfg.max_items,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def search_items(
    cfg: StacApiSourceConfig, bbox: BBox, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Items (STAC item dicts) of ``cfg.collections`` intersecting ``bbox`` in ``[start, end)``.

    Uses ``pystac-client``; the query and sort extensions go to the server when it conforms to
    them and are applied to the returned items otherwise. Results are cached on disk; with
    ``offline`` only the cache is used.

    Raises:
        StacSearchError: the API cannot be reached / answers an error (after retries), the
            search hits ``max_items``, or offline without a cached search.
    """
    key = _search_key(cfg, bbox, start, end)
    path = cache_dir_of(cfg) / "search" / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())["features"]
    if cfg.offline:
        raise StacSearchError(
            f"source {cfg.name!r}: offline and no cached search for bbox {list(bbox)} "
            f"{start:%Y-%m-%d}..{end:%Y-%m-%d} of {cfg.collections} (run once online first)"
        )
    import requests
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    query = effective_query(cfg)
    retry = Retry(
        total=cfg.retries, backoff_factor=cfg.backoff_s,
        status_forcelist=(429, 500, 502, 503, 504), respect_retry_after_header=True,
        allowed_methods=None,
    )
    try:
        io = StacApiIO(timeout=cfg.timeout_s, max_retries=retry)
        client = Client.open(cfg.url, stac_io=io)
        server_query = client.conforms_to("QUERY")
        server_sort = client.conforms_to("SORT")
        kwargs: dict[str, Any] = {}
        if query and server_query:
            kwargs["query"] = query
        if cfg.sort_by and server_sort:
            kwargs["sortby"] = cfg.sort_by
        search = client.search(
            collections=cfg.collections, bbox=list(bbox),
            datetime=[to_utc_naive(start).isoformat() + "Z", to_utc_naive(end).isoformat() + "Z"],
            max_items=cfg.max_items + 1, **kwargs,
        )
        items = [it.to_dict(transform_hrefs=False) for it in search.items()]
    except (requests.RequestException, OSError) as e:
        raise StacSearchError(f"source {cfg.name!r}: search of {cfg.url} failed: {e}") from e
    except Exception as e:  # pystac-client's APIError and friends
        if type(e).__module__.startswith(("pystac_client", "pystac")):
            raise StacSearchError(f"source {cfg.name!r}: search of {cfg.url} failed: {e}") from e
        raise
    if len(items) > cfg.max_items:
        raise StacSearchError(
            f"source {cfg.name!r}: the search returned more than max_items={cfg.max_items} items "
            f"for bbox {list(bbox)}; raise max_items or narrow the area / dates / max_cloud"
        )
    if query and not server_query:
        items = [it for it in items if matches_query(it.get("properties", {}), query)]
    if cfg.sort_by:
        prop, desc = _sort_key(cfg.sort_by)
        items.sort(key=lambda it: (it["properties"].get(prop) is None,
                                   it["properties"].get(prop) or 0), reverse=desc)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    os.replace(tmp, path)
    return items


# -- items -> scenes ----------------------------------------------------------------------------
def _asset_bands(asset: dict[str, Any]) -> list[dict[str, Any]]:
    return list(asset.get("eo:bands") or asset.get("bands") or [])


def eo_band_assets(modality: str, item: dict[str, Any]) -> dict[str, str]:
    """Registry band -> asset key from the assets' ``eo:bands`` (band ``name`` first, then
    ``common_name``), falling back to asset keys equal to a registry band name."""
    mod = MODALITIES[modality]
    common = COMMON_NAMES.get(modality, {})
    out: dict[str, str] = {}
    for key, asset in item.get("assets", {}).items():
        bands = _asset_bands(asset)
        for i, b in enumerate(bands):
            band = None
            name = b.get("name")
            if name:
                try:
                    band = mod.bands[mod.band_index(name)]
                except KeyError:
                    band = None
            if band is None and b.get("common_name") in common:
                band = common[b["common_name"]]
            if band is not None and band not in out:
                out[band] = key if len(bands) == 1 else f"{key}:{i + 1}"
        if not bands:
            try:
                band = mod.bands[mod.band_index(key)]
            except KeyError:
                continue
            out.setdefault(band, key)
    return out


def _baseline(props: dict[str, Any]) -> float | None:
    v = props.get("s2:processing_baseline")
    try:
        return float(v) if v is not None else None
    except ValueError:
        return None


def harmonize_offset(cfg: StacApiSourceConfig, props: dict[str, Any]) -> float:
    """DN to subtract from a Sentinel-2 L2A item's bands (rslearn's ``harmonize``): 1000 from
    processing baseline 04.00 on, unless the provider already removed it
    (``earthsearch:boa_offset_applied``)."""
    if not cfg.harmonize or cfg.modality != "sentinel2_l2a":
        return 0.0
    if props.get("earthsearch:boa_offset_applied") is True:
        return 0.0
    base = _baseline(props)
    return S2_BOA_OFFSET if base is not None and base >= S2_OFFSET_BASELINE else 0.0


def item_to_scene(cfg: StacApiSourceConfig, item: dict[str, Any]) -> Scene:
    """One scene per item. Raises ValueError (naming the item) when it cannot be used."""
    mask = cfg.cloud_mask.band if cfg.cloud_mask else None
    props = item.get("properties", {})
    when_s = props.get("datetime") or props.get("start_datetime")
    when = to_utc_naive(when_s) if when_s else None
    if MODALITIES[cfg.modality].multitemporal and when is None:
        raise ValueError(f"item {item.get('id')!r} has no datetime")
    bbox = item.get("bbox")
    if not bbox:
        raise ValueError(f"item {item.get('id')!r} has no bbox")
    if len(bbox) == 6:
        bbox = [bbox[0], bbox[1], bbox[3], bbox[4]]
    if cfg.assets:
        names = source_band_names(cfg.modality, list(cfg.assets), mask)
        mapping = dict(zip(names, cfg.assets.values(), strict=True))
    else:
        mapping = eo_band_assets(cfg.modality, item)
        if mask and mask not in mapping and mask in item.get("assets", {}):
            mapping[mask] = mask
    assets: dict[str, BandAsset] = {}
    absent: dict[str, str] = {}
    for band, spec in mapping.items():
        key, _, idx = spec.partition(":")
        asset = item.get("assets", {}).get(key)
        if asset is None or not asset.get("href"):
            absent[band] = f"item {item['id']!r} has no asset {key!r} (band {band!r})"
            continue
        assets[band] = BandAsset(asset["href"], int(idx) if idx else 1)
    if not assets:
        raise ValueError(f"item {item.get('id')!r}: no asset matches a band of {cfg.modality}")
    geom = item.get("geometry")
    return Scene(
        str(item["id"]), when, assets, tuple(float(v) for v in bbox), absent,
        cloud_cover=props.get("eo:cloud_cover"), offset=harmonize_offset(cfg, props),
        footprint=geom,
    )


# -- the source ---------------------------------------------------------------------------------
@dataclass
class StacApiSource(Source):
    """A :class:`Source` over a STAC API; scenes are searched per area on first use.

    Attributes (beyond :class:`Source`):
        searched: ``(bbox, start, end)`` extents already searched (their items are in
            ``scenes``).
        frozen: True for the restricted copy sent to a worker: it never searches.
    """

    searched: list[tuple[BBox, datetime, datetime]] = field(default_factory=list)
    frozen: bool = False

    def _covered(self, bbox: BBox, start: datetime, end: datetime) -> bool:
        return any(
            b[0] <= bbox[0] and b[1] <= bbox[1] and b[2] >= bbox[2] and b[3] >= bbox[3]
            and s <= start and e >= end
            for b, s, e in self.searched
        )

    def search_area(self, bbox: BBox, time_range: tuple[datetime, datetime]) -> list[Scene]:
        """Search ``bbox`` (lon/lat) over ``time_range`` once; returns the new scenes."""
        cfg = self.config
        assert isinstance(cfg, StacApiSourceConfig)
        start, end = (to_utc_naive(t) for t in time_range)
        if self.frozen or self._covered(bbox, start, end):
            return []
        items = search_items(cfg, bbox, start, end)
        known = {s.id for s in self.scenes}
        new: list[Scene] = []
        for item in items:
            if str(item.get("id")) in known:
                continue
            try:
                new.append(item_to_scene(cfg, item))
            except (ValueError, KeyError) as e:
                self.problems.append(SceneProblem(cfg.name, str(item.get("id")), str(e)))
        mask = cfg.cloud_mask.band if cfg.cloud_mask else None
        provided = set(self.bands) | {b for s in new for b in s.assets if b != mask}
        if cfg.assets:
            provided |= {b for b in source_band_names(cfg.modality, list(cfg.assets), mask)
                         if b != mask}
        self.bands = tuple(b for b in MODALITIES[cfg.modality].bands if b in provided)
        self.scenes = sorted(self.scenes + new, key=lambda s: (s.datetime or datetime.min, s.id))
        self._bboxes = None
        self.searched.append((tuple(bbox), start, end))  # type: ignore[arg-type]
        return new

    def scenes_for(self, window: Window, bbox_wgs84: BBox | None = None) -> list[Scene]:
        bbox = bbox_wgs84 or window.bounds_wgs84
        if not self._covered(bbox, *window.time_range):
            # One search per grid cell, not per window: neighbouring windows reuse it.
            self.search_area(snap_bbox(bbox), window.time_range)
        scenes = super().scenes_for(window, bbox)
        cfg = self.config
        assert isinstance(cfg, StacApiSourceConfig)
        if not self.multitemporal or cfg.scenes_per_month is None:
            return scenes
        return choose_scenes(scenes, bbox, cfg.scenes_per_month)

    def with_scenes(self, scenes: list[Scene]) -> StacApiSource:
        out = super().with_scenes(scenes)
        assert isinstance(out, StacApiSource)
        out.frozen = True
        return out


SEARCH_CELL_DEG = 0.25


def snap_bbox(bbox: BBox, cell: float = SEARCH_CELL_DEG) -> BBox:
    """``bbox`` grown to the ``cell``-degree grid (clamped to the globe)."""
    x0 = max(-180.0, math.floor(bbox[0] / cell) * cell)
    y0 = max(-90.0, math.floor(bbox[1] / cell) * cell)
    x1 = min(180.0, math.ceil(bbox[2] / cell) * cell)
    y1 = min(90.0, math.ceil(bbox[3] / cell) * cell)
    return (x0, y0, x1, y1)


def coverage(scene: Scene, bbox: BBox) -> float:
    """Fraction (0-1) of the lon/lat ``bbox`` inside the scene's footprint."""
    target = box(*bbox)
    if target.area == 0:
        return 1.0
    geom = shape(scene.footprint) if scene.footprint else box(*scene.bbox_wgs84)
    return float(shapely.intersection(geom, target).area / target.area)


def choose_scenes(scenes: list[Scene], bbox: BBox, per_month: int) -> list[Scene]:
    """Per calendar month, the ``per_month`` best scenes: covering the window first, then the
    least cloudy, then the earliest. Returned in time order."""
    by_month: dict[tuple[int, int], list[Scene]] = {}
    for s in scenes:
        assert s.datetime is not None
        by_month.setdefault((s.datetime.year, s.datetime.month), []).append(s)
    keep: list[Scene] = []
    for group in by_month.values():
        ranked = sorted(
            group,
            key=lambda s: (
                coverage(s, bbox) < 0.999,
                s.cloud_cover if s.cloud_cover is not None else 100.0,
                s.datetime,
                s.id,
            ),
        )
        keep += ranked[:per_month]
    return sorted(keep, key=lambda s: (s.datetime, s.id))


def open_stac_api_source(cfg: StacApiSourceConfig) -> StacApiSource:
    """A source over a STAC API; nothing is searched until a window (or area) asks."""
    return StacApiSource(cfg, (), [])
