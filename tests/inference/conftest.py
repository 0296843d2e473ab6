"""Fixtures of the inference tests: a real random-weight Nano model and small real GeoTIFFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geolatent.data.synthetic import SampleScene, make_sample_scene, write_scene_geotiffs
from geolatent.inference.demo import random_model
from geolatent.inference.file_inputs import RasterInput

S2 = "sentinel2_l2a"
S1 = "sentinel1"


# Sentinel-2 L1C band order of the eo-learn scenes (13 bands, B10 included).
L1C_BANDS = [
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
]


def write_tif(
    path: Path,
    data: np.ndarray,
    *,
    crs: str = "EPSG:32633",
    transform: Affine | None = None,
    descriptions: list[str] | None = None,
    nodata: float | None = None,
    tiled: bool = True,
) -> Path:
    """Write ``data [C, H, W]`` as a GeoTIFF (10 m pixels by default)."""
    c, h, w = data.shape
    transform = transform or Affine(10.0, 0.0, 465_180.0, 0.0, -10.0, 5_080_260.0)
    profile = dict(
        driver="GTiff", width=w, height=h, count=c, dtype=data.dtype.name, crs=crs,
        transform=transform, nodata=nodata,
    )  # fmt: skip
    if tiled and h >= 16 and w >= 16:
        profile.update(tiled=True, blockxsize=16, blockysize=16)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
    return path


def read_embedding(path: Path) -> np.ndarray:
    """An embedding GeoTIFF as ``[h, w, D]``."""
    with rasterio.open(path) as src:
        return np.moveaxis(src.read(), 0, -1)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis."""
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="session")
def nano():
    """OlmoEarth v1 Nano with random weights (seeded): the real model, untrained."""
    return random_model("nano", seed=0)


@pytest.fixture(scope="session")
def small_scene() -> SampleScene:
    return make_sample_scene(height=32, width=32, timesteps=2, seed=7)


@pytest.fixture(scope="session")
def small_scene_files(small_scene, tmp_path_factory) -> dict[str, list[RasterInput]]:
    """The small scene as one GeoTIFF per modality and date, as :class:`RasterInput` lists."""
    out = tmp_path_factory.mktemp("small_scene")
    files = write_scene_geotiffs(small_scene, out)
    return {
        m: [RasterInput(p, d) for p, d in zip(files[m], small_scene.dates, strict=True)]
        for m in (S2, S1)
    }


def embed_args(files, out) -> list[str]:
    """``embed`` CLI arguments ``--s2 ... --s2-dates ... --s1 ... --s1-dates ...`` of ``files``."""
    args = ["embed", "--out", str(out)]
    for opt, m in (("--s2", S2), ("--s1", S1)):
        for ri in files[m]:
            args += [opt, str(ri.path)]
        args += [f"{opt}-dates", ",".join(ri.dates[0].isoformat() for ri in files[m])]
    return args


def flat(text: str) -> str:
    """CLI output with every run of whitespace made one space: assertions on messages then hold
    whatever the terminal width (a long path must not make a test depend on where it wraps)."""
    return " ".join(text.split())
