"""Unit and range plausibility of raw input values: the one place these rules live.

Every entry that takes imagery (``embed``, fine-tuning, prediction, data build, pretraining
data) calls :func:`check_values` on the raw values and, where files are read,
:func:`check_file_metadata`. The rules come from each modality's
:class:`~geolatent.modalities.UnitSpec` in the registry; this module only applies them.

Hints name what the user can change *where they are* (:class:`Fix`): in Python the argument
(``check_units=False`` only there), in a config the source option (``scale:``, ``offset:``,
``units: linear``, ``nodata:``), on the command line the flag that gives the input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from geolatent.modalities import MISSING_VALUE, Modality, canonical_band_name, get_modality

Where = Literal["python", "config", "cli"]
SAMPLE_PER_BAND = 200_000
"""At most this many values per band are inspected (a strided subsample: bounded cost)."""


class UnitError(ValueError):
    """Input values whose range says they are in the wrong units, or metadata that says the
    product is not the one the modality expects. The message says what to change."""


@dataclass(frozen=True)
class Fix:
    """Where the values came from, so hints name an option the user can pass there.

    Attributes:
        where: ``python`` (an API call), ``config`` (a source in a YAML config) or ``cli``.
        source: the config source's name (``config``).
        flag: the CLI flag that gave the input, e.g. ``--s2`` (``cli``).
    """

    where: Where = "python"
    source: str | None = None
    flag: str | None = None

    @property
    def _source(self) -> str:
        return f"source {self.source!r}" if self.source else "the source of these values"

    def scale(self, scale: float, offset: float = 0.0, convert: str = "") -> str:
        """How to rescale the values (``value = raw * scale + offset``)."""
        off = f" and `offset: {offset:g}`" if offset else ""
        if self.where == "config":
            return f"set `scale: {scale:g}`{off} on {self._source} in the config"
        how = convert or f"multiply by {scale:g}" + (f" and add {offset:g}" if offset else "")
        if self.where == "cli":
            return f"convert the file given to {self.flag or 'the input flag'} ({how})"
        return f"{how} before calling, or pass check_units=False to use them as they are"

    def linear(self) -> str:
        if self.where == "config":
            return f"set `units: linear` on {self._source} in the config (-> dB)"
        if self.where == "cli":
            return f"convert the file given to {self.flag or 'the input flag'} to dB " \
                   "(10*log10(linear))"
        return "convert with 10*log10(x) before calling, or pass check_units=False"

    def nodata(self, value: str) -> str:
        if self.where == "config":
            return f"set `nodata: {value}` on {self._source} in the config"
        if self.where == "cli":
            return f"set the nodata value of the file given to {self.flag or 'the input'} " \
                   f"(e.g. gdal_edit.py -a_nodata {value})"
        return f"replace them with NaN or {MISSING_VALUE:g} (missing) before calling"

    def override(self) -> str:
        if self.where == "python":
            return "pass check_units=False to use them as they are"
        if self.where == "config":
            return f"fix the files, or the `modality:` / `scale:` of {self._source}"
        return f"give this product to another flag than {self.flag or 'this one'}, or convert it"


def _where(what: str | None, modality: str) -> str:
    return what or modality


def _valid_columns(x: np.ndarray) -> list[np.ndarray]:
    """Per channel, a bounded subsample of the values that are present (not -99999 / NaN)."""
    flat = x.reshape(-1, x.shape[-1])
    step = max(1, flat.shape[0] // SAMPLE_PER_BAND)
    flat = flat[::step]
    return [c[(c != MISSING_VALUE) & ~np.isnan(c)] for c in flat.T]


def check_values(
    modality: str,
    x,
    *,
    bands: Sequence[str] | None = None,
    what: str | None = None,
    fix: Fix | None = None,
) -> list[str]:
    """Check raw values of one modality against its registry :class:`UnitSpec`.

    Args:
        modality: registry name.
        x: ``[..., C]`` raw values (numpy or torch), missing entries -99999 or NaN.
        bands: names of the ``C`` channels (default: the modality's bands in registry order).
        what: where the values came from, for messages (a file, a source, an argument).
        fix: where the user is (see :class:`Fix`); default Python.

    Returns:
        Warnings (infinite values, counted as missing; a bandset holding no valid value).

    Raises:
        UnitError: values outside the possible range, or band medians that
            say the values are in other units (reflectance 0-1, linear power, temperature,
            surface reflectance instead of Level-1 DN, ...).
    """
    fix = fix or Fix()
    mod = get_modality(modality)
    spec = mod.unit_spec
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    names = list(bands) if bands is not None else list(mod.bands)
    if arr.shape[-1] != len(names):
        raise ValueError(f"{_where(what, modality)}: {arr.shape[-1]} channels but "
                         f"{len(names)} band names")
    where = _where(what, modality)
    warnings = [note] if (note := infinite_note(arr, names, where)) else []
    warnings += _missing_bandsets(mod, names, arr, where)
    if spec is None:
        return warnings
    cols = _valid_columns(arr.astype(np.float64, copy=False))
    present = [(b, c) for b, c in zip(names, cols, strict=True) if c.size]
    if not present:
        return warnings
    values = np.concatenate([c for _, c in present])
    if spec.decibels:
        if float((values >= 0).mean()) > 0.95:
            raise UnitError(f"{where}: {float((values >= 0).mean()):.0%} of values are >= 0: "
                            f"this looks like linear backscatter, but {mod.name} expects "
                            f"{mod.units}; {fix.linear()}")
    elif float((np.abs(values) <= 1.5).mean()) > 0.99:
        raise UnitError(f"{where}: {float((np.abs(values) <= 1.5).mean()):.1%} of values are "
                        f"within [-1.5, 1.5]: this looks like reflectance in 0-1 (or normalized "
                        f"values), but {mod.name} expects {mod.units}; "
                        f"{_reflectance_fix(mod, fix)}")
    lo, hi = spec.valid_range
    outside = (values < lo) | (values > hi)
    if float(outside.mean()) > spec.max_outside:
        raise UnitError(f"{where}: {float(outside.mean()):.1%} of values lie outside "
                        f"{lo:g}..{hi:g}, impossible for {mod.units} "
                        f"(e.g. {_examples(values[outside])}); {_range_fix(values, fix)}")
    for band, col in present:
        _check_median(mod, band, col, where, fix)
    return warnings


def infinite_note(x: np.ndarray, bands: Sequence[str], what: str) -> str | None:
    """The warning counting +-inf values of ``x`` ``[..., C]`` per band, or ``None``.

    One missing-data rule (:mod:`geolatent.model.missing`): +-inf is missing data like -99999 /
    NaN (10*log10(0) at SAR scene borders gives -inf), so it is counted, never an error.
    """
    inf = np.isinf(x)
    if not inf.any():
        return None
    per_band = inf.reshape(-1, x.shape[-1]).sum(0)
    bad = ", ".join(f"{b}: {int(n)}" for b, n in zip(bands, per_band, strict=True) if n)
    return f"{what}: {int(inf.sum())} infinite values ({bad}) are treated as missing data"


def _reflectance_fix(mod: Modality, fix: Fix) -> str:
    if mod.name == "landsat":
        # Collection-2 Level-1: rho = 2e-5 * DN - 0.1, so DN = rho * 50000 + 5000.
        return ("Level-1 DN relate to top-of-atmosphere reflectance as DN = rho * 50000 + 5000; "
                + fix.scale(50000, 5000, "DN = rho * 50000 + 5000"))
    return fix.scale(10000)


def _range_fix(values: np.ndarray, fix: Fix) -> str:
    top = float(values.max())
    if top in (65535.0, 32767.0, 255.0) and float((values == top).mean()) > 0.5:
        return f"{top:g} looks like a fill value: {fix.nodata(f'{top:g}')}"
    if float((values < 0).mean()) > 0.5:
        return "negative values are not digital numbers; " + fix.override()
    return fix.override()


def _examples(v: np.ndarray) -> str:
    return ", ".join(f"{x:g}" for x in np.unique(v)[:3])


def _check_median(mod: Modality, band: str, col: np.ndarray, where: str, fix: Fix) -> None:
    spec = mod.unit_spec
    assert spec is not None
    lo, hi = spec.median_range
    for b, blo, bhi in spec.band_medians:
        if canonical_band_name(b) == canonical_band_name(band):
            lo, hi = blo, bhi
    med = float(np.median(col))
    if lo <= med <= hi:
        return
    thermal = mod.name == "landsat" and any(
        canonical_band_name(band) == canonical_band_name(t) for t in ("B10", "B11"))
    if mod.name == "landsat" and thermal and 150 <= med <= 400:
        why = "this looks like a temperature in kelvin, not Level-1 DN"
    elif mod.name == "landsat" and thermal and 1500 <= med <= 4000:
        why = "this looks like a temperature in kelvin x 10 (surface temperature), not Level-1 DN"
    elif mod.name == "landsat" and med < lo:
        why = ("this looks like surface reflectance (Collection-2 Level-2, or reflectance "
               "x 10000), not Level-1 DN (about 5000 at zero reflectance)")
    elif med > hi:
        why = "the values are too large for these units (scaled by 100, or another product?)"
    else:
        why = "the values are too small for these units"
    raise UnitError(f"{where}: band {band} has median {med:g}, outside {lo:g}..{hi:g} expected "
                    f"for {mod.units}: {why}; {fix.override()}")


def _missing_bandsets(mod: Modality, names: Sequence[str], arr: np.ndarray,
                      where: str) -> list[str]:
    """A warning per bandset whose given bands hold no valid value anywhere."""
    flat = arr.reshape(-1, arr.shape[-1])
    present = ~((flat == MISSING_VALUE) | np.isnan(flat))
    have = {canonical_band_name(b): bool(present[:, i].any()) for i, b in enumerate(names)}
    out = []
    for bs in mod.bandsets:
        given = [b for b in bs if canonical_band_name(b) in have]
        if given and not any(have[canonical_band_name(b)] for b in given):
            out.append(f"{where}: bandset {list(bs)} holds no valid value (all NaN / nodata); "
                       "its tokens are missing and the embedding ignores it")
    return out


def check_file_metadata(
    modality: str,
    path: str,
    *,
    tags: Iterable[str] = (),
    descriptions: Sequence[str | None] = (),
    bands: Sequence[str] = (),
    fix: Fix | None = None,
) -> None:
    """Check what a file says about itself against what it is used as.

    Args:
        modality: the modality the file feeds.
        path: the file (for messages).
        tags: metadata text (GDAL tags' keys and values, product ids).
        descriptions: the file's band descriptions, one per band read (None / "" when unset).
        bands: the band names the user gave for those same bands.

    Raises:
        UnitError: the metadata names a product the modality does not take (Sentinel-2 L1C
            given as L2A, Landsat Level-2 given as Level-1), or band descriptions that are all
            band names of the modality contradict the given band names.
    """
    fix = fix or Fix()
    mod = get_modality(modality)
    spec = mod.unit_spec
    text = " ".join(str(t) for t in tags).upper()
    for needle, product in spec.wrong_products if spec else ():
        if needle in text:
            raise UnitError(f"{path}: its metadata names {product} ({needle!r}), but "
                            f"{mod.name} expects {mod.units}; {fix.override()}")
    known = {canonical_band_name(b) for b in mod.bands}
    pairs = [(d, b) for d, b in zip(descriptions, bands, strict=False) if d]
    if pairs and all(canonical_band_name(d) in known for d, _ in pairs):
        wrong = [(d, b) for d, b in zip(descriptions, bands, strict=False)
                 if d and canonical_band_name(d) != canonical_band_name(b)]
        if wrong:
            shown = ", ".join(f"band {i + 1} is described as {d} but given as {b}"
                              for i, (d, b) in enumerate(zip(descriptions, bands, strict=False))
                              if (d, b) in wrong)
            where = {"config": f"the `bands:` of {fix._source}",
                     "cli": f"the band list given with {fix.flag or 'the bands flag'}",
                     "python": "the band names passed"}[fix.where]
            raise UnitError(f"{path}: {shown}; fix {where} (or the file's descriptions)")


def check_source_files(sources: Sequence, *, max_files: int = 64) -> None:
    """:func:`check_file_metadata` on the files of data-layer sources (at most ``max_files``
    distinct files per source; headers only). Hints name the config's source options."""
    import rasterio

    for src in sources:
        fix = Fix("config", source=src.name)
        by_file: dict[str, list[tuple[int, str]]] = {}
        for scene in src.scenes:
            for band, asset in scene.assets.items():
                if band == src.mask_band:
                    continue
                by_file.setdefault(asset.uri, []).append((asset.band_index, band))
        for uri, members in list(by_file.items())[:max_files]:
            with rasterio.open(uri) as ds:
                tags = [f"{k}={v}" for k, v in ds.tags().items()]
                descs = [ds.descriptions[i - 1] for i, _ in sorted(members)]
            check_file_metadata(src.modality, uri, tags=tags, descriptions=descs,
                                bands=[b for _, b in sorted(members)], fix=fix)


def check_bandsets(sources: Sequence, *, strict: bool = True) -> list[str]:
    """What the model will make of the bands ``sources`` give each encoder modality.

    The one missing-data rule (:mod:`geolatent.model.missing`): a band missing inside a bandset
    that has data is filled by the model version's rule (v1.1+: 0 after normalization; v1: the
    present band nearest in wavelength), and a bandset with none of its bands is masked. So a
    subset of bands is usable input (e.g. Sentinel-2 without B01/B09, RGB only, Sentinel-1 VV
    without VH); only a modality that gets no band at all is an error.

    Args:
        sources: indexed data-layer sources (``.name``, ``.modality``, ``.bands``).
        strict: raise when a modality gets no band at all (else return that as a message too).

    Returns:
        One note per modality whose bands are filled or whose bandsets are masked.

    Raises:
        ValueError: (``strict``) a source that feeds its modality no band, naming it.
    """
    messages = []
    by_modality: dict[str, list] = {}
    for s in sources:
        by_modality.setdefault(s.modality, []).append(s)
    for modality, group in by_modality.items():
        mod = get_modality(modality)
        if not mod.encoder_input:
            continue
        have = {canonical_band_name(b) for s in group for b in s.bands}
        names = ", ".join(repr(s.name) for s in group)
        filled = [b for bs in mod.bandsets if any(canonical_band_name(x) in have for x in bs)
                  for b in bs if canonical_band_name(b) not in have]
        masked = [list(bs) for bs in mod.bandsets
                  if not any(canonical_band_name(x) in have for x in bs)]
        if len(masked) == len(mod.bandsets):
            message = (f"source(s) {names} give no {modality} band (bands "
                       f"{sorted({b for s in group for b in s.bands})}): the model would see "
                       f"nothing; give `bands:` among {list(mod.bands)}")
            if strict:
                raise ValueError(message)
            messages.append(message)
            continue
        if filled or masked:
            messages.append(
                f"source(s) {names} give {modality} bands {sorted(have)}"
                + (f"; {filled} are filled by the model version's missing-band rule" if filled
                   else "")
                + (f"; bandsets {masked} have no band and are masked" if masked else ""))
    return messages
