"""Sources: where a modality's observations (scenes) come from, indexed once per build.

A :class:`Source` holds the scenes of one configured source (local raster files or a STAC
catalog read with pystac), each with its acquisition time, the file (or URL) and band index of
each of its bands, and its lon/lat footprint. Indexing reads only file headers. Scenes whose
footprint cannot be determined (unreadable header, no CRS, a CRS without a geotransform) cannot
be matched to windows: they are listed in :attr:`Source.problems` with the file name and reason,
and not used. Errors in the pixel data itself surface per window, when the scene is read.
"""

from __future__ import annotations

import csv
import glob
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import transform_bounds

from geolatent.data.config import (
    FileSourceConfig,
    SourceConfig,
    StacApiSourceConfig,
    StacSourceConfig,
    source_band_names,
)
from geolatent.data.window import WGS84, Window, to_utc_naive
from geolatent.modalities import MODALITIES, canonical_band_name

BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class BandAsset:
    """One band of a scene: a rasterio-readable file path or URL and the 1-based band index."""

    uri: str
    band_index: int = 1


@dataclass(frozen=True, eq=False)
class Scene:
    """One observation (or one map tile for static sources).

    Attributes:
        id: scene identifier (file name, file-name template or STAC item id).
        datetime: acquisition time, naive UTC; None for undated map tiles.
        assets: band name -> :class:`BandAsset`; keys are registry band names of the source's
            modality, plus the cloud-mask band when one is configured.
        bbox_wgs84: ``(lon_min, lat_min, lon_max, lat_max)`` footprint in degrees.
        absent_bands: bands the source provides but this scene lacks -> why (reading the scene
            then fails, naming the scene and band).
        cloud_cover: percent cloud of the whole scene (STAC ``eo:cloud_cover``), when known.
        offset: raw value subtracted from every data band after reading (the Sentinel-2
            processing-baseline 04.00 offset of 1000 DN; see ``harmonize``).
        footprint: GeoJSON geometry (lon/lat) of the scene, when known (else the bbox).
    """

    id: str
    datetime: datetime | None
    assets: dict[str, BandAsset]
    bbox_wgs84: BBox
    absent_bands: dict[str, str] = field(default_factory=dict)
    cloud_cover: float | None = None
    offset: float = 0.0
    footprint: dict | None = None

    @property
    def files(self) -> list[str]:
        """The distinct files (URIs) this scene reads, sorted."""
        return sorted({a.uri for a in self.assets.values()})


@dataclass(frozen=True)
class SceneProblem:
    """A scene (file) that could not be indexed, with the reason."""

    source: str
    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.file}: {self.reason}"


@dataclass
class Source:
    """The indexed scenes of one configured source.

    Attributes:
        config: the source's configuration (read settings: nodata, units, resampling, ...).
        bands: registry bands this source provides, in registry order; the modality's other
            bands are missing (-99999) in everything this source produces.
        scenes: usable scenes, sorted by time then id.
        problems: scenes that could not be indexed (not used).
    """

    config: FileSourceConfig | StacSourceConfig | StacApiSourceConfig
    bands: tuple[str, ...]
    scenes: list[Scene]
    problems: list[SceneProblem] = field(default_factory=list)
    _bboxes: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def modality(self) -> str:
        return self.config.modality

    @property
    def multitemporal(self) -> bool:
        return MODALITIES[self.modality].multitemporal

    @property
    def mask_band(self) -> str | None:
        return self.config.cloud_mask.band if self.config.cloud_mask else None

    def scenes_for(self, window: Window, bbox_wgs84: BBox | None = None) -> list[Scene]:
        """Scenes whose footprint intersects the window (and, for time series, whose time is in
        the window's time range). Static sources return every overlapping scene, those closest
        in time to the window first."""
        if not self.scenes:
            return []
        wx0, wy0, wx1, wy1 = bbox_wgs84 or window.bounds_wgs84
        if self._bboxes is None or len(self._bboxes) != len(self.scenes):
            self._bboxes = np.array([s.bbox_wgs84 for s in self.scenes], dtype=np.float64)
        b = self._bboxes
        hit = (b[:, 0] < wx1) & (b[:, 2] > wx0) & (b[:, 1] < wy1) & (b[:, 3] > wy0)
        start, end = window.time_range
        out = [s for s, h in zip(self.scenes, hit, strict=True) if h]
        if self.multitemporal:
            return [s for s in out if s.datetime is not None and start <= s.datetime < end]

        def preference(s: Scene) -> tuple[float, float, str]:
            if s.datetime is None:
                return (float("inf"), 0.0, s.id)
            if start <= s.datetime < end:
                gap = 0.0
            else:
                gap = min(abs((s.datetime - t).total_seconds()) for t in (start, end))
            return (gap, -s.datetime.timestamp(), s.id)  # then the latest first

        return sorted(out, key=preference)

    def with_scenes(self, scenes: list[Scene]) -> Source:
        """A copy holding only ``scenes`` (small to send to a worker)."""
        return replace(self, scenes=list(scenes), problems=[])


# -- helpers ------------------------------------------------------------------------------------
_DATE_FORMATS = ("%Y%m%dT%H%M%S", "%Y%m%d", "%Y:%m:%d %H:%M:%S", "%Y")


def parse_date(text: str, fmt: str | None = None) -> datetime:
    """Parse an acquisition date with ``fmt`` (strptime), or ISO / common compact forms."""
    text = text.strip()
    if fmt:
        return datetime.strptime(text, fmt)
    try:
        return to_utc_naive(text)
    except ValueError:
        pass
    for f in _DATE_FORMATS:
        try:
            return datetime.strptime(text, f)
        except ValueError:
            continue
    raise ValueError(f"cannot parse date {text!r}; set date_format")


def raster_footprint(uri: str) -> tuple[BBox, dict[str, str]]:
    """Lon/lat bbox and metadata tags of a raster, from its header only.

    Raises ValueError naming the file when it has no CRS or no geotransform.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(uri) as src:
            if src.crs is None:
                raise ValueError("no CRS")
            if src.transform.is_identity and not src.gcps[0]:
                raise ValueError(f"CRS {src.crs} but no geotransform (pixel coordinates only)")
            if src.transform.is_identity:
                raise ValueError("georeferenced by GCPs only; warp it to a geotransform first")
            bbox = transform_bounds(src.crs, WGS84, *src.bounds, densify_pts=21)
            return tuple(float(v) for v in bbox), src.tags()  # type: ignore[return-value]


def _mask_name(cfg: SourceConfig) -> str | None:
    return cfg.cloud_mask.band if cfg.cloud_mask else None


def _registry_order(modality: str, bands: set[str]) -> tuple[str, ...]:
    return tuple(b for b in MODALITIES[modality].bands if b in bands)


# -- local files --------------------------------------------------------------------------------
@dataclass
class _FileScene:
    id: str
    files: dict[str, BandAsset] = field(default_factory=dict)
    datetime: datetime | None = None


def _band_from_name(cfg: FileSourceConfig, path: str) -> tuple[str, str]:
    """(band, scene key) for one-file-per-band sources: the band is the pattern's first group."""
    name = Path(path).name
    m = re.search(cfg.band_pattern or "", name)
    if m is None:
        raise ValueError(f"band_pattern {cfg.band_pattern!r} does not match the file name")
    key = str(Path(path).parent / (name[: m.start(1)] + "{band}" + name[m.end(1) :]))
    return m.group(1), key


def _date_from_name(cfg: FileSourceConfig, path: str) -> datetime | None:
    if not cfg.date_pattern:
        return None
    m = re.search(cfg.date_pattern, Path(path).name)
    if m is None:
        raise ValueError(f"date_pattern {cfg.date_pattern!r} does not match the file name")
    return parse_date(m.group(1), cfg.date_format)


def _collect_file_scenes(cfg: FileSourceConfig) -> tuple[list[_FileScene], list[SceneProblem]]:
    mask = _mask_name(cfg)
    problems: list[SceneProblem] = []
    scenes: dict[str, _FileScene] = {}

    def add(key: str, path: str, band_names: list[str], when: datetime | None) -> None:
        sc = scenes.setdefault(key, _FileScene(key))
        for i, b in enumerate(band_names):
            sc.files[b] = BandAsset(path, i + 1)
        sc.datetime = sc.datetime or when

    if cfg.table:
        with open(cfg.table, newline="") as fh:
            rows = list(csv.DictReader(fh))
        base = Path(cfg.table).parent
        for row in rows:
            path = row.get("path", "").strip()
            if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", path) and not Path(path).is_absolute():
                path = str((base / path).resolve())
            try:
                when = parse_date(row["datetime"], cfg.date_format) if row.get("datetime") else None
                if row.get("band"):
                    if not row.get("scene"):
                        raise ValueError("rows with a 'band' need a 'scene' column to group files")
                    bands = source_band_names(cfg.modality, [row["band"]], mask)
                    key = row["scene"]
                elif cfg.bands:
                    bands = source_band_names(cfg.modality, cfg.bands, mask)
                    key = row.get("scene") or path
                else:
                    raise ValueError("table has no 'band' column and the source lists no 'bands'")
                add(key, path, bands, when)
            except (ValueError, KeyError) as e:
                problems.append(SceneProblem(cfg.name, path, str(e)))
        return list(scenes.values()), problems

    paths = set()
    for pattern in cfg.paths:
        found = glob.glob(pattern)
        if not found:
            raise ValueError(
                f"source {cfg.name!r}: paths pattern {pattern!r} matches no file; fix the path "
                "(relative paths are relative to the config file)"
            )
        paths |= set(found)
    for path in sorted(paths):
        try:
            when = _date_from_name(cfg, path)
            if cfg.band_pattern:
                band, key = _band_from_name(cfg, path)
                keep = {
                    canonical_band_name(b) for b in (cfg.bands or []) + ([mask] if mask else [])
                }
                if cfg.bands and canonical_band_name(band) not in keep:
                    continue  # a band the source does not use (e.g. B8 when bands: [B2, B3, B4])
                add(key, path, source_band_names(cfg.modality, [band], mask), when)
            elif cfg.bands:
                add(path, path, source_band_names(cfg.modality, cfg.bands, mask), when)
            else:
                add(path, path, described_bands(cfg, path), when)
        except ValueError as e:
            problems.append(SceneProblem(cfg.name, path, str(e)))
    return list(scenes.values()), problems


def described_bands(cfg: FileSourceConfig, path: str) -> list[str]:
    """Registry band names of a file's bands from its band descriptions (no ``bands`` given).

    Raises ValueError naming the file when a band has no description or a description is not
    a band of the modality (nor the cloud-mask band).
    """
    mask = _mask_name(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as src:
                descriptions = list(src.descriptions)
        except (RasterioError, OSError) as e:
            raise ValueError(f"cannot read band descriptions: {e}") from e
    if not descriptions or any(not d for d in descriptions):
        raise ValueError(
            f"bands without descriptions ({descriptions}); give 'bands' in source {cfg.name!r} "
            "(the band name of each file band, in order)"
        )
    try:
        return source_band_names(cfg.modality, [str(d) for d in descriptions], mask)
    except ValueError as e:
        raise ValueError(
            f"band description {e}; give 'bands' in source {cfg.name!r} to name the file's bands"
        ) from None


def open_file_source(cfg: FileSourceConfig) -> Source:
    """Index local raster files (see :class:`~geolatent.data.config.FileSourceConfig`)."""
    raw, problems = _collect_file_scenes(cfg)
    mask = _mask_name(cfg)
    scenes: list[Scene] = []
    provided: set[str] = set()
    for sc in raw:
        first = sorted(sc.files.values(), key=lambda a: a.uri)[0].uri
        try:
            # One header per scene: the bands of a scene share its footprint.
            bbox, tags = raster_footprint(first)
            when = sc.datetime
            if cfg.date_tag:
                if cfg.date_tag not in tags:
                    raise ValueError(f"metadata tag {cfg.date_tag!r} not found")
                when = parse_date(tags[cfg.date_tag], cfg.date_format)
            if MODALITIES[cfg.modality].multitemporal and when is None:
                raise ValueError("no acquisition date")
        except (RasterioError, OSError, ValueError) as e:
            problems.append(SceneProblem(cfg.name, first, str(e)))
            continue
        provided |= {b for b in sc.files if b != mask}
        scenes.append(Scene(Path(sc.id).name, when, dict(sc.files), bbox))
    if cfg.bands:
        provided |= {b for b in source_band_names(cfg.modality, cfg.bands, mask) if b != mask}
    return _finish(cfg, scenes, provided, problems)


# -- STAC ---------------------------------------------------------------------------------------
def _asset_ref(item: pystac.Item, spec: str) -> BandAsset:
    key, _, idx = spec.partition(":")
    if key not in item.assets:
        raise KeyError(f"item {item.id!r} has no asset {key!r} (assets: {sorted(item.assets)})")
    href = item.assets[key].get_absolute_href() or item.assets[key].href
    return BandAsset(href, int(idx) if idx else 1)


def _item_time(item: pystac.Item) -> datetime | None:
    when = item.datetime or item.common_metadata.start_datetime
    return to_utc_naive(when) if when is not None else None


def open_stac_source(cfg: StacSourceConfig) -> Source:
    """Index a STAC catalog / collection on disk or at a URL (see ``StacSourceConfig``).

    A band whose asset an item lacks is recorded in the scene as an absent band: reading that
    scene then fails with the item and the missing asset named (per window).
    """
    root = pystac.read_file(cfg.catalog)
    if isinstance(root, pystac.Item):
        items = [root]
    elif isinstance(root, pystac.Catalog):
        items = list(root.get_items(recursive=True))
    else:
        raise ValueError(f"{cfg.catalog}: not a STAC catalog, collection or item")
    mask = _mask_name(cfg)
    wanted = {canonical_band_name(b): b for b in MODALITIES[cfg.modality].bands}
    if mask:
        wanted[canonical_band_name(mask)] = mask
    scenes, problems, provided = [], [], set()
    for item in items:
        if cfg.collections and item.collection_id not in cfg.collections:
            continue
        self_href = item.get_self_href() or item.id
        try:
            if item.bbox is None:
                raise ValueError("item has no bbox")
            when = _item_time(item)
            if MODALITIES[cfg.modality].multitemporal and when is None:
                raise ValueError("item has no datetime")
            assets: dict[str, BandAsset] = {}
            if cfg.assets:
                names = source_band_names(cfg.modality, list(cfg.assets), mask)
                for band, spec in zip(names, cfg.assets.values(), strict=True):
                    if spec.partition(":")[0] in item.assets:
                        assets[band] = _asset_ref(item, spec)
            else:
                for key in item.assets:
                    band = wanted.get(canonical_band_name(key))
                    if band is not None:
                        assets[band] = _asset_ref(item, key)
            if not assets:
                raise ValueError("no asset matches a band of the source")
        except (ValueError, KeyError) as e:
            problems.append(SceneProblem(cfg.name, self_href, str(e)))
            continue
        provided |= {b for b in assets if b != mask}
        b = item.bbox  # 2D [w, s, e, n] or 3D [w, s, zmin, e, n, zmax]
        bbox = (b[0], b[1], b[3], b[4]) if len(b) == 6 else (b[0], b[1], b[2], b[3])
        scenes.append(Scene(item.id, when, assets, tuple(float(v) for v in bbox)))
    if cfg.assets:
        provided |= {
            b for b in source_band_names(cfg.modality, list(cfg.assets), mask) if b != mask
        }
    return _finish(cfg, scenes, provided, problems)


def _finish(
    cfg: SourceConfig, scenes: list[Scene], provided: set[str], problems: list[SceneProblem]
) -> Source:
    """Record each scene's absent bands, sort scenes by time, and build the Source."""
    mask = _mask_name(cfg)
    expected = set(provided) | ({mask} if mask else set())
    where = "asset" if isinstance(cfg, StacSourceConfig) else "file"
    for s in scenes:
        for band in sorted(expected - set(s.assets)):
            s.absent_bands[band] = f"scene {s.id!r} has no {where} for band {band!r}"
    scenes.sort(key=lambda s: (s.datetime or datetime.min, s.id))
    return Source(cfg, _registry_order(cfg.modality, provided), scenes, problems)


def open_source(cfg: SourceConfig) -> Source:
    """Index one configured source (files, a STAC catalog, or a STAC API searched lazily)."""
    if isinstance(cfg, FileSourceConfig):
        return open_file_source(cfg)
    if isinstance(cfg, StacApiSourceConfig):
        from geolatent.data.stac_api import open_stac_api_source

        return open_stac_api_source(cfg)
    return open_stac_source(cfg)


def open_sources(configs: list[SourceConfig]) -> list[Source]:
    """Index every configured source (file headers / STAC items only, no pixel data)."""
    return [open_source(c) for c in configs]


def scenes_by_source(window: Window, sources: list[Source]) -> dict[str, list[Scene]]:
    """Source name -> the scenes a window will use (what ``--dry-run`` lists)."""
    bbox = window.bounds_wgs84
    return {s.name: s.scenes_for(window, bbox) for s in sources}


def group_by_day(scenes: list[Scene]) -> dict[tuple[int, int, int], list[Scene]]:
    """Scenes grouped by acquisition day (tiles of one pass are mosaicked together)."""
    out: dict[tuple[int, int, int], list[Scene]] = defaultdict(list)
    for s in scenes:
        assert s.datetime is not None
        out[(s.datetime.year, s.datetime.month, s.datetime.day)].append(s)
    return dict(out)
