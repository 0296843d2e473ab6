"""Materialize a window: warp the needed part of each scene onto the window grid, mosaic scenes
of one day, composite each month (median of valid observations), and place bands in registry
channel order. One function, :func:`materialize_window`, serves pretraining builds, embedding
and prediction.

What the arrays contain (the contract other modules rely on):

- ``arrays[modality]``: float32 ``[H, W, T, C]`` (static maps ``[H, W, 1, C]``), ``C`` in
  registry band order (``MODALITIES[modality].bands``), in the modality's units (Sentinel-2 L2A
  DN, Sentinel-1 dB, Landsat L1 DN, class ids, metres). Every pixel without a valid observation
  (outside all scenes, nodata / fill, cloud-masked, or a month with no scene) is -99999; never
  NaN, never zero-filled.
- Bands a source does not provide are -99999 everywhere, **including the other bands of a
  half-present bandset**: Sentinel-1 VV without VH gives real VV values in channel 0 and -99999
  in channel 1. Under the model's masking rule (a bandset token containing the missing value is
  MISSING), that bandset is missing for the model, while the VV values stay available to anyone
  reading the arrays. Use :meth:`MaterializedWindow.bandset_present` to see which bandsets the
  model can use.
- ``timestamps``: int64 ``[T, 3]`` = (day 1, month 0-11, year) of each monthly composite,
  shared by all multitemporal modalities.
- ``missing_timesteps[modality]``: bool ``[T]`` (static ``[1]``), True where no channel of the
  modality has any valid pixel at that timestep.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import reproject, transform_bounds

from geolatent.data.composite import (
    cloud_invalid,
    linear_to_db,
    mosaic_first_valid,
    nanmedian_stack,
)
from geolatent.data.config import StacApiSourceConfig
from geolatent.data.remote import (
    AssetReadError,
    WindowCache,
    fetch_window,
    gdal_http_options,
    window_key,
)
from geolatent.data.sources import Scene, Source, group_by_day
from geolatent.data.stac_api import cache_dir_of
from geolatent.data.window import Window
from geolatent.modalities import MISSING_VALUE, MODALITIES

Timesteps = Literal["all", "observed"]


class SceneReadError(RuntimeError):
    """A scene's pixels could not be read; the message starts with the file (or scene) name."""


class WindowError(RuntimeError):
    """A window could not be materialized; the message names the source and the file."""


@dataclass
class MaterializedWindow:
    """Model-ready arrays of one window (see the module docstring for the exact contract).

    Attributes:
        window: the window.
        arrays: modality -> float32 ``[H, W, T, C]`` (static ``[H, W, 1, C]``), -99999 missing.
        timestamps: int64 ``[T, 3]`` (day, month 0-11, year).
        missing_timesteps: modality -> bool ``[T]`` (static ``[1]``).
        scenes_used: source name -> ids of the scenes that were read.
        warnings: scenes skipped (``on_bad_scene: skip``) with the reason.
    """

    window: Window
    arrays: dict[str, np.ndarray]
    timestamps: np.ndarray
    missing_timesteps: dict[str, np.ndarray]
    scenes_used: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def latlon(self) -> np.ndarray:
        """float64 ``[2]``: (lat, lon) of the window centre in degrees."""
        return np.asarray(self.window.latlon, dtype=np.float64)

    def valid_fraction(self, modality: str) -> float:
        """Fraction of valid (not -99999) entries of a modality's array."""
        arr = self.arrays[modality]
        return float((arr != MISSING_VALUE).mean()) if arr.size else 0.0

    def bandset_present(self, modality: str) -> np.ndarray:
        """bool ``[T, S]``: True where every channel of bandset ``S`` has a valid pixel at ``T``.

        A False entry is a bandset the model sees as missing even if some of its channels hold
        values (e.g. Sentinel-1 VV without VH).
        """
        arr = self.arrays[modality]
        any_valid = (arr != MISSING_VALUE).any(axis=(0, 1))  # [T, C]
        slices = MODALITIES[modality].bandset_slices()
        return np.stack([any_valid[:, s].all(axis=1) for s in slices], axis=1)

    def crop(self, row_off: int, col_off: int, height: int, width: int) -> MaterializedWindow:
        """The arrays of a sub-window; missing timesteps are recomputed for the crop."""
        arrays = {
            k: np.ascontiguousarray(v[row_off : row_off + height, col_off : col_off + width])
            for k, v in self.arrays.items()
        }
        missing = {k: (v == MISSING_VALUE).all(axis=(0, 1, 3)) for k, v in arrays.items()}
        return MaterializedWindow(
            self.window.crop(row_off, col_off, height, width),
            arrays,
            self.timestamps.copy(),
            missing,
            dict(self.scenes_used),
            list(self.warnings),
        )


# -- reading one scene --------------------------------------------------------------------------
def _error_detail(e: BaseException) -> str:
    """GDAL's own message is often in the chained cause ("IReadBlock failed ...")."""
    cause = e.__cause__ or e.__context__
    return f"{e} ({cause})" if cause is not None and str(cause) not in str(e) else str(e)


def _resampling_for(source: Source, src: rasterio.DatasetReader, window: Window) -> Resampling:
    if source.config.resampling:
        return Resampling[source.config.resampling]
    if MODALITIES[source.modality].categorical:
        return Resampling.nearest
    if src.crs.is_geographic:
        res_m = abs(src.res[1]) * 111_320.0
    else:
        res_m = abs(src.res[0]) * (src.crs.linear_units_factor[1] or 1.0)
    # Much finer than the grid: average the footprint; otherwise interpolate.
    return Resampling.average if res_m < window.resolution / 1.5 else Resampling.bilinear


def _overlaps(src: rasterio.DatasetReader, window: Window) -> bool:
    wx0, wy0, wx1, wy1 = transform_bounds(window.crs, src.crs, *window.bounds, densify_pts=21)
    b = src.bounds
    return (
        min(b.left, b.right) < wx1
        and max(b.left, b.right) > wx0
        and (min(b.bottom, b.top) < wy1 and max(b.bottom, b.top) > wy0)
    )


def _warp(
    src: rasterio.DatasetReader,
    indexes: list[int],
    window: Window,
    nodata: float | None,
    resampling: Resampling,
) -> np.ndarray:
    """float32 ``[len(indexes), H, W]`` on the window grid; NaN where invalid.

    GDAL's warper reads only the source blocks under the window (bounded memory for any scene
    size) and ignores ``nodata`` pixels when interpolating.
    """
    dst = np.full((len(indexes), *window.shape), np.nan, dtype=np.float32)
    reproject(
        source=rasterio.band(src, indexes),
        destination=dst,
        src_nodata=nodata,
        dst_transform=window.transform,
        dst_crs=window.crs,
        dst_nodata=np.nan,
        resampling=resampling,
        num_threads=1,
        warp_mem_limit=64,
    )
    return dst


def _read_file(
    uri: str, entries: list[tuple[str, int]], source: Source, window: Window
) -> dict[str, np.ndarray]:
    """Warp the bands ``entries`` (band, 1-based index) of one file onto the window grid.

    Returns band -> float32 ``[H, W]`` (NaN invalid); empty when the file misses the window.
    The mask band is read with nearest resampling and without nodata.
    """
    cfg = source.config
    mask_band = source.mask_band
    out: dict[str, np.ndarray] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        src = rasterio.open(uri)
    with src:
        if src.crs is None or src.transform.is_identity:
            raise SceneReadError(f"{uri}: no CRS or no geotransform; cannot place it")
        for band, idx in entries:
            if not 1 <= idx <= src.count:
                raise SceneReadError(
                    f"{uri}: band {band!r} is absent (band {idx} requested, the file "
                    f"has {src.count})"
                )
        if not _overlaps(src, window):
            return out
        nodata = cfg.nodata if cfg.nodata is not None else src.nodata
        data = [(b, i) for b, i in entries if b != mask_band]
        if data:
            warped = _warp(
                src, [i for _, i in data], window, nodata, _resampling_for(source, src, window)
            )
            for k, (band, _) in enumerate(data):
                out[band] = warped[k]
        for band, idx in entries:
            if band == mask_band:
                out[band] = _warp(src, [idx], window, None, Resampling.nearest)[0]
    return out


def _read_remote(
    uri: str, entries: list[tuple[str, int]], source: Source, window: Window
) -> dict[str, np.ndarray]:
    """:func:`_read_file` for a STAC API asset: cached, signed, retried (see ``remote``)."""
    cfg = source.config
    assert isinstance(cfg, StacApiSourceConfig)
    cache = WindowCache(cache_dir_of(cfg), cfg.cache_max_mb)
    key = window_key(
        uri, [i for _, i in entries], window,
        {"bands": [b for b, _ in entries], "nodata": cfg.nodata, "resampling": cfg.resampling,
         "modality": cfg.modality, "mask": source.mask_band},
    )
    with rasterio.Env(**gdal_http_options(cfg)):
        try:
            return fetch_window(
                cfg, cache, key, uri, lambda href: _read_file(href, entries, source, window)
            )
        except AssetReadError as e:
            raise SceneReadError(str(e)) from e


def read_scene(scene: Scene, source: Source, window: Window) -> np.ndarray:
    """Read one scene onto the window grid.

    Returns:
        float32 ``[C, H, W]`` with ``C`` the modality's registry channels; NaN marks invalid
        pixels and the bands the source does not provide. Values are in the modality's units
        (``scale``/``offset`` applied, the scene's harmonization offset removed, Sentinel-1
        linear converted to dB, clouds removed).

    Raises:
        SceneReadError: naming the file, when it cannot be opened or read, lacks a geotransform,
            or lacks a configured band.
    """
    cfg = source.config
    mod = MODALITIES[source.modality]
    if scene.absent_bands:
        files = ", ".join(scene.files)
        reason = "; ".join(scene.absent_bands.values())
        raise SceneReadError(f"{files}: {reason}")
    out = np.full((mod.num_bands, *window.shape), np.nan, dtype=np.float32)
    mask_band = source.mask_band
    mask_values = None
    by_file: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for band, asset in scene.assets.items():
        by_file[asset.uri].append((band, asset.band_index))
    reader = _read_remote if isinstance(cfg, StacApiSourceConfig) else _read_file

    for uri, entries in by_file.items():
        try:
            bands = reader(uri, entries, source, window)
        except SceneReadError:
            raise
        except (RasterioError, OSError, ValueError) as e:
            raise SceneReadError(f"{uri}: {_error_detail(e)}") from e
        for band, values in bands.items():
            if band == mask_band:
                mask_values = values
            else:
                out[mod.band_index(band)] = values

    if scene.offset:
        # Sentinel-2 baseline >= 04.00: reflectance DN carry +1000; values below the offset
        # are clamped to 0 as rslearn's harmonize does.
        out = np.maximum(out - np.float32(scene.offset), np.float32(0))
    if cfg.scale != 1.0 or cfg.offset != 0.0:
        out = out * np.float32(cfg.scale) + np.float32(cfg.offset)
    if cfg.units == "linear":
        out = linear_to_db(out)
    if cfg.cloud_mask is not None:
        invalid = cloud_invalid(
            mask_values if mask_values is not None else np.full(window.shape, np.nan, np.float32),
            cfg.cloud_mask,
        )
        out[:, invalid] = np.nan
    return out


# -- materializing a window ---------------------------------------------------------------------
class _Reader:
    """Reads scenes for one window, applying each source's ``on_bad_scene`` policy."""

    def __init__(self, window: Window) -> None:
        self.window = window
        self.used: dict[str, list[str]] = defaultdict(list)
        self.warnings: list[str] = []

    def layers(self, source: Source, scenes: list[Scene]) -> Iterator[np.ndarray]:
        for scene in scenes:
            try:
                layer = read_scene(scene, source, self.window)
            except SceneReadError as e:
                if source.config.on_bad_scene == "fail":
                    raise WindowError(f"source {source.name!r}: {e}") from e
                self.warnings.append(f"source {source.name!r}: skipped scene: {e}")
                continue
            self.used[source.name].append(scene.id)
            yield layer


def _channels(sources: list[Source]) -> list[int]:
    """Registry channel indices the sources provide."""
    mod = MODALITIES[sources[0].modality]
    return sorted({mod.band_index(b) for s in sources for b in s.bands})


def _to_output(layer: np.ndarray | None, out: np.ndarray, t: int) -> bool:
    """Write a ``[C, H, W]`` NaN-marked layer into ``out[:, :, t, :]``; True if any valid."""
    if layer is None:
        return False
    valid = ~np.isnan(layer)
    out[:, :, t, :] = np.where(valid, layer, np.float32(MISSING_VALUE)).transpose(1, 2, 0)
    return bool(valid.any())


def _temporal(
    reader: _Reader,
    sources: list[Source],
    candidates: dict[str, list[Scene]],
    months: list[tuple[int, int]],
) -> tuple[np.ndarray, np.ndarray]:
    mod = MODALITIES[sources[0].modality]
    h, w = reader.window.shape
    arr = np.full((h, w, len(months), mod.num_bands), MISSING_VALUE, dtype=np.float32)
    missing = np.ones(len(months), dtype=bool)
    for t, (year, month) in enumerate(months):
        observations = []
        for src in sources:
            in_month = [
                s
                for s in candidates[src.name]
                if (s.datetime.year, s.datetime.month) == (year, month)
            ]
            # Scenes of one day are tiles of one pass: mosaic them into one observation.
            for day_scenes in group_by_day(in_month).values():
                layer = mosaic_first_valid(reader.layers(src, day_scenes), _channels([src]))
                if layer is not None and not np.isnan(layer).all():
                    observations.append(layer)
        if observations:
            missing[t] = not _to_output(nanmedian_stack(np.stack(observations)), arr, t)
    return arr, missing


def _static(
    reader: _Reader, sources: list[Source], candidates: dict[str, list[Scene]]
) -> tuple[np.ndarray, np.ndarray]:
    mod = MODALITIES[sources[0].modality]
    h, w = reader.window.shape
    arr = np.full((h, w, 1, mod.num_bands), MISSING_VALUE, dtype=np.float32)

    def layers() -> Iterator[np.ndarray]:
        for src in sources:
            yield from reader.layers(src, candidates[src.name])

    present = _to_output(mosaic_first_valid(layers(), _channels(sources)), arr, 0)
    return arr, np.array([not present])


def materialize_window(
    window: Window,
    sources: list[Source],
    *,
    timesteps: Timesteps = "all",
    gdal_cache_mb: int = 64,
) -> MaterializedWindow:
    """Materialize every modality the sources feed, on the window's grid and months.

    Args:
        window: the target grid and time range.
        sources: indexed sources (:func:`~geolatent.data.sources.open_sources`); several may
            feed one modality (their observations are composited together).
        timesteps: ``"all"``: one timestep per calendar month of the time range (a year gives
            12); ``"observed"``: only the months in which some overlapping scene was acquired.
        gdal_cache_mb: GDAL block cache while reading (bounds memory).

    Returns:
        A :class:`MaterializedWindow` (arrays ``[H, W, T, C]``, timestamps ``[T, 3]``, missing
        masks; see the module docstring). Modalities without a source are absent from
        ``arrays``; a modality whose sources have no data in the window is all -99999.

    Raises:
        WindowError: a scene could not be read (naming the source and file) and its source has
            ``on_bad_scene: fail``.
    """
    bbox = window.bounds_wgs84
    candidates = {s.name: s.scenes_for(window, bbox) for s in sources}
    if timesteps == "all":
        months = window.months
    elif timesteps == "observed":
        months = sorted(
            {
                (sc.datetime.year, sc.datetime.month)
                for s in sources
                if s.multitemporal
                for sc in candidates[s.name]
            }
        )
    else:
        raise ValueError(f"timesteps must be 'all' or 'observed', got {timesteps!r}")
    timestamps = np.array([(1, m - 1, y) for y, m in months], dtype=np.int64).reshape(-1, 3)

    by_modality: dict[str, list[Source]] = defaultdict(list)
    for s in sources:
        by_modality[s.modality].append(s)
    reader = _Reader(window)
    arrays, missing = {}, {}
    with rasterio.Env(GDAL_CACHEMAX=int(gdal_cache_mb)):
        for name in MODALITIES:  # canonical order
            if name not in by_modality:
                continue
            srcs = by_modality[name]
            if MODALITIES[name].multitemporal:
                arrays[name], missing[name] = _temporal(reader, srcs, candidates, months)
            else:
                arrays[name], missing[name] = _static(reader, srcs, candidates)
    return MaterializedWindow(
        window, arrays, timestamps, missing, dict(reader.used), reader.warnings
    )
