"""The built-in sample scene: shapes, units, determinism, class realism, GeoTIFF round trip."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rasterio

from geolatent.data.synthetic import (
    CLASS_NAMES,
    SampleScene,
    make_sample_scene,
    ndvi,
    write_scene_geotiffs,
)
from geolatent.modalities import MODALITIES

WATER, FOREST, CROPLAND, GRASSLAND, BUILT_UP, BARE = range(6)


@pytest.fixture(scope="module")
def scene() -> SampleScene:
    return make_sample_scene(height=64, width=64, timesteps=12, seed=0, year=2024)


def class_mean(values: np.ndarray, labels: np.ndarray, cls: int) -> np.ndarray:
    """Mean of ``values [H, W, ...]`` over the pixels of one class."""
    mask = labels == cls
    assert mask.any(), f"class {CLASS_NAMES[cls]} absent from the scene"
    return values[mask].mean(axis=0)


def test_shapes_dtypes_and_grid(scene: SampleScene) -> None:
    assert scene.sentinel2_l2a.shape == (64, 64, 12, 12)
    assert scene.sentinel2_l2a.dtype == np.float32
    assert scene.sentinel1.shape == (64, 64, 12, 2)
    assert scene.sentinel1.dtype == np.float32
    assert scene.timestamps.shape == (12, 3) and scene.timestamps.dtype == np.int64
    assert scene.labels.shape == (64, 64) and scene.labels.dtype == np.uint8
    assert scene.timestamps[:, 1].tolist() == list(range(12))  # months 0-11
    assert set(scene.timestamps[:, 2].tolist()) == {2024}
    assert [d.month for d in scene.dates] == list(range(1, 13))
    assert scene.crs.to_epsg() == 32633  # a UTM zone
    assert scene.transform.a == 10.0 and scene.transform.e == -10.0
    assert MODALITIES["sentinel2_l2a"].num_bands == scene.sentinel2_l2a.shape[-1]


def test_multi_year_timesteps() -> None:
    s = make_sample_scene(8, 8, timesteps=14, year=2023)
    assert s.timestamps[12].tolist() == [15, 0, 2024]
    assert s.dates[-1].isoformat() == "2024-02-15"


def test_deterministic_by_seed(scene: SampleScene) -> None:
    again = make_sample_scene(height=64, width=64, timesteps=12, seed=0, year=2024)
    np.testing.assert_array_equal(again.sentinel2_l2a, scene.sentinel2_l2a)
    np.testing.assert_array_equal(again.sentinel1, scene.sentinel1)
    np.testing.assert_array_equal(again.labels, scene.labels)
    other = make_sample_scene(height=64, width=64, timesteps=12, seed=1)
    assert not np.array_equal(other.labels, scene.labels)


def test_value_ranges_and_units(scene: SampleScene) -> None:
    s2, s1 = scene.sentinel2_l2a, scene.sentinel1
    assert np.isfinite(s2).all() and np.isfinite(s1).all()
    # L2A DN (reflectance x 10000), integer valued, never the 0 nodata value.
    assert s2.min() >= 1 and s2.max() <= 15000
    assert np.array_equal(s2, np.rint(s2))
    assert 200 < np.median(s2) < 5000  # DN, not 0-1 reflectance
    # Backscatter in dB: mostly -30..+5, VH below VV on average by about 6-8 dB.
    assert np.quantile(s1, 0.01) > -40 and np.quantile(s1, 0.99) < 8
    gap = (s1[..., 0] - s1[..., 1]).mean()
    assert 5.0 < gap < 9.0


def test_all_classes_present_and_coherent(scene: SampleScene) -> None:
    counts = np.bincount(scene.labels.ravel(), minlength=len(CLASS_NAMES))
    assert (counts > 0).all(), dict(zip(CLASS_NAMES, counts.tolist(), strict=True))
    # Spatial coherence: most 4-neighbours share the class (regions, not salt and pepper).
    lab = scene.labels
    same = np.concatenate([(lab[1:] == lab[:-1]).ravel(), (lab[:, 1:] == lab[:, :-1]).ravel()])
    assert same.mean() > 0.85


def test_spectra_and_seasons_are_realistic(scene: SampleScene) -> None:
    labels = scene.labels
    nd = ndvi(scene.sentinel2_l2a)  # [H, W, T]
    nd_mean = {c: class_mean(nd, labels, c) for c in range(len(CLASS_NAMES))}
    annual = {c: float(v.mean()) for c, v in nd_mean.items()}
    # Water has negative NDVI; vegetation beats bare soil and built-up.
    assert annual[WATER] < 0
    assert annual[FOREST] > 0.6 > annual[BARE]
    assert annual[FOREST] > annual[BUILT_UP] + 0.4
    assert annual[GRASSLAND] > annual[BARE]
    # Cropland peaks in late spring / summer (May-July) and is low in winter; forest is stable.
    crop = nd_mean[CROPLAND]
    assert int(np.argmax(crop)) in (4, 5, 6)
    assert crop.max() - crop[[0, 1, 11]].mean() > 0.3
    assert np.ptp(nd_mean[FOREST]) < 0.15
    # Water is dark in the NIR; vegetation shows the red edge (B05 < B06 < B07 < B08).
    b = MODALITIES["sentinel2_l2a"].band_index
    s2 = scene.sentinel2_l2a
    water = class_mean(s2, labels, WATER).mean(axis=0)
    forest = class_mean(s2, labels, FOREST).mean(axis=0)
    bare = class_mean(s2, labels, BARE).mean(axis=0)
    built = class_mean(s2, labels, BUILT_UP).mean(axis=0)
    assert water[b("B08")] < 300 and water[b("B02")] > water[b("B08")]
    assert forest[b("B05")] < forest[b("B06")] < forest[b("B07")] < forest[b("B08")]
    # Bare soil brightens with wavelength from blue to SWIR-1; built-up is bright and flat.
    assert bare[b("B02")] < bare[b("B04")] < bare[b("B08")] < bare[b("B11")]
    visible = built[[b("B02"), b("B03"), b("B04")]]
    assert visible.min() > 1200 and np.ptp(visible) < 500
    # Sentinel-1: water darkest, built-up brightest in VV.
    vv = {c: float(class_mean(scene.sentinel1[..., 0], labels, c).mean()) for c in range(6)}
    assert vv[WATER] < -17 and vv[BUILT_UP] > -6
    assert vv[WATER] < min(vv[FOREST], vv[CROPLAND], vv[GRASSLAND]) < vv[BUILT_UP]


def test_fast_and_scales(scene: SampleScene) -> None:
    start = time.perf_counter()
    make_sample_scene(64, 64, 12, seed=3)
    assert time.perf_counter() - start < 0.5
    big = make_sample_scene(256, 192, timesteps=2, seed=4)  # non-square, larger
    assert big.sentinel2_l2a.shape == (256, 192, 2, 12)
    assert (np.bincount(big.labels.ravel(), minlength=6) > 0).all()


def test_geotiff_round_trip(scene: SampleScene, tmp_path) -> None:
    paths = write_scene_geotiffs(scene, tmp_path)
    assert set(paths) == {"sentinel2_l2a", "sentinel1", "labels"}
    assert len(paths["sentinel2_l2a"]) == len(paths["sentinel1"]) == 12
    for name, array in scene.modalities.items():
        bands = MODALITIES[name].bands
        for t in (0, 6):
            path = paths[name][t]
            assert scene.dates[t].isoformat() in path.name
            with rasterio.open(path) as src:
                assert src.crs == scene.crs
                assert src.transform == scene.transform
                assert src.descriptions == bands
                assert src.tags()["date"] == scene.dates[t].isoformat()
                data = np.moveaxis(src.read(), 0, -1)
            np.testing.assert_array_equal(data.astype(np.float32), array[:, :, t])
    with rasterio.open(paths["labels"][0]) as src:
        np.testing.assert_array_equal(src.read(1), scene.labels)
        assert src.tags()["class_names"].split(",") == list(CLASS_NAMES)
        assert src.colormap(1)[WATER][:3] != src.colormap(1)[FOREST][:3]
