"""Data configuration (YAML): where each modality's observations come from, and what to build.

Sources are declared here, never in code. Relative paths are resolved against the folder of the
config file. See ``configs/data/example.yaml`` for an annotated example.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from geolatent.config import StrictModel, known_name, load_config
from geolatent.modalities import BASE_RESOLUTION_M, MODALITIES, canonical_band_name

Resampling = Literal["nearest", "bilinear", "average", "cubic", "mode"]

SCL_INVALID_CLASSES = (0, 1, 3, 8, 9, 10)
"""Sentinel-2 SCL classes that are not a clear observation: no data, saturated/defective,
cloud shadow, cloud medium / high probability, thin cirrus. Snow (11) and water are kept."""

LANDSAT_QA_INVALID_BITS = (0, 1, 2, 3, 4)
"""Landsat Collection 2 QA_PIXEL bits that mark a pixel unusable: fill, dilated cloud, cirrus,
cloud, cloud shadow."""




class CloudMaskConfig(StrictModel):
    """A per-scene mask band that removes cloudy pixels before compositing.

    ``band`` names the mask band inside the scene (a name listed in the file source's ``bands`` /
    ``band_pattern`` results, or a STAC asset key). ``kind``:
    - ``scl``: Sentinel-2 Scene Classification; invalid classes default to
      :data:`SCL_INVALID_CLASSES`;
    - ``binary``: any non-zero value is cloud;
    - ``values``: the listed ``invalid_values`` are cloud;
    - ``bits``: a bit-packed QA band (Landsat ``QA_PIXEL``): a pixel with any of
      ``invalid_bits`` set is cloud (default :data:`LANDSAT_QA_INVALID_BITS`).
    """

    band: str
    kind: Literal["scl", "binary", "values", "bits"] = "scl"
    invalid_values: list[int] | None = None
    invalid_bits: list[int] | None = None

    def bit_mask(self) -> int:
        """The OR of the invalid bits (``bits`` kind)."""
        bits = self.invalid_bits if self.invalid_bits is not None else LANDSAT_QA_INVALID_BITS
        out = 0
        for b in bits:
            if not 0 <= b < 32:
                raise ValueError(f"cloud_mask invalid_bits: bit {b} is not in 0..31")
            out |= 1 << b
        return out

    def invalid(self) -> tuple[int, ...] | None:
        """Invalid class values, or None for ``binary`` / ``bits`` (see :meth:`bit_mask`)."""
        if self.kind in ("binary", "bits"):
            return None
        if self.invalid_values is not None:
            return tuple(self.invalid_values)
        if self.kind == "scl":
            return SCL_INVALID_CLASSES
        raise ValueError("cloud_mask kind 'values' needs invalid_values")


class _SourceBase(StrictModel):
    """Settings shared by every source kind.

    Attributes:
        name: unique source name (used in reports).
        modality: registry modality the source feeds (``sentinel1``, ``worldcover``, ...).
        nodata: raw value that means "no data"; overrides the file's own nodata when set
            (Landsat L1 fill is 0 but the files do not declare it).
        units: ``linear`` for Sentinel-1 linear backscatter (converted to dB); ``native``
            means the values already are in the modality's units.
        scale, offset: ``value = raw * scale + offset`` after warping (e.g. reflectance 0-1 ->
            DN with ``scale: 10000``).
        resampling: warping method; by default nearest for class maps, bilinear when the
            source is at least as coarse as the target grid, average when it is finer.
        cloud_mask: optional mask band, see :class:`CloudMaskConfig`.
        on_bad_scene: ``fail`` the window when a scene cannot be read (default), or ``skip`` the
            scene and record a warning.
    """

    name: str
    modality: Annotated[str, known_name(MODALITIES, "modality")]
    nodata: float | None = None
    units: Literal["native", "linear"] = "native"
    scale: float = 1.0
    offset: float = 0.0
    resampling: Resampling | None = None
    cloud_mask: CloudMaskConfig | None = None
    on_bad_scene: Literal["fail", "skip"] = "fail"

    @model_validator(mode="after")
    def _linear_only_for_sar(self) -> _SourceBase:
        if self.units == "linear" and self.modality != "sentinel1":
            raise ValueError("units 'linear' (-> dB) only applies to the sentinel1 modality")
        declared = getattr(self, "bands", None) or list(getattr(self, "assets", None) or {})
        mask = self.cloud_mask.band if self.cloud_mask else None
        source_band_names(self.modality, list(declared), mask)  # raises for unknown bands
        return self


class FileSourceConfig(_SourceBase):
    """Local (or rasterio-readable URL) raster files, one scene per file or per file group.

    Scenes and dates come from exactly one of:
    - ``paths``: glob patterns; the date is parsed from the file name with ``date_pattern``
      (a regex whose first group is the date) and ``date_format`` (strptime), or read from the
      GDAL metadata tag ``date_tag``;
    - ``table``: a CSV with columns ``path``, ``datetime`` (ISO) and optionally ``band`` (one
      file per band) and ``scene`` (grouping id); relative paths are relative to the table.

    Bands: ``bands`` lists the band of each file band in order (a multi-band file), or
    ``band_pattern`` (regex, first group = band name) takes the band from the file name, files
    of one scene differing only by that part (Landsat ``..._B2.TIF``, ``..._B3.TIF``). With
    neither, each file's own band descriptions name its bands (self-describing GeoTIFFs, as
    ``embed`` reads them); a file without descriptions is then a clear error. Band names
    are registry band names of ``modality`` (aliases such as ``B2`` for ``B02`` work) or the
    cloud-mask band. Static map sources (WorldCover, SRTM, ...) need no date.
    """

    type: Literal["files"] = "files"
    paths: list[str] = Field(default_factory=list)
    table: str | None = None
    bands: list[str] | None = None
    band_pattern: str | None = None
    date_pattern: str | None = None
    date_format: str | None = None
    date_tag: str | None = None

    @model_validator(mode="after")
    def _check(self) -> FileSourceConfig:
        if bool(self.paths) == bool(self.table):
            raise ValueError(f"source {self.name!r}: give either 'paths' or 'table'")
        for key, pat in (("band_pattern", self.band_pattern), ("date_pattern", self.date_pattern)):
            if pat is None:
                continue
            try:
                groups = re.compile(pat).groups
            except re.error as e:  # not a ValueError: pydantic would let it escape raw
                raise ValueError(f"source {self.name!r}: {key} {pat!r} is not a valid regular "
                                 f"expression ({e})") from None
            if groups < 1:
                raise ValueError(f"source {self.name!r}: {key} {pat!r} needs a capture group")
        multitemporal = MODALITIES[self.modality].multitemporal
        if multitemporal and self.paths and not (self.date_pattern or self.date_tag):
            raise ValueError(
                f"source {self.name!r}: a multitemporal source needs 'date_pattern' or 'date_tag'"
            )
        return self


class StacSourceConfig(_SourceBase):
    """A STAC catalog or collection JSON (read with pystac), searched for items on disk.

    ``assets`` maps band names (registry bands of ``modality`` or the cloud-mask band) to asset
    keys; ``"key"`` reads band 1 of the asset, ``"key:3"`` band 3. Without ``assets``, asset
    keys equal to the registry band names (case-insensitive, ``B2`` == ``B02``) are used.
    Asset hrefs may be local files or any URL rasterio can read.
    """

    type: Literal["stac"] = "stac"
    catalog: str
    collections: list[str] | None = None
    assets: dict[str, str] | None = None


class StacApiSourceConfig(_SourceBase):
    """A STAC API searched with ``pystac-client``; assets are read by windowed HTTP range reads.

    Attributes:
        url: the API's root URL.
        collections: collections to search.
        query: STAC query-extension filters, e.g. ``{"eo:cloud_cover": {"lt": 40}}``; applied
            by the server when it supports the extension, else on the returned items.
        max_cloud: shorthand for ``eo:cloud_cover < max_cloud`` (percent).
        sort_by: item property to sort by (``-`` prefix = descending), server- or client-side.
        max_items: at most this many items per search (a clear error, not a silent cut, when a
            window's search reaches it).
        assets: band -> asset key (``"key"`` or ``"key:band_index"``); without it assets are
            mapped by their ``eo:bands`` names / common names, then by asset key.
        signing: ``planetary-computer`` signs asset URLs with SAS tokens from the
            ``planetary-computer`` package (its token cache; settings from ``PC_SDK_SAS_URL`` /
            ``PC_SDK_SUBSCRIPTION_KEY``); re-signed when the storage answers 403.
        harmonize: remove the +1000 offset of Sentinel-2 processing baseline 04.00 and later
            (``s2:processing_baseline``), so both baselines give the same values.
        scenes_per_month: per window and month, composite only this many least cloudy scenes
            (those covering the window first); None = all.
        cache_dir: local cache of fetched asset windows and searches (default
            ``$XDG_CACHE_HOME/geolatent/stac``); ``cache_max_mb`` bounds its size (oldest
            entries are evicted); ``offline`` uses only the cache and names what is missing.
        timeout_s, retries, backoff_s: per request timeout; attempts on 429 / 5xx / dropped
            connections, waiting ``backoff_s * 2**attempt`` (at least the server's Retry-After).
    """

    type: Literal["stac_api"] = "stac_api"
    url: str
    collections: list[str] = Field(min_length=1)
    query: dict[str, dict[str, Any]] | None = None
    max_cloud: float | None = Field(default=None, ge=0, le=100)
    sort_by: str | None = None
    max_items: int = Field(default=2000, gt=0)
    assets: dict[str, str] | None = None
    signing: Literal["none", "planetary-computer"] = "none"
    harmonize: bool = False
    scenes_per_month: int | None = Field(default=4, gt=0)
    cache_dir: str | None = None
    cache_max_mb: float = Field(default=4096.0, gt=0)
    offline: bool = False
    timeout_s: float = Field(default=30.0, gt=0)
    retries: int = Field(default=4, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)
    on_bad_scene: Literal["fail", "skip"] = "skip"

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError(f"url must be an http(s) STAC API URL, got {v!r}")
        return v.rstrip("/")


def _expand_preset(value: Any) -> Any:
    """A ``preset:`` source (``{preset: earth-search, collection: ..., ...}``) as the
    ``stac_api`` source it stands for; other values pass through unchanged."""
    if isinstance(value, dict) and "preset" in value:
        from geolatent.data.stac_presets import preset_source

        return preset_source(value)
    return value


SourceConfig = Annotated[
    FileSourceConfig | StacSourceConfig | StacApiSourceConfig,
    Field(discriminator="type"),
    BeforeValidator(_expand_preset),
]


class AreaConfig(StrictModel):
    """The area to tile: a lon/lat ``bbox`` or a ``geojson`` file (one of them)."""

    bbox: tuple[float, float, float, float] | None = None
    geojson: str | None = None
    crs: str | None = None

    @model_validator(mode="after")
    def _one(self) -> AreaConfig:
        if (self.bbox is None) == (self.geojson is None):
            raise ValueError("area: give exactly one of 'bbox' or 'geojson'")
        if self.bbox is not None:
            x0, y0, x1, y1 = self.bbox
            if not (-180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90):
                raise ValueError(f"area.bbox {list(self.bbox)} is not a lon/lat box "
                                 "[lon_min, lat_min, lon_max, lat_max] in degrees (metres? "
                                 "give the area as a geojson file with its CRS)")
        return self


class DataConfig(StrictModel):
    """``geolatent data build`` configuration.

    Attributes:
        output_dir: where samples, window records, manifest and summary go.
        area: what to tile; year / start+end: the time range (a year gives 12 monthly steps).
        resolution_m, tile_size, sample_size: the grid; tiles are split into
            ``(tile_size / sample_size)**2`` sample files.
        sources: one entry per source; several sources may feed one modality.
        required_modalities: a sample is written only if each of these has valid data (by
            default a sample needs valid data in at least one modality).
        gdal_cache_mb: GDAL block cache per worker (bounds memory).
    """

    output_dir: str
    area: AreaConfig
    year: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    resolution_m: float = Field(BASE_RESOLUTION_M, gt=0)
    tile_size: int = Field(256, ge=1)
    sample_size: int = Field(128, ge=1)
    sources: list[SourceConfig]
    required_modalities: list[str] = Field(default_factory=list)
    gdal_cache_mb: int = 64

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if (self.year is None) == (self.start is None or self.end is None):
            raise ValueError("give either 'year' or both 'start' and 'end'")
        if self.tile_size % self.sample_size:
            raise ValueError("tile_size must be a multiple of sample_size")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        for m in self.required_modalities:
            if m not in MODALITIES:
                raise ValueError(f"unknown required modality {m!r}")
        return self

    @property
    def time_range(self) -> tuple[datetime, datetime]:
        if self.year is not None:
            return datetime(self.year, 1, 1), datetime(self.year + 1, 1, 1)
        assert self.start is not None and self.end is not None
        return self.start, self.end

    def fingerprint(self) -> str:
        """Hash of everything that changes sample content (not output_dir / workers)."""
        payload = self.model_dump(mode="json", exclude={"output_dir", "gdal_cache_mb"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _is_url(s: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", s) is not None or s.startswith("/vsi")


def _resolve(base: Path, p: str) -> str:
    if _is_url(p) or Path(p).is_absolute():
        return p
    return str((base / p).resolve()) if "*" not in p and "?" not in p else str(base / p)


def resolve_source(source: SourceConfig, base_dir: Path) -> SourceConfig:
    """A copy of ``source`` with its relative paths made absolute against ``base_dir``."""
    src = source.model_copy(deep=True)
    if isinstance(src, FileSourceConfig):
        src.paths = [_resolve(base_dir, p) for p in src.paths]
        if src.table:
            src.table = _resolve(base_dir, src.table)
    elif isinstance(src, StacSourceConfig):
        src.catalog = _resolve(base_dir, src.catalog)
    elif src.cache_dir:
        src.cache_dir = _resolve(base_dir, src.cache_dir)
    return src


def resolve_paths(config: DataConfig, base_dir: Path) -> DataConfig:
    """A copy of ``config`` with relative paths made absolute against ``base_dir``."""
    out = config.model_copy(deep=True)
    out.output_dir = _resolve(base_dir, out.output_dir)
    if out.area.geojson:
        out.area.geojson = _resolve(base_dir, out.area.geojson)
    out.sources = [resolve_source(src, base_dir) for src in out.sources]
    return out


def load_data_config(path: str | Path, overrides: Sequence[str] | None = None,
                     flag: str = "key=value") -> DataConfig:  # fmt: skip
    """Load and validate a YAML data config; relative paths are relative to the file's folder.

    ``overrides``: ``a.b=value`` strings applied over the file (``["tile_size=512"]``); ``flag``
    names where they came from in errors (``--set``).
    """
    path = Path(path)
    cfg = load_config(path, DataConfig, overrides, what="data", flag=flag)
    return resolve_paths(cfg, path.resolve().parent)


def source_band_names(modality: str, names: list[str], mask_band: str | None) -> list[str]:
    """Canonical registry names of ``names`` (the mask band passes through unchanged).

    Raises a ValueError naming the band when it is neither a band of ``modality`` nor the mask.
    """
    mod = MODALITIES[modality]
    out = []
    for n in names:
        if mask_band is not None and canonical_band_name(n) == canonical_band_name(mask_band):
            out.append(mask_band)
            continue
        try:
            out.append(mod.bands[mod.band_index(n)])
        except KeyError as e:
            raise ValueError(e.args[0]) from None
    return out
