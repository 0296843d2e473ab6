"""Input files of ``embed``: band naming, grid choice, time axis, as data-layer sources.

An input is one file of one modality holding one timestep (a multi-band file) or several (a
stack: bands ordered time-major, i.e. all bands of the first date, then all bands of the
second, ...). Band names come from the file's band descriptions or from an explicit list, and
are matched to the registry by name (``B2`` == ``B02``, ``VV`` == ``vv``); bands the model does
not use (e.g. Sentinel-2 ``B10``) are dropped by name, never by position. Values are passed
through unchanged (no rescaling: units are checked, not guessed); the files' nodata values and
NaN become the missing value -99999.

:class:`FileInputs` validates the files and turns each into a data-layer source (one scene per
timestep), on one output grid (:mod:`geolatent.data.io.grid`): their own grid when they all
share one 10 m grid, else the 10 m UTM grid covering them, or the grid asked for (``--crs`` /
``--resolution`` / ``--align-to``). Pixels are read only through the data layer
(:func:`geolatent.platform.predict.tile.read_dated`, i.e. ``read_scene``: any CRS, 20 / 30 /
60 m bands resampled as for every other command), window by window, so memory depends on the
window, not on the raster. ``embed`` runs these sources through area prediction
(:mod:`geolatent.inference.embed_rasters`).
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
from rasterio.errors import CRSError, RasterioError
from rasterio.warp import transform_bounds
from rasterio.windows import Window as RasterWindow

from geolatent.data.config import FileSourceConfig
from geolatent.data.io.grid import OutputGrid
from geolatent.data.materialize import SceneReadError
from geolatent.data.sources import BandAsset, Scene, Source
from geolatent.data.window import Window
from geolatent.modalities import (
    BASE_RESOLUTION_M,
    MAX_TIMESTEPS,
    MISSING_VALUE,
    MODALITIES,
    get_modality,
)
from geolatent.platform.predict.plan import Timeline
from geolatent.platform.predict.tile import read_dated


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
        indexes: 1-based file bands of the one timestep, when it is not the whole file (a
            multi-sensor stack, see :func:`stack_inputs`); requires ``bands`` and one date.
    """

    path: Path
    dates: tuple[dt.date, ...]
    bands: tuple[str, ...] | None = None
    indexes: tuple[int, ...] | None = None

    def __init__(
        self,
        path: str | os.PathLike,
        dates: dt.date | str | Sequence[dt.date | str],
        bands: Sequence[str] | None = None,
        indexes: Sequence[int] | None = None,
    ) -> None:
        if isinstance(dates, (dt.date, str)):
            dates = [dates]
        object.__setattr__(self, "path", Path(path))
        object.__setattr__(self, "dates", tuple(parse_date(d) for d in dates))
        object.__setattr__(self, "bands", None if bands is None else tuple(bands))
        object.__setattr__(self, "indexes", None if indexes is None else tuple(indexes))
        if not self.dates:
            raise RasterInputError(f"{self.path}: at least one date is required")
        if self.indexes is not None and (self.bands is None or len(self.bands) != len(
                self.indexes) or len(self.dates) != 1):
            raise RasterInputError(f"{self.path}: indexes need one band name each and one date")


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


@dataclass(frozen=True)
class ModalitySummary:
    """What was found for one modality (for logs and the CLI)."""

    files: int
    timesteps: int
    bands_used: tuple[str, ...]
    bands_dropped: tuple[str, ...]
    bandsets_absent: tuple[tuple[str, ...], ...]


class FileInputs:
    """Validated input files as data-layer sources on one pixel grid, with their time axis.

    Args:
        inputs: per modality the files (see :class:`RasterInput`).
        align: how dates become timesteps: ``"date"`` (every distinct date is its own timestep;
            modalities share a timestep only on the same day) or ``"month"`` (dates in the same
            calendar month share a timestep, e.g. Sentinel-1 and Sentinel-2 of one month; two
            files of one modality in one month are an error).
        check_resolution: the inputs' shared grid is used as is only when it has 10 m pixels
            in a metre-based CRS (the model's grid), otherwise the inputs are warped to the
            10 m UTM grid; False keeps any shared grid (off-distribution embeddings).
        grid: the output grid (:class:`~geolatent.data.io.grid.OutputGrid`, e.g. the grid of
            an ``--align-to`` file); default: see the module docstring.
        crs, resolution: a grid of this CRS / pixel size covering the inputs instead.

    Attributes:
        grid: the output grid.
        timeline: the time axis (:class:`~geolatent.platform.predict.plan.Timeline`).
        sources: one data-layer source per input file (one scene per file timestep).

    Raises:
        RasterInputError: unreadable or truncated files, inputs that do not overlap the grid,
            unknown or duplicate band names, incomplete bandsets, too many timesteps.
    """

    def __init__(
        self,
        inputs: Mapping[str, Sequence[RasterInput]],
        align: str = "date",
        check_resolution: bool = True,
        grid: OutputGrid | None = None,
        crs: str | None = None,
        resolution: float | None = None,
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
            self._build_time_axis()
            self.grid = self._choose_grid(grid, crs, resolution, check_resolution)
            self._check_on_grid()
            self.timeline = Timeline(tuple(self.dates), align)
            self.sources = [_scene_source(k, oi) for k, oi in enumerate(self._inputs)]
        finally:  # everything is read through the data layer from here on
            for oi in self._inputs:
                oi.dataset.close()

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
            per_t = len(ri.indexes) if ri.indexes is not None else ds.count // n_t
            if ri.indexes is not None and not all(1 <= i <= ds.count for i in ri.indexes):
                raise RasterInputError(f"{ri.path}: band indexes {list(ri.indexes)} outside "
                                       f"1..{ds.count}")
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
            _check_readable(ri.path, ds)
            return _OpenInput(
                modality=modality, source=ri, dataset=ds, band_names=names,
                read_bands=read_bands, channels=channels, dropped=dropped,
            )  # fmt: skip
        except Exception:
            ds.close()
            raise

    def _choose_grid(self, grid: OutputGrid | None, crs: str | None,
                     resolution: float | None, check_resolution: bool) -> OutputGrid:
        """The output grid (see the module docstring)."""
        if grid is not None:
            return grid
        r = self._inputs[0].dataset
        for oi in self._inputs:
            if oi.dataset.crs is None:
                raise RasterInputError(f"{oi.source.path}: no CRS; inputs must be georeferenced")
        shared = all(  # one grid: same CRS and pixel edges (sizes may differ)
            oi.dataset.crs == r.crs
            and oi.dataset.transform.almost_equals(r.transform, precision=1e-6 * abs(r.transform.a))
            for oi in self._inputs[1:]
        )
        if shared and crs is None and resolution is None and (
                not check_resolution or _is_model_grid(r.crs, r.transform)):
            return OutputGrid(r.crs, r.transform,  # the inputs' own grid, covering them all
                              max(oi.dataset.width for oi in self._inputs),
                              max(oi.dataset.height for oi in self._inputs))
        first = self._inputs[0]
        fb = transform_bounds(first.dataset.crs, "EPSG:4326", *first.dataset.bounds,
                              densify_pts=21)
        for oi in self._inputs[1:]:  # a grid over disjoint files is a mistake, and huge
            b = transform_bounds(oi.dataset.crs, "EPSG:4326", *oi.dataset.bounds, densify_pts=21)
            if b[0] >= fb[2] or b[2] <= fb[0] or b[1] >= fb[3] or b[3] <= fb[1]:
                raise RasterInputError(
                    f"{oi.source.path} ({_crs_name(oi.dataset.crs)}) does not overlap "
                    f"{first.source.path} ({_crs_name(first.dataset.crs)}): the inputs must "
                    "cover one area (check their CRS and georeferencing)"
                )
        try:
            return OutputGrid.covering([(oi.dataset.crs, tuple(oi.dataset.bounds))
                                        for oi in self._inputs], crs, resolution)
        except (ValueError, CRSError) as e:
            raise RasterInputError(f"cannot make the output grid: {e}") from None

    def _check_on_grid(self) -> None:
        """Refuse inputs that do not overlap the output grid."""
        g = self.grid
        gx0, gy1 = g.transform.c, g.transform.f
        gx1, gy0 = gx0 + g.width * g.resolution, gy1 - g.height * g.resolution
        for oi in self._inputs:
            d = oi.dataset
            if d.crs == g.crs and d.transform.almost_equals(g.transform,
                                                            precision=1e-6 * g.resolution):
                continue  # on the grid
            b = transform_bounds(d.crs, g.crs, *d.bounds, densify_pts=21)
            if b[0] >= gx1 or b[2] <= gx0 or b[1] >= gy1 or b[3] <= gy0:
                raise RasterInputError(
                    f"{oi.source.path} does not overlap the output grid ({_crs_name(g.crs)}, "
                    f"x {gx0:.1f}..{gx1:.1f}, y {gy0:.1f}..{gy1:.1f}); check --align-to / --crs"
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
        return int(self.grid.height)

    @property
    def width(self) -> int:
        return int(self.grid.width)

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

    def window(self, row_off: int, col_off: int, height: int, width: int) -> Window:
        """The data-layer window of grid pixels ``[row_off, +height) x [col_off, +width)``."""
        g = self.grid
        return Window(g.crs.to_string(), (col_off, row_off, col_off + width, row_off + height),
                      self.timeline.time_range, g.resolution,
                      origin=(g.transform.c, g.transform.f))

    def read(self, row_off: int, col_off: int, height: int, width: int,
             valid_height: int | None = None, valid_width: int | None = None
             ) -> dict[str, np.ndarray]:
        """Read a window of every modality, boundless, through the data layer.

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
        try:
            out = read_dated(self.window(row_off, col_off, height, width), self.sources,
                             self.timeline, (0, 0, self.width, self.height))
        except SceneReadError as e:
            raise RasterInputError(f"{e}; the file may be truncated or corrupt") from None
        vh = self.height if valid_height is None else min(valid_height, self.height)
        vw = self.width if valid_width is None else min(valid_width, self.width)
        for a in out.values():
            a[max(vh - row_off, 0):] = MISSING_VALUE
            a[:, max(vw - col_off, 0):] = MISSING_VALUE
        return out

    # ------------------------------------------------------------------ lifetime

    def __enter__(self) -> FileInputs:
        return self

    def __exit__(self, *exc) -> None:
        """Nothing to release: files are opened per read by the data layer."""


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
    win = RasterWindow(max(0, ds.width - w), max(0, ds.height - h), min(w, ds.width),
                       min(h, ds.height))
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


def _file_band(oi: _OpenInput, k: int, per_t: int, b: int) -> int:
    """1-based file band of band ``b`` of file timestep ``k``."""
    if oi.source.indexes is not None:
        return oi.source.indexes[b]
    return k * per_t + b + 1


def _is_model_grid(crs: CRS, transform: Affine) -> bool:
    """10 m square pixels in a metre-based CRS: the grid the model works on."""
    units = crs.linear_units.lower() if crs.is_projected else "degrees"
    return units in ("metre", "meter", "metres", "meters") and all(
        abs(r - BASE_RESOLUTION_M) <= 0.01 * BASE_RESOLUTION_M
        for r in (abs(transform.a), abs(transform.e)))


def _scene_source(k: int, oi: _OpenInput) -> Source:
    """The data-layer view of input file ``k``: one scene per file timestep with the used bands,
    read with the file's own nodata (the data layer's warp and resampling rules apply)."""
    mod = get_modality(oi.modality)
    bands = [mod.bands[c] for c in oi.channels]
    # Built in code, not from a user's YAML: no path globbing or date patterns to validate.
    cfg = FileSourceConfig.model_construct(
        name=f"{oi.modality}:{k}:{oi.source.path.name}", modality=oi.modality,
        paths=[str(oi.source.path)], bands=bands)
    lon = transform_bounds(oi.dataset.crs, "EPSG:4326", *oi.dataset.bounds, densify_pts=21)
    per_t = len(oi.band_names)
    scenes = [
        Scene(f"{oi.source.path.name}#{k}", dt.datetime(d.year, d.month, d.day),
              {mod.bands[c]: BandAsset(str(oi.source.path), _file_band(oi, k, per_t, b))
               for b, c in zip(oi.read_bands, oi.channels, strict=True)}, tuple(lon))
        for k, d in enumerate(oi.source.dates)
    ]
    return Source(cfg, tuple(b for b in mod.bands if b in bands), scenes)


_STEP_SUFFIX = re.compile(r"^(.+)_(\d+)$")


def stack_inputs(
    path: str | os.PathLike, dates: Sequence[dt.date | str]
) -> tuple[dict[str, list[RasterInput]], list[str]]:
    """Split one multi-sensor stack into model inputs (the Earth Engine export convention).

    The band descriptions name each band per timestep: ``NAME`` for the first, ``NAME_1``,
    ``NAME_2``, ... for the next ones (CropHarvest and many users' exports). Names are assigned
    to modalities through the registry's names and aliases (the modality recognising the most
    names first, so ``B2`` .. ``B12`` go to Sentinel-2 rather than Landsat); bands the model does
    not use (weather, elevation, slope, indices, ...) are ignored, and so are the bands of a
    bandset the stack holds only in part (e.g. Sentinel-2 ``B9`` without ``B1``: a bandset is
    one token, the model gets it whole or marks it missing).

    Args:
        path: the stack GeoTIFF.
        dates: one date per timestep (``T`` = the largest suffix + 1).

    Returns:
        ``({modality: [RasterInput per timestep]}, ignored band names without suffix)``.
    """
    path = Path(path)
    if not path.exists():
        raise RasterInputError(f"{path}: no such file")
    try:
        with rasterio.open(path) as ds:
            desc = [d.strip() if d else "" for d in ds.descriptions]
    except RasterioError as e:
        raise RasterInputError(f"{path}: cannot open as a raster ({e})") from None
    if not all(desc):
        raise RasterInputError(
            f"{path}: --stack needs band descriptions NAME, NAME_1, NAME_2, ... per timestep; "
            f"{sum(not d for d in desc)} of {len(desc)} bands have none (give the modalities as "
            "separate files with --s2 / --s1 / --landsat and their bands options instead)"
        )
    parsed = []
    for i, d in enumerate(desc, start=1):
        m = _STEP_SUFFIX.match(d)
        parsed.append((m[1], int(m[2]), i) if m and int(m[2]) >= 1 else (d, 0, i))
    names = list(dict.fromkeys(n for n, _, _ in parsed))
    encoders = [m for m in MODALITIES.values() if m.encoder_input and m.multitemporal]

    def known(mod, name: str) -> bool:
        try:
            mod.band_index(name)
        except KeyError:
            return False
        return True

    ranked = sorted(encoders, key=lambda m: -sum(known(m, n) for n in names))
    owner: dict[str, str] = {}
    for mod in ranked:
        for n in names:
            if n not in owner and known(mod, n):
                owner[n] = mod.name
    for mod in ranked:  # a bandset is tokenized whole: drop the bands of a partial one
        mine = {mod.band_index(n): n for n, o in owner.items() if o == mod.name}
        for sl in mod.bandset_slices():
            have = [mine[c] for c in range(sl.start, sl.stop) if c in mine]
            if have and len(have) < sl.stop - sl.start:
                for n in have:
                    del owner[n]
    ignored = [n for n in names if n not in owner]
    steps = sorted({k for n, k, _ in parsed if n in owner})
    if not steps:
        raise RasterInputError(f"{path}: no band is a model input (bands {names[:8]}...)")
    n_t = steps[-1] + 1
    if len(dates) != n_t:
        raise RasterInputError(
            f"--dates has {len(dates)} dates but {path} holds {n_t} timesteps (band suffixes "
            f"none, _1 .. _{n_t - 1}); give one date per timestep"
        )
    out: dict[str, list[RasterInput]] = {}
    for mod in ranked:
        for k in range(n_t):
            bands = [(n, i) for n, kk, i in parsed if kk == k and owner.get(n) == mod.name]
            if bands:
                out.setdefault(mod.name, []).append(RasterInput(
                    path, dates[k], [n for n, _ in bands], [i for _, i in bands]))
    return out, ignored
