"""The modality registry: one entry per modality, and the single source of band order.

A *bandset* is the unit of tokenization: the model makes one token per (patch, timestep, bandset).
Inside a modality, channels are the bandsets concatenated in the order listed here; every
path (normalization, pretraining samples, data materialization, ``embed``) reads band order
from this registry. Adding a modality is one :class:`Modality` entry in ``_REGISTRY`` (or, from
outside the package, :func:`register_modality`): its ``cli_flag`` gives it ``geolatent embed``
options and its ``unit_spec`` the unit plausibility checks of :mod:`geolatent.units`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MISSING_VALUE = -99999.0
"""Fill value of an absent bandset / timestep / pixel, in every modality and in sample files."""

MAX_TIMESTEPS = 12
"""At most 12 (monthly) timesteps per sample."""

BASE_RESOLUTION_M = 10.0
"""All bands of all modalities live on one 10 m pixel grid."""


@dataclass(frozen=True)
class UnitSpec:
    """Plausible raw values of a modality, as :mod:`geolatent.units` checks them.

    Attributes:
        valid_range: ``(lo, hi)``: values outside are impossible in these units (a few are
            tolerated: ``max_outside`` share of the valid values).
        median_range: ``(lo, hi)`` of the median of one band's valid values over a scene.
        band_medians: per-band overrides of ``median_range`` (e.g. Landsat thermal bands).
        wrong_products: substrings of file metadata (tags, descriptions) that name a product
            these units do not describe, with the product's name (e.g. ``MSIL1C`` -> L1C).
        decibels: values are dB (a linear-power input is detected and named).
    """

    valid_range: tuple[float, float]
    median_range: tuple[float, float]
    band_medians: tuple[tuple[str, float, float], ...] = ()
    wrong_products: tuple[tuple[str, str], ...] = ()
    decibels: bool = False
    max_outside: float = 0.01


@dataclass(frozen=True)
class Modality:
    """One input or target modality.

    Attributes:
        name: registry key, also the key used in checkpoints and sample files.
        bandsets: band names grouped into bandsets, in channel order.
        resolutions_m: native resolution of each bandset in metres (informational; all bands
            are stored on the 10 m grid, coarser bands upsampled by nearest neighbour).
        multitemporal: True for time series (T up to 12), False for static maps (T = 1).
        encoder_input: False for decode-only map products (never fed to the encoder).
        units: what raw values mean, as a user should supply them.
        categorical: True when values are class ids (warp with nearest).
        unit_spec: plausible raw values (None: not checked), see :class:`UnitSpec`.
        wavelengths_nm: central wavelength of each band in channel order (nm; SAR: the radar
            wavelength), empty for map products. The v1 missing-band rule copies the present
            band nearest in wavelength.
        cli_flag: name of its file options of ``geolatent embed`` (``--FLAG FILE``,
            ``--FLAG-dates``, ``--FLAG-bands``); None: no such options.
        cli_help: help text of ``--FLAG`` (what files it takes).
    """

    name: str
    bandsets: tuple[tuple[str, ...], ...]
    resolutions_m: tuple[float, ...]
    multitemporal: bool
    encoder_input: bool
    units: str
    categorical: bool = False
    unit_spec: UnitSpec | None = None
    wavelengths_nm: tuple[float, ...] = ()
    cli_flag: str | None = None
    cli_help: str = ""

    @property
    def bands(self) -> tuple[str, ...]:
        """All band names in channel order (bandsets concatenated)."""
        return tuple(b for bs in self.bandsets for b in bs)

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    @property
    def num_bandsets(self) -> int:
        return len(self.bandsets)

    @property
    def decode_only(self) -> bool:
        return not self.encoder_input

    def bandset_slices(self) -> list[slice]:
        """Channel slice of each bandset inside the modality's ``C`` axis."""
        out, start = [], 0
        for bs in self.bandsets:
            out.append(slice(start, start + len(bs)))
            start += len(bs)
        return out

    def band_index(self, band: str) -> int:
        """Channel index of ``band``; accepts aliases such as ``B2`` for ``B02`` or ``VV``."""
        key = canonical_band_name(band)
        for i, b in enumerate(self.bands):
            if canonical_band_name(b) == key:
                return i
        raise KeyError(
            f"band {band!r} is not a band of modality {self.name!r}; expected one of "
            f"{list(self.bands)}"
        )


def canonical_band_name(band: str) -> str:
    """Normalize a band name for matching: case-insensitive, ``B02`` == ``B2`` == ``b2``."""
    s = band.strip().lower()
    m = re.fullmatch(r"b0*(\d+)(a?)", s)
    if m:
        return f"b{int(m.group(1))}{m.group(2)}"
    return s


_OSM_BANDS = (
    "aerialway_pylon", "aerodrome", "airstrip", "amenity_fuel", "building", "chimney",
    "communications_tower", "crane", "flagpole", "fountain", "generator_wind", "helipad",
    "highway", "leisure", "lighthouse", "obelisk", "observatory", "parking", "petroleum_well",
    "power_plant", "power_substation", "power_tower", "river", "runway", "satellite_dish",
    "silo", "storage_tank", "taxiway", "water_tower", "works",
)  # fmt: skip

_WORLDCEREAL_BANDS = tuple(
    f"tc-{name}-classification"
    for name in (
        "annual-temporarycrops", "maize-main-irrigation", "maize-main-maize",
        "maize-second-irrigation", "maize-second-maize", "springcereals-springcereals",
        "wintercereals-irrigation", "wintercereals-wintercereals",
    )
)  # fmt: skip

_REGISTRY: tuple[Modality, ...] = (
    Modality(
        "sentinel2_l2a",
        (("B02", "B03", "B04", "B08"), ("B05", "B06", "B07", "B8A", "B11", "B12"), ("B01", "B09")),
        (10.0, 20.0, 40.0),
        multitemporal=True,
        encoder_input=True,
        units="Sentinel-2 L2A digital numbers (reflectance x 10000)",
        # L2A DN: 0-10000 over land, bright cloud / snow up to ~20000 (with the 1000 offset of
        # processing baseline 04.00); band medians of a scene lie between ~50 and ~8000.
        unit_spec=UnitSpec(
            (0.0, 25000.0), (2.0, 12000.0),
            wrong_products=(("MSIL1C", "Sentinel-2 Level-1C (top of atmosphere)"),
                            ("MSI1C", "Sentinel-2 Level-1C (top of atmosphere)"),
                            ("LEVEL-1C", "Sentinel-2 Level-1C (top of atmosphere)"),
                            ("L1C", "Sentinel-2 Level-1C (top of atmosphere)"))),
        wavelengths_nm=(490, 560, 665, 842, 705, 740, 783, 865, 1610, 2190, 443, 945),
        cli_flag="s2",
        cli_help="Sentinel-2 L2A GeoTIFF(s).",
    ),
    Modality(
        "sentinel1",
        (("vv", "vh"),),
        (10.0,),
        multitemporal=True,
        encoder_input=True,
        units="Sentinel-1 backscatter in dB (10*log10 of linear)",
        # dB: land and water lie in about -35..+5 dB; medians of a scene around -25..-3.
        unit_spec=UnitSpec((-80.0, 40.0), (-45.0, 5.0), decibels=True),
        # C band, 5.55 cm, both polarizations: VV and VH stand in for each other.
        wavelengths_nm=(5.55e7, 5.55e7),
        cli_flag="s1",
        cli_help="Sentinel-1 GeoTIFF(s), dB.",
    ),
    Modality(
        "landsat",
        (("B8",), ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11")),
        (15.0, 30.0),
        multitemporal=True,
        encoder_input=True,
        units="Landsat 8/9 Collection 2 Level-1 digital numbers",
        # Level-1 DN (16-bit, fill 0): optical medians ~6000-20000 (pretraining means
        # 10,000-14,000); thermal B10 / B11 around 18,000-30,000. Collection-2 surface
        # reflectance scaled to 0-10000 (medians 400-5000) or temperatures (K or K x 10)
        # fall below these ranges.
        unit_spec=UnitSpec(
            (0.0, 65535.0), (4500.0, 40000.0),
            # Cirrus (B9) sits near zero reflectance almost everywhere: pretraining mean
            # 4,585 +- 2,550 DN, so its median says little about the units.
            band_medians=(("B10", 12000.0, 45000.0), ("B11", 12000.0, 45000.0),
                          ("B9", 1000.0, 40000.0)),
            wrong_products=(("L2SP", "Landsat Collection-2 Level-2 (surface reflectance)"),
                            ("L2SR", "Landsat Collection-2 Level-2 (surface reflectance)"))),
        wavelengths_nm=(590, 443, 482, 561, 655, 865, 1609, 2201, 1373, 10895, 12005),
        cli_flag="landsat",
        cli_help="Landsat L1 GeoTIFF(s).",
    ),
    Modality("worldcover", (("B1",),), (10.0,), False, False, "ESA WorldCover class id", True),
    Modality("srtm", (("srtm",),), (30.0,), False, False, "elevation in metres"),
    Modality(
        "openstreetmap_raster", (_OSM_BANDS,), (2.5,), False, False, "binary 0/1 presence", True
    ),
    Modality("wri_canopy_height_map", (("B1",),), (1.0,), False, False, "canopy height in metres"),
    Modality("cdl", (("cdl",),), (30.0,), False, False, "USDA Cropland Data Layer class id", True),
    Modality("worldcereal", (_WORLDCEREAL_BANDS,), (10.0,), False, False, "0 or 100", True),
)

MODALITIES: dict[str, Modality] = {m.name: m for m in _REGISTRY}
"""All v1 modalities, in the canonical (checkpoint) order, then any registered with
:func:`register_modality`."""

_CLI_FLAG = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def register_modality(modality: Modality) -> None:
    """Add ``modality`` to the registry (after the v1 ones, so checkpoint order is unchanged).

    Commands built afterwards (``geolatent embed``'s ``--FLAG`` options) and the unit checks
    see it. Raises ValueError for a name or ``cli_flag`` that is taken or malformed.
    """
    if modality.name in MODALITIES:
        raise ValueError(f"modality {modality.name!r} is already registered; pick another name")
    if modality.cli_flag is not None:
        if not _CLI_FLAG.match(modality.cli_flag):
            raise ValueError(f"cli_flag {modality.cli_flag!r} of modality {modality.name!r}: use "
                             "lower-case letters, digits and single dashes, e.g. 'planet-sr'")
        taken = {m.cli_flag: m.name for m in MODALITIES.values() if m.cli_flag}
        if modality.cli_flag in taken or modality.cli_flag in ("stack", "dates"):
            raise ValueError(f"cli_flag {modality.cli_flag!r} of modality {modality.name!r} is "
                             f"taken (by {taken.get(modality.cli_flag, 'embed')}); pick another")
    if len(modality.resolutions_m) != len(modality.bandsets):
        raise ValueError(f"modality {modality.name!r}: give one resolution per bandset "
                         f"({len(modality.bandsets)}), got {len(modality.resolutions_m)}")
    MODALITIES[modality.name] = modality


def unregister_modality(name: str) -> Modality:
    """Remove a modality added by :func:`register_modality` (the v1 ones cannot be removed)."""
    if any(m.name == name for m in _REGISTRY):
        raise ValueError(f"modality {name!r} is built in and cannot be unregistered")
    try:
        return MODALITIES.pop(name)
    except KeyError:
        raise KeyError(f"modality {name!r} is not registered") from None


def cli_modalities() -> list[Modality]:
    """The registered modalities with ``geolatent embed`` file options, in registry order."""
    return [m for m in MODALITIES.values() if m.cli_flag is not None]

def get_modality(name: str) -> Modality:
    """Look up a modality by name with a clear error for unknown names."""
    try:
        return MODALITIES[name]
    except KeyError:
        raise KeyError(f"unknown modality {name!r}; known modalities: {list(MODALITIES)}") from None
