"""The built-in sample scene: a small, deterministic, generated multi-temporal EO scene.

Nothing is downloaded: :func:`make_sample_scene` draws a land-cover map with spatially coherent
regions (smoothed random fields, rectangular crop parcels and a meandering river) and renders,
for every monthly timestep, Sentinel-2 L2A surface reflectance (as DN, reflectance x 10000) and
Sentinel-1 backscatter (dB) from per-class reference spectra, seasonal cycles and noise.

The scene stands for a cloud-free monthly composite (as in OlmoEarth pretraining), so there are
no clouds or missing values. Sentinel-2 values carry no ``BOA_ADD_OFFSET`` (processing baseline
04.00 adds 1000 to the stored DN; the model expects reflectance x 10000 without that offset).

Rendering model, per pixel and month ``m``:

* Sentinel-2: a linear mixture of six endmember spectra (water, green vegetation, forest canopy,
  soil, dry vegetation, urban) whose abundances depend on the class and the month (cropland
  parcels follow a Gaussian green-up peaking in early summer, forest is nearly constant, ...),
  times a smooth brightness field and a per-date factor, plus multiplicative and additive noise.
* Sentinel-1: per-class VV / VH backscatter in dB (VH about 6-8 dB below VV; vegetation
  backscatter grows with green cover), a smooth per-pixel offset, and multiplicative Gamma
  speckle applied in linear power.

Everything is vectorized numpy; 64 x 64 x 12 renders in a few milliseconds, 512 x 512 x 12 in
about a second.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geolatent.modalities import BASE_RESOLUTION_M, MODALITIES

CLASS_NAMES: tuple[str, ...] = ("water", "forest", "cropland", "grassland", "built_up", "bare")
"""Land-cover classes of the sample scene; ``labels`` holds indices into this tuple."""

CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (31, 120, 180),  # water
    (27, 94, 32),  # forest
    (240, 200, 60),  # cropland
    (150, 210, 110),  # grassland
    (200, 40, 40),  # built_up
    (170, 150, 120),  # bare
)
"""An RGB display colour per class (used for the colour table of ``labels.tif``)."""

WATER, FOREST, CROPLAND, GRASSLAND, BUILT_UP, BARE = range(6)

# Endmember surface reflectances (0-1), a row per endmember and a column per band. Shapes from
# typical library spectra: water is dark and falls to ~0 in the NIR/SWIR; green vegetation has
# the red trough, the red edge (B05-B07) and a high NIR plateau; soil brightens with wavelength
# up to SWIR-1; urban surfaces are bright and spectrally flat. B09 (945 nm water vapour band) is
# not corrected by L2A processing, hence lower than the NIR plateau.
_ENDMEMBER_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11",
                    "B12")  # the columns of _ENDMEMBERS
_ENDMEMBERS = np.array([  # rows in the order of the _EM_* indices below
    [0.060, 0.055, 0.050, 0.030, 0.022, 0.015, 0.012, 0.010, 0.009, 0.005, 0.004, 0.003],  # water
    [0.025, 0.030, 0.070, 0.030, 0.110, 0.300, 0.380, 0.420, 0.440, 0.300, 0.190, 0.090],  # green
    [0.020, 0.022, 0.045, 0.022, 0.070, 0.200, 0.260, 0.290, 0.300, 0.210, 0.140, 0.065],  # canopy
    [0.090, 0.110, 0.150, 0.200, 0.225, 0.245, 0.260, 0.280, 0.290, 0.220, 0.380, 0.330],  # soil
    [0.060, 0.070, 0.100, 0.130, 0.170, 0.210, 0.240, 0.270, 0.280, 0.210, 0.350, 0.260],  # dry
    [0.150, 0.160, 0.175, 0.185, 0.195, 0.205, 0.215, 0.225, 0.230, 0.180, 0.250, 0.230],  # urban
])  # fmt: skip
_EM_WATER, _EM_GREEN, _EM_CANOPY, _EM_SOIL, _EM_DRY, _EM_URBAN = range(6)

# Sentinel-1 per-class backscatter (dB): VV and VH of the class without green cover, and the
# dB gain at full green cover (volume scattering raises VH more than VV).
_S1_BASE_DB = np.array(
    [[-21.0, -28.0], [-7.5, -13.5], [-13.0, -21.0], [-11.5, -18.5], [-3.0, -10.0], [-14.0, -22.0]],
    dtype=np.float32,
)
_S1_GREEN_GAIN_DB = np.array(
    [[0.0, 0.0], [0.0, 0.0], [4.0, 7.0], [1.5, 3.0], [0.0, 0.0], [0.0, 0.0]], dtype=np.float32
)
_S1_LOOKS = 4.4  # equivalent number of looks of a Sentinel-1 IW GRD product


@dataclass(frozen=True)
class SampleScene:
    """A generated multi-temporal scene on a 10 m UTM grid.

    Attributes:
        sentinel2_l2a: float32 ``[H, W, T, 12]`` Sentinel-2 L2A DN (reflectance x 10000, integer
            valued), bands in registry order ``MODALITIES["sentinel2_l2a"].bands``.
        sentinel1: float32 ``[H, W, T, 2]`` backscatter in dB, ``[vv, vh]``.
        timestamps: int64 ``[T, 3]`` (day of month, month 0-11, year).
        labels: uint8 ``[H, W]`` class index into :data:`CLASS_NAMES`.
        crs: the scene's UTM CRS.
        transform: affine pixel-to-CRS transform (10 m pixels, north up).
    """

    sentinel2_l2a: np.ndarray
    sentinel1: np.ndarray
    timestamps: np.ndarray
    labels: np.ndarray
    crs: CRS
    transform: Affine

    @property
    def height(self) -> int:
        return int(self.labels.shape[0])

    @property
    def width(self) -> int:
        return int(self.labels.shape[1])

    @property
    def num_timesteps(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def dates(self) -> list[dt.date]:
        """Acquisition (composite) date of each timestep."""
        return [dt.date(int(y), int(m) + 1, int(d)) for d, m, y in self.timestamps]

    @property
    def modalities(self) -> dict[str, np.ndarray]:
        """The image arrays keyed by registry modality name (``[H, W, T, C]`` each)."""
        return {"sentinel2_l2a": self.sentinel2_l2a, "sentinel1": self.sentinel1}


def make_sample_scene(
    height: int = 64,
    width: int = 64,
    timesteps: int = 12,
    seed: int = 0,
    year: int = 2024,
    *,
    epsg: int = 32633,
    origin: tuple[float, float] = (400_000.0, 5_100_000.0),
) -> SampleScene:
    """Generate the sample scene.

    Args:
        height, width: size in 10 m pixels.
        timesteps: number of monthly timesteps, starting in January of ``year`` (timestep ``t``
            is month ``t % 12`` of year ``year + t // 12``, dated the 15th).
        seed: the scene is a pure function of all arguments.
        year: first year of the time series.
        epsg: EPSG code of the (UTM) CRS.
        origin: CRS coordinates (x, y) of the upper-left corner, metres.

    Returns:
        A :class:`SampleScene`.
    """
    if height < 1 or width < 1 or timesteps < 1:
        raise ValueError(
            f"height, width and timesteps must be >= 1, got {height, width, timesteps}"
        )
    rng = np.random.default_rng(seed)
    labels, crop_peak, crop_amp, crop_width = _land_cover(rng, height, width)

    t = np.arange(timesteps)
    months = t % 12
    timestamps = np.stack([np.full(timesteps, 15), months, year + t // 12], axis=1).astype(np.int64)

    green_var = _smooth_field(rng, (height, width), _feature_sigma(height, width) / 2)
    abundance = _abundances(labels, months, crop_peak, crop_amp, crop_width, green_var)
    s2 = _render_sentinel2(rng, labels, abundance)
    s1 = _render_sentinel1(rng, labels, abundance[..., _EM_GREEN])

    transform = Affine(BASE_RESOLUTION_M, 0.0, origin[0], 0.0, -BASE_RESOLUTION_M, origin[1])
    return SampleScene(
        sentinel2_l2a=s2,
        sentinel1=s1,
        timestamps=timestamps,
        labels=labels,
        crs=CRS.from_epsg(epsg),
        transform=transform,
    )


def write_scene_geotiffs(scene: SampleScene, out_dir: str | Path) -> dict[str, list[Path]]:
    """Write the scene as GeoTIFFs: one multi-band file per modality per timestep, and labels.

    Files: ``<modality>_<YYYY-MM-DD>.tif`` (band descriptions = registry band names; Sentinel-2 as
    uint16 DN with nodata 0, Sentinel-1 as float32 dB with nodata NaN) and ``labels.tif`` (uint8
    class ids with a colour table, class names in the ``class_names`` tag).

    Returns:
        ``{"sentinel2_l2a": [paths by timestep], "sentinel1": [...], "labels": [path]}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = dict(
        driver="GTiff",
        height=scene.height,
        width=scene.width,
        crs=scene.crs,
        transform=scene.transform,
        tiled=scene.height >= 16 and scene.width >= 16,
        compress="deflate",
    )
    if base["tiled"]:
        block = 256 if min(scene.height, scene.width) >= 256 else 16
        base.update(blockxsize=block, blockysize=block)
    written: dict[str, list[Path]] = {}
    for name, array in scene.modalities.items():
        bands = MODALITIES[name].bands
        is_s2 = name == "sentinel2_l2a"
        profile = dict(
            base,
            count=len(bands),
            dtype="uint16" if is_s2 else "float32",
            nodata=0 if is_s2 else float("nan"),
        )
        paths = []
        for t, date in enumerate(scene.dates):
            path = out_dir / f"{name}_{date.isoformat()}.tif"
            data = np.moveaxis(array[:, :, t, :], -1, 0)
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(data.astype(profile["dtype"]))
                for i, band in enumerate(bands, start=1):
                    dst.set_band_description(i, band)
                dst.update_tags(date=date.isoformat(), modality=name, units=MODALITIES[name].units)
            paths.append(path)
        written[name] = paths

    label_path = out_dir / "labels.tif"
    with rasterio.open(label_path, "w", **dict(base, count=1, dtype="uint8", nodata=255)) as dst:
        dst.write(scene.labels[None])
        dst.set_band_description(1, "land_cover")
        dst.write_colormap(1, {i: (*c, 255) for i, c in enumerate(CLASS_COLORS)})
        dst.update_tags(class_names=",".join(CLASS_NAMES))
    written["labels"] = [label_path]
    return written


def ndvi(s2: np.ndarray) -> np.ndarray:
    """NDVI ``(B08 - B04) / (B08 + B04)`` of Sentinel-2 data ``[..., 12]`` in registry order."""
    bands = MODALITIES["sentinel2_l2a"]
    nir = s2[..., bands.band_index("B08")].astype(np.float32)
    red = s2[..., bands.band_index("B04")].astype(np.float32)
    return (nir - red) / np.maximum(nir + red, 1e-6)


# --------------------------------------------------------------------------- land cover


def _feature_sigma(height: int, width: int) -> float:
    """Correlation length (pixels) of the land-cover fields: regions of a few hundred metres."""
    return float(np.clip(min(height, width) / 10.0, 3.0, 16.0))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field ``[H, W]`` (float32), correlation ``sigma``.

    White noise low-passed with a Gaussian in the Fourier domain; computed on a grid padded by
    3 sigma and cropped so the result does not wrap around at the edges.
    """
    pad = int(np.ceil(3 * sigma))
    h, w = shape[0] + 2 * pad, shape[1] + 2 * pad
    noise = rng.standard_normal((h, w), dtype=np.float32)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    kernel = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    field = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=(h, w))[
        pad : pad + shape[0], pad : pad + shape[1]
    ]
    field -= field.mean()
    return (field / max(float(field.std()), 1e-12)).astype(np.float32)


def _land_cover(
    rng: np.random.Generator, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Class map and per-pixel crop phenology.

    Returns:
        labels uint8 ``[H, W]``; crop peak month, green-up amplitude and width (months), each
        float32 ``[H, W]`` and constant inside a crop parcel.
    """
    sigma = _feature_sigma(height, width)
    # One smooth field per land class; the class with the highest (biased) field wins, which
    # gives blob-like, spatially coherent regions. Biases set the class mix (water is mostly
    # the river, drawn below).
    land = (FOREST, CROPLAND, GRASSLAND, BUILT_UP, BARE)
    bias = np.array([0.3, 0.5, 0.2, -0.4, -0.6], dtype=np.float32)
    fields = (
        np.stack([_smooth_field(rng, (height, width), sigma) for _ in land]) + bias[:, None, None]
    )
    labels = np.asarray(land, dtype=np.uint8)[np.argmax(fields, axis=0)]
    lake = _smooth_field(rng, (height, width), sigma) > 2.2
    labels[lake] = WATER
    labels[_river_mask(rng, height, width)] = WATER

    # Crop parcels: a jittered grid of rectangles, each with its own crop calendar. Most are
    # summer crops (peak in June-July), about a third winter cereals (peak in April-May).
    ph, pw = rng.integers(8, 14), rng.integers(10, 18)
    rows = (np.arange(height) + rng.integers(0, ph)) // ph
    cols = (np.arange(width)[None, :] + rng.integers(0, pw, size=(rows.max() + 1, 1))) // pw
    parcel = rows[:, None] * (width // pw + 2) + cols[rows]
    n_parcels = int(parcel.max()) + 1
    winter = rng.random(n_parcels) < 0.35
    peak = np.where(winter, rng.uniform(3.5, 4.5, n_parcels), rng.uniform(5.0, 6.5, n_parcels))
    amp = rng.uniform(0.7, 0.95, n_parcels)
    spread = np.where(winter, rng.uniform(1.6, 2.2, n_parcels), rng.uniform(1.1, 1.6, n_parcels))
    return (
        labels,
        peak[parcel].astype(np.float32),
        amp[parcel].astype(np.float32),
        spread[parcel].astype(np.float32),
    )


def _river_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A meandering river crossing the scene, bool ``[H, W]``; 2-6 % of the width wide."""
    transpose = bool(rng.integers(0, 2))
    length, across = (width, height) if transpose else (height, width)
    s = np.arange(length, dtype=np.float32)
    wavelength = rng.uniform(0.6, 1.2) * length
    meander = (
        rng.uniform(0.05, 0.12) * across * np.sin(2 * np.pi * s / wavelength + rng.uniform(0, 6.3))
    )
    center = rng.uniform(0.3, 0.7) * across + meander
    half_width = max(1.0, rng.uniform(0.01, 0.03) * across)
    mask = np.abs(np.arange(across, dtype=np.float32)[None, :] - center[:, None]) <= half_width
    return mask.T if transpose else mask


# --------------------------------------------------------------------------- rendering


def _abundances(
    labels: np.ndarray,
    months: np.ndarray,
    crop_peak: np.ndarray,
    crop_amp: np.ndarray,
    crop_width: np.ndarray,
    green_var: np.ndarray,
) -> np.ndarray:
    """Endmember abundances float32 ``[H, W, T, 6]`` (rows sum to 1) per class and month."""
    m = months.astype(np.float32)[None, None, :]  # [1, 1, T]
    summer = 0.5 * (1 + np.cos(2 * np.pi * (m - 6.0) / 12))  # 1 in July, 0 in January
    spring = 0.5 * (1 + np.cos(2 * np.pi * (m - 4.5) / 12))  # grass peaks in May-June
    gv = (0.06 * green_var)[..., None]  # within-class vigour variation
    h, w = labels.shape
    t = m.shape[-1]
    ab = np.zeros((h, w, t, 6), dtype=np.float32)

    # Green cover of each class, then the non-green remainder split per class.
    dm = (m - crop_peak[..., None]) / crop_width[..., None]
    crop_green = 0.04 + crop_amp[..., None] * np.exp(-0.5 * dm**2)
    green = np.select(
        [labels[..., None] == c for c in (WATER, FOREST, CROPLAND, GRASSLAND, BUILT_UP, BARE)],
        [
            0.01 + 0.02 * summer,
            0.0 * summer,  # forest green is its canopy endmember, below
            crop_green,
            0.45 + 0.3 * spring,
            0.08 + 0.08 * summer,
            0.02 + 0.02 * spring,
        ],
    )
    green = np.clip(green + gv, 0.0, 0.98)
    canopy = np.where(labels[..., None] == FOREST, np.clip(0.8 + 0.12 * summer + gv, 0, 0.97), 0.0)
    rest = 1.0 - green - canopy
    ab[..., _EM_GREEN] = green
    ab[..., _EM_CANOPY] = canopy
    lab = np.broadcast_to(labels[..., None], rest.shape)
    ab[..., _EM_WATER] = np.where(lab == WATER, rest, 0)
    ab[..., _EM_DRY] = np.where((lab == FOREST) | (lab == GRASSLAND), rest, 0)
    ab[..., _EM_URBAN] = np.where(lab == BUILT_UP, 0.85 * rest, 0)
    # Cropland after harvest keeps some residue; built-up has some open soil.
    residue = np.where(dm > 1.5, 0.3, 0.0) * rest
    ab[..., _EM_DRY] += np.where(lab == CROPLAND, residue, 0)
    soil = np.where(lab == BUILT_UP, 0.15 * rest, 0)
    soil += np.where(lab == CROPLAND, rest - residue, 0)
    soil += np.where(lab == BARE, rest, 0)
    ab[..., _EM_SOIL] = soil
    return ab


def _endmember_matrix() -> np.ndarray:
    """Endmember reflectances float32 ``[6, 12]`` in registry Sentinel-2 band order."""
    cols = [_ENDMEMBER_BANDS.index(b) for b in MODALITIES["sentinel2_l2a"].bands]
    return _ENDMEMBERS[:, cols].astype(np.float32)


def _render_sentinel2(
    rng: np.random.Generator, labels: np.ndarray, abundance: np.ndarray
) -> np.ndarray:
    """Sentinel-2 L2A DN float32 ``[H, W, T, 12]`` (integer valued, >= 1)."""
    h, w, t, _ = abundance.shape
    refl = abundance.reshape(-1, abundance.shape[-1]) @ _endmember_matrix()
    refl = refl.reshape(h, w, t, -1)
    # Soil moisture / roughness / roof material: a smooth brightness field (weaker on water),
    # a per-date factor for residual atmospheric and illumination differences.
    sigma = _feature_sigma(h, w) / 3
    bright = 1.0 + np.where(labels == WATER, 0.03, 0.08) * _smooth_field(rng, (h, w), sigma)
    per_date = 1.0 + 0.03 * rng.standard_normal(t).astype(np.float32)
    refl *= bright[:, :, None, None]
    refl *= per_date[None, None, :, None]
    # Sensor + compositing noise: ~2 % of the signal plus ~20 DN, from one draw (halves the cost).
    noise = rng.standard_normal(refl.shape, dtype=np.float32)
    noise *= 0.02 * refl + 0.002
    refl += noise
    refl *= 10_000.0
    return np.clip(np.rint(refl, out=refl), 1.0, 15_000.0, out=refl)


def _render_sentinel1(
    rng: np.random.Generator, labels: np.ndarray, green: np.ndarray
) -> np.ndarray:
    """Sentinel-1 backscatter float32 ``[H, W, T, 2]`` in dB (``[vv, vh]``) with speckle."""
    h, w, t = green.shape
    db = (
        _S1_BASE_DB[labels][:, :, None, :]
        + _S1_GREEN_GAIN_DB[labels][:, :, None, :] * green[..., None]
    )
    # Per-pixel roughness / moisture offset and a per-date, per-class offset (wind on water,
    # rain on soil), both in dB.
    offset = _smooth_field(rng, (h, w), _feature_sigma(h, w) / 3)
    db += (1.0 * offset)[:, :, None, None]
    per_date = rng.normal(0.0, 0.6, size=(len(CLASS_NAMES), t, 1)).astype(np.float32)
    db += per_date[labels]
    # Speckle is multiplicative Gamma(L, 1/L) noise on linear power.
    speckle = rng.gamma(_S1_LOOKS, 1.0 / _S1_LOOKS, size=db.shape).astype(np.float32)
    return (db + 10.0 * np.log10(np.maximum(speckle, 1e-6))).astype(np.float32)
