"""Reading model inputs from GeoTIFFs: band naming, grid checks, time axis, windowed reads.

An input is one file of one modality holding one timestep (a multi-band file) or several (a
stack: bands ordered time-major, i.e. all bands of the first date, then all bands of the
second, ...). Band names come from the file's band descriptions or from an explicit list, and
are matched to the registry by name (``B2`` == ``B02``, ``VV`` == ``vv``); bands the model does
not use (e.g. Sentinel-2 ``B10``) are dropped by name, never by position. Values are passed
through unchanged (no rescaling: the model's embed checks units); the files' nodata values and
NaN become the missing value -99999.

All files of all modalities must share one pixel grid (CRS, transform and size); reproject
first otherwise. Reads are windowed, so memory depends on the window, not on the raster.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioError
from rasterio.windows import Window

from geolatent.modalities import BASE_RESOLUTION_M, MAX_TIMESTEPS, MISSING_VALUE, get_modality


class RasterInputError(ValueError):
    """Input rasters that cannot be used as given; the message names the files and the fix."""


@dataclass(frozen=True)
class RasterInput:
    """One input file of one modality.

    Attributes:
        path: the GeoTIFF (any GDAL-readable raster).
        dates: acquisition date of each timestep in the file (one for a single-date file;
            ``T`` for a stack whose ``T * C`` bands are ordered time-major).
        bands: names of the ``C`` bands of one timestep in file order (e.g. ``["B02", "B03"]``);
            None reads them from the file's band descriptions.
    """

    path: Path
    dates: tuple[dt.date, ...]
    bands: tuple[str, ...] | None = None

    def __init__(
        self,
        path: str | os.PathLike,
        dates: dt.date | str | Sequence[dt.date | str],
        bands: Sequence[str] | None = None,
    ) -> None:
        if isinstance(dates, (dt.date, str)):
            dates = [dates]
        object.__setattr__(self, "path", Path(path))
        object.__setattr__(self, "dates", tuple(parse_date(d) for d in dates))
        object.__setattr__(self, "bands", None if bands is None else tuple(bands))
        if not self.dates:
            raise RasterInputError(f"{self.path}: at least one date is required")


def parse_date(value: dt.date | str) -> dt.date:
    """A date from a ``datetime.date`` or an ISO ``YYYY-MM-DD`` / ``YYYYMMDD`` string."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    s = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(s, fmt).date()
        except ValueError:
            pass
    raise RasterInputError(f"cannot parse date {value!r}; use YYYY-MM-DD")


_DATE_IN_NAME = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")


def date_from_filename(path: str | os.PathLike) -> dt.date | None:
    """The first valid ``YYYY-MM-DD`` or ``YYYYMMDD`` date in a file name, or None."""
    for m in _DATE_IN_NAME.finditer(Path(path).name):
        try:
            return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            continue
    return None


@dataclass
class _OpenInput:
    """An opened input file with its band-to-channel mapping and global timesteps."""

    modality: str
    source: RasterInput
    dataset: rasterio.io.DatasetReader
    band_names: list[str]  # names of one timestep's bands, file order
    read_bands: list[int]  # 0-based band offsets inside one timestep that the model uses
    channels: list[int]  # registry channel of each read band
    dropped: list[str]  # band names not used by the model
    timesteps: list[int] = field(default_factory=list)  # global timestep of each file timestep
    nodata: float | None = None
    use_mask: bool = False


@dataclass(frozen=True)
class ModalitySummary:
    """What was found for one modality (for logs and the CLI)."""

    files: int
    timesteps: int
    bands_used: tuple[str, ...]
    bands_dropped: tuple[str, ...]
    bandsets_absent: tuple[tuple[str, ...], ...]


class RasterStack:
    """Opened and validated inputs on one pixel grid, read window by window.

    Args:
        inputs: per modality the files (see :class:`RasterInput`).
        align: how dates become timesteps: ``"date"`` (every distinct date is its own timestep;
            modalities share a timestep only on the same day) or ``"month"`` (dates in the same
            calendar month share a timestep, e.g. Sentinel-1 and Sentinel-2 of one month; two
            files of one modality in one month are an error).
        check_resolution: require 10 m pixels in a metre-based CRS (the model's grid);
            False accepts any grid (embeddings of other resolutions are off-distribution).

    Raises:
        RasterInputError: unreadable or truncated files, CRS / transform / size mismatches,
            unknown or duplicate band names, incomplete bandsets, too many timesteps.
    """

    def __init__(
        self,
        inputs: Mapping[str, Sequence[RasterInput]],
        align: str = "date",
        check_resolution: bool = True,
    ) -> None:
        if align not in ("date", "month"):
            raise RasterInputError(f"align must be 'date' or 'month', got {align!r}")
        if not inputs or not any(inputs.values()):
            raise RasterInputError("no input files given")
        self.align = align
        self._inputs: list[_OpenInput] = []
        try:
            for modality, files in inputs.items():
                mod = get_modality(modality)
                if mod.decode_only:
                    raise RasterInputError(
                        f"{modality} is a decode-only map product and cannot be an encoder input"
                    )
                for ri in files:
                    self._inputs.append(self._open(modality, ri))
            self._check_grid()
            if check_resolution:
                self._check_resolution()
            self._build_time_axis()
        except Exception:
            self.close()
            raise

    # ------------------------------------------------------------------ opening and checks

    @staticmethod
    def _open(modality: str, ri: RasterInput) -> _OpenInput:
        mod = get_modality(modality)
        if not ri.path.exists():
            raise RasterInputError(f"{ri.path}: no such file")
        try:
            ds = rasterio.open(ri.path)
        except RasterioError as e:
            raise RasterInputError(
                f"{ri.path}: cannot open as a raster ({e}); the file may be truncated or corrupt"
            ) from None
        try:
            n_t = len(ri.dates)
            if ds.count % n_t:
                raise RasterInputError(
                    f"{ri.path}: {ds.count} bands cannot hold {n_t} timesteps of equal band count "
                    f"({len(ri.dates)} dates given); a stack needs T x C bands, time-major"
                )
            per_t = ds.count // n_t
            names = _band_names(ri, ds, per_t, mod.name)
            read_bands, channels, dropped = [], [], []
            for i, name in enumerate(names):
                try:
                    ch = mod.band_index(name)
                except KeyError:
                    dropped.append(name)  # e.g. S2 B10 (cirrus): not a model band
                    continue
                if ch in channels:
                    raise RasterInputError(
                        f"{ri.path}: band {name!r} maps to {mod.bands[ch]!r}, which appears twice"
                    )
                read_bands.append(i)
                channels.append(ch)
            if not channels:
                raise RasterInputError(
                    f"{ri.path}: none of the bands {names} is a {modality} band "
                    f"(expected names from {list(mod.bands)}); name them with the bands option"
                )
            have = set(channels)
            for bs, sl in zip(mod.bandsets, mod.bandset_slices(), strict=True):
                lacking = [
                    b for b, c in zip(bs, range(sl.start, sl.stop), strict=True) if c not in have
                ]
                if lacking and len(lacking) < len(bs):
                    raise RasterInputError(
                        f"{ri.path}: bandset {list(bs)} of {modality} is incomplete "
                        f"(no {lacking}); a bandset is tokenized as a whole: give all of its "
                        "bands or none"
                    )
            flags = ds.mask_flag_enums[0] if ds.count else []
            use_mask = ds.nodata is None and (
                MaskFlags.per_dataset in flags or MaskFlags.alpha in flags
            )
            _check_readable(ri.path, ds)
            return _OpenInput(
                modality=modality, source=ri, dataset=ds, band_names=names,
                read_bands=read_bands, channels=channels, dropped=dropped,
                nodata=ds.nodata, use_mask=use_mask,
            )  # fmt: skip
        except Exception:
            ds.close()
            raise

    def _check_grid(self) -> None:
        ref = self._inputs[0]
        r = ref.dataset
        for oi in self._inputs[1:]:
            d = oi.dataset
            if d.crs != r.crs:
                raise RasterInputError(
                    f"CRS mismatch: {ref.source.path} is {_crs_name(r.crs)} but "
                    f"{oi.source.path} is {_crs_name(d.crs)}; reproject all inputs to one grid"
                )
            if (d.height, d.width) != (r.height, r.width):
                raise RasterInputError(
                    f"size mismatch: {ref.source.path} is {r.height}x{r.width} px but "
                    f"{oi.source.path} is {d.height}x{d.width} px; all inputs must share one grid"
                )
            if not d.transform.almost_equals(r.transform, precision=1e-6 * abs(r.transform.a)):
                raise RasterInputError(
                    f"transform mismatch: {ref.source.path} has {tuple(r.transform)[:6]} but "
                    f"{oi.source.path} has {tuple(d.transform)[:6]}; all inputs must share one grid"
                )
        if r.crs is None:
            raise RasterInputError(f"{ref.source.path}: no CRS; inputs must be georeferenced")

    def _check_resolution(self) -> None:
        ref = self._inputs[0]
        crs, t = ref.dataset.crs, ref.dataset.transform
        units = crs.linear_units.lower() if crs.is_projected else "degrees"
        res = (abs(t.a), abs(t.e))
        if units not in ("metre", "meter", "metres", "meters") or any(
            abs(r - BASE_RESOLUTION_M) > 0.01 * BASE_RESOLUTION_M for r in res
        ):
            raise RasterInputError(
                f"{ref.source.path}: pixels are {res[0]:g} x {res[1]:g} {units}, but the model "
                f"works on a {BASE_RESOLUTION_M:g} m grid; resample / reproject to 10 m pixels "
                "in a projected (e.g. UTM) CRS first"
            )

    def _build_time_axis(self) -> None:
        def key(d: dt.date) -> tuple[int, ...]:
            return (d.year, d.month) if self.align == "month" else (d.year, d.month, d.day)

        keys = sorted({key(d) for oi in self._inputs for d in oi.source.dates})
        if len(keys) > MAX_TIMESTEPS:
            hint = "" if self.align == "month" else " or align dates by month"
            raise RasterInputError(
                f"the inputs span {len(keys)} timesteps, more than the model's {MAX_TIMESTEPS}; "
                f"give at most {MAX_TIMESTEPS} dates{hint}"
            )
        index = {k: i for i, k in enumerate(keys)}
        first_date: dict[int, dt.date] = {}
        seen: dict[tuple[str, int], Path] = {}
        for oi in self._inputs:
            oi.timesteps = []
            for d in oi.source.dates:
                t = index[key(d)]
                other = seen.get((oi.modality, t))
                if other is not None:
                    unit = "month" if self.align == "month" else "date"
                    raise RasterInputError(
                        f"{oi.modality}: {other} and {oi.source.path} both give the {unit} "
                        f"{d.isoformat() if unit == 'date' else d.strftime('%Y-%m')}; give one "
                        "file per timestep (composite them first)"
                    )
                seen[(oi.modality, t)] = oi.source.path
                oi.timesteps.append(t)
                first_date[t] = min(first_date.get(t, d), d)
        self.dates: list[dt.date] = [first_date[t] for t in range(len(keys))]
        """Date of each timestep (the earliest date mapped to it)."""

    # ------------------------------------------------------------------ properties

    @property
    def modalities(self) -> list[str]:
        return list(dict.fromkeys(oi.modality for oi in self._inputs))

    @property
    def height(self) -> int:
        return int(self._inputs[0].dataset.height)

    @property
    def width(self) -> int:
        return int(self._inputs[0].dataset.width)

    @property
    def crs(self) -> CRS:
        return self._inputs[0].dataset.crs

    @property
    def transform(self) -> Affine:
        return self._inputs[0].dataset.transform

    @property
    def num_timesteps(self) -> int:
        return len(self.dates)

    @property
    def timestamps(self) -> np.ndarray:
        """int64 ``[T, 3]`` (day, month 0-11, year) of the timesteps."""
        return np.array([[d.day, d.month - 1, d.year] for d in self.dates], dtype=np.int64)

    @property
    def paths(self) -> list[Path]:
        return [oi.source.path for oi in self._inputs]

    def summary(self) -> dict[str, ModalitySummary]:
        """Per modality: files, timesteps present, bands used / dropped, bandsets absent."""
        out = {}
        for m in self.modalities:
            mod = get_modality(m)
            ois = [oi for oi in self._inputs if oi.modality == m]
            used = {c for oi in ois for c in oi.channels}
            absent = tuple(
                bs
                for bs, sl in zip(mod.bandsets, mod.bandset_slices(), strict=True)
                if not set(range(sl.start, sl.stop)) & used
            )
            out[m] = ModalitySummary(
                files=len(ois),
                timesteps=len({t for oi in ois for t in oi.timesteps}),
                bands_used=tuple(mod.bands[c] for c in sorted(used)),
                bands_dropped=tuple(dict.fromkeys(b for oi in ois for b in oi.dropped)),
                bandsets_absent=absent,
            )
        return out

    # ------------------------------------------------------------------ reading

    def read(
        self,
        row_off: int,
        col_off: int,
        height: int,
        width: int,
        valid_height: int | None = None,
        valid_width: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Read a window of every modality, boundless.

        Args:
            row_off, col_off: upper-left pixel of the window (may be negative).
            height, width: window size in pixels.
            valid_height, valid_width: pixels at or beyond these rows / columns are treated as
                outside the raster (default: the raster size).

        Returns:
            per modality float32 ``[height, width, T, C]`` in registry channel order and raw
            units; -99999 outside the raster, at nodata / NaN / masked pixels, at timesteps
            a modality does not have, and in bandsets that no file provides.
        """
        vh = self.height if valid_height is None else min(valid_height, self.height)
        vw = self.width if valid_width is None else min(valid_width, self.width)
        out = {
            m: np.full(
                (height, width, self.num_timesteps, get_modality(m).num_bands),
                MISSING_VALUE,
                dtype=np.float32,
            )
            for m in self.modalities
        }
        r0, r1 = max(row_off, 0), min(row_off + height, vh)
        c0, c1 = max(col_off, 0), min(col_off + width, vw)
        if r0 >= r1 or c0 >= c1:
            return out
        win = Window(c0, r0, c1 - c0, r1 - r0)
        dst_rows = slice(r0 - row_off, r1 - row_off)
        dst_cols = slice(c0 - col_off, c1 - col_off)
        for oi in self._inputs:
            per_t = len(oi.band_names)
            for k, t in enumerate(oi.timesteps):
                idx = [k * per_t + b + 1 for b in oi.read_bands]  # rasterio bands are 1-based
                try:
                    data = oi.dataset.read(idx, window=win, out_dtype=np.float32)
                    mask = oi.dataset.dataset_mask(window=win) == 0 if oi.use_mask else None
                except RasterioError as e:
                    raise RasterInputError(
                        f"{oi.source.path}: cannot read rows {r0}:{r1}, cols {c0}:{c1} ({e}); "
                        "the file may be truncated or corrupt"
                    ) from None
                bad = np.isnan(data)
                if oi.nodata is not None and not np.isnan(oi.nodata):
                    bad |= data == np.float32(oi.nodata)
                if mask is not None:
                    bad |= mask[None]
                data[bad] = MISSING_VALUE
                out[oi.modality][dst_rows, dst_cols, t][..., oi.channels] = np.moveaxis(data, 0, -1)
        return out

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        for oi in getattr(self, "_inputs", []):
            if not oi.dataset.closed:
                oi.dataset.close()

    def __enter__(self) -> RasterStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _band_names(ri: RasterInput, ds, per_t: int, modality: str) -> list[str]:
    """Names of one timestep's bands: the explicit list, else the band descriptions."""
    if ri.bands is not None:
        if len(ri.bands) != per_t:
            raise RasterInputError(
                f"{ri.path}: {len(ri.bands)} band names given but the file has {per_t} bands per "
                f"timestep ({ds.count} bands, {len(ri.dates)} dates)"
            )
        return list(ri.bands)
    desc = [d.strip() if d else "" for d in ds.descriptions]
    if not all(desc):
        raise RasterInputError(
            f"{ri.path}: bands have no descriptions, so their names are unknown; give the "
            f"{per_t} band names of one timestep in file order (the bands option, e.g. "
            f"{','.join(get_modality(modality).bands[:4])},...)"
        )
    names = desc[:per_t]
    for k in range(1, len(ri.dates)):
        if desc[k * per_t : (k + 1) * per_t] != names:
            raise RasterInputError(
                f"{ri.path}: a stack must repeat the same band names for each timestep; "
                f"timestep 0 has {names} but timestep {k} has {desc[k * per_t : (k + 1) * per_t]}"
            )
    return names


def _check_readable(path: Path, ds) -> None:
    """Fail early on truncated files: decode the last block of the last band."""
    h, w = ds.block_shapes[-1]
    win = Window(max(0, ds.width - w), max(0, ds.height - h), min(w, ds.width), min(h, ds.height))
    try:
        ds.read(ds.count, window=win)
    except RasterioError as e:
        raise RasterInputError(
            f"{path}: cannot read its last block ({e}); the file is truncated or corrupt"
        ) from None


def _crs_name(crs: CRS | None) -> str:
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()
