"""``embed`` reaches pixels through the data layer: any CRS and resolution is warped onto the
output grid and equals embedding the same data pre-warped by rasterio; ``--align-to`` puts the
embedding on a given grid; ``--stack`` reads one multi-sensor stack (Earth Engine convention)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject
from typer.testing import CliRunner

from geolatent.cli import app
from geolatent.data.io.grid import OutputGrid
from geolatent.inference.embed_rasters import embed_geotiffs
from geolatent.inference.file_inputs import RasterInput, RasterInputError, stack_inputs
from geolatent.modalities import MODALITIES
from geolatent.normalize import normalization_stats

from .conftest import S1, S2, embed_args, flat, read_embedding, write_tif

runner = CliRunner()
DATE = "2024-01-15"


def _prewarp(src_path: Path, grid: OutputGrid, out: Path, resampling: Resampling) -> Path:
    """``src_path`` warped by rasterio onto ``grid`` (what a user would do before embedding)."""
    with rasterio.open(src_path) as src:
        data = np.full((src.count, grid.height, grid.width), np.nan, np.float32)
        reproject(rasterio.band(src, list(range(1, src.count + 1))), data,
                  src_nodata=src.nodata, dst_transform=grid.transform, dst_crs=grid.crs,
                  dst_nodata=np.nan, resampling=resampling, num_threads=1, warp_mem_limit=64)
        names = list(src.descriptions)
    return write_tif(out, data, crs=grid.crs.to_string(), transform=grid.transform,
                     descriptions=names, nodata=float("nan"))


def _assert_same_embedding(a: Path, b: Path) -> None:
    ea, eb = read_embedding(a), read_embedding(b)
    assert ea.shape == eb.shape
    assert (np.isnan(ea) == np.isnan(eb)).all() and np.isfinite(ea).any()
    np.testing.assert_allclose(ea, eb, rtol=0, atol=1e-4)


def test_lonlat_input_equals_prewarped(nano, small_scene, tmp_path) -> None:
    s2 = np.moveaxis(small_scene.sentinel2_l2a[:, :, 0], -1, 0).astype(np.float32)
    lonlat = Affine(1e-4, 0.0, 14.50, 0.0, -1e-4, 45.90)  # ~7.8 m x 11.1 m pixels
    geo = write_tif(tmp_path / "s2_lonlat.tif", s2, crs="EPSG:4326", transform=lonlat,
                    descriptions=list(MODALITIES[S2].bands))
    res = embed_geotiffs(nano, {S2: [RasterInput(geo, DATE)]}, tmp_path / "e_geo.tif")
    with rasterio.open(geo) as src:
        grid = OutputGrid.covering([(src.crs, tuple(src.bounds))])
    assert res.crs.to_epsg() == 32633 and res.transform == grid.transform @ Affine.scale(4)
    warped = _prewarp(geo, grid, tmp_path / "s2_utm.tif", Resampling.bilinear)
    ref = embed_geotiffs(nano, {S2: [RasterInput(warped, DATE)]}, tmp_path / "e_ref.tif")
    assert ref.transform == res.transform
    _assert_same_embedding(res.path, ref.path)


def test_native_30_m_landsat_equals_prewarped(nano, tmp_path) -> None:
    stats = normalization_stats()["landsat"]
    order = stats["band_order"]
    rng = np.random.default_rng(3)
    h = w = 12  # 360 m at 30 m
    base = rng.uniform(0.8, 1.2, (1, h, w))
    mean = np.array(stats["mean"])[:, None, None]
    data = (mean * base + rng.normal(0, 200, (len(order), h, w))).astype(np.float32)
    t30 = Affine(30.0, 0.0, 465_180.0, 0.0, -30.0, 5_080_260.0)
    native = write_tif(tmp_path / "landsat_30m.tif", data, transform=t30, descriptions=order)
    res = embed_geotiffs(nano, {"landsat": [RasterInput(native, DATE)]}, tmp_path / "e30.tif")
    grid = OutputGrid.covering([(CRS.from_epsg(32633), (465_180.0, 5_079_900.0, 465_540.0,
                                                         5_080_260.0))])
    assert (grid.width, grid.height, grid.resolution) == (36, 36, 10.0)
    assert res.transform == grid.transform @ Affine.scale(4) and (res.height, res.width) == (9, 9)
    warped = _prewarp(native, grid, tmp_path / "landsat_10m.tif", Resampling.bilinear)
    ref = embed_geotiffs(nano, {"landsat": [RasterInput(warped, DATE)]}, tmp_path / "ref.tif")
    _assert_same_embedding(res.path, ref.path)


def test_align_to_puts_the_embedding_on_that_grid(nano, small_scene_files, tmp_path) -> None:
    # a grid off the global 10 m grid (like the eo-learn patch's), inside the scene
    t = Affine(10.0, 0.0, 400_021.05, 0.0, -10.0, 5_099_984.63)
    target = write_tif(tmp_path / "grid.tif", np.zeros((1, 24, 28), np.float32), transform=t)
    out = tmp_path / "aligned.tif"
    args = [*embed_args(small_scene_files, out), "--random-weights", "nano", "--align-to",
            str(target)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as src:
        assert src.transform == t @ Affine.scale(4) and (src.height, src.width) == (6, 7)
    bad = runner.invoke(app, [*args, "--crs", "EPSG:32633"])
    assert bad.exit_code == 2 and "either --align-to or --crs" in flat(bad.output)


# CropHarvest-like export: S1 and S2 per timestep, weather and terrain besides
S2_CH = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]  # no B1, no B10
STATIC = ["elevation", "slope"]


def _stack(small_scene, tmp_path: Path) -> tuple[Path, list[str]]:
    desc, layers = [], []
    s2_names = list(MODALITIES[S2].bands)
    for k in range(2):
        suffix = "" if k == 0 else f"_{k}"
        for n in ["VV", "VH"]:
            desc.append(n + suffix)
            layers.append(small_scene.sentinel1[:, :, k, ["VV", "VH"].index(n)])
        for n in S2_CH:
            desc.append(n + suffix)
            layers.append(small_scene.sentinel2_l2a[:, :, k, s2_names.index(
                MODALITIES[S2].bands[MODALITIES[S2].band_index(n)])])
        desc.append("temperature_2m" + suffix)
        layers.append(np.full(small_scene.sentinel1.shape[:2], 280.0))
    for n in STATIC:
        desc.append(n)
        layers.append(np.full(small_scene.sentinel1.shape[:2], 100.0))
    path = write_tif(tmp_path / "stack.tif", np.stack(layers).astype(np.float32),
                     transform=small_scene.transform, descriptions=desc)
    return path, [d.isoformat() for d in small_scene.dates]


def test_stack_equals_separate_files(nano, small_scene, tmp_path) -> None:
    path, dates = _stack(small_scene, tmp_path)
    inputs, ignored = stack_inputs(path, dates)
    assert set(inputs) == {S2, S1} and len(inputs[S2]) == len(inputs[S1]) == 2
    assert ignored == ["B9", "temperature_2m", *STATIC]  # B9 without B1: a partial bandset
    out = tmp_path / "stack_emb.tif"
    result = runner.invoke(app, ["embed", "--out", str(out), "--random-weights", "nano",
                                 "--stack", str(path), "--dates", ",".join(dates)])
    assert result.exit_code == 0, result.output
    assert "ignored bands (not model inputs): B9, temperature_2m, elevation, slope" in flat(
        result.output)
    # the same data as separate per-date files of each modality
    s2_names = list(MODALITIES[S2].bands)
    keep = [s2_names.index(MODALITIES[S2].bands[MODALITIES[S2].band_index(n)]) for n in S2_CH
            if n != "B9"]
    files = {S2: [], S1: []}
    for k, d in enumerate(dates):
        s2 = np.moveaxis(small_scene.sentinel2_l2a[:, :, k, keep], -1, 0).astype(np.float32)
        f2 = write_tif(tmp_path / f"s2_{k}.tif", s2, transform=small_scene.transform,
                       descriptions=[s2_names[i] for i in keep])
        s1 = np.moveaxis(small_scene.sentinel1[:, :, k], -1, 0).astype(np.float32)
        f1 = write_tif(tmp_path / f"s1_{k}.tif", s1, transform=small_scene.transform,
                       descriptions=["vv", "vh"])
        files[S2].append(RasterInput(f2, d))
        files[S1].append(RasterInput(f1, d))
    ref = embed_geotiffs(nano, files, tmp_path / "files_emb.tif")
    np.testing.assert_array_equal(read_embedding(out), read_embedding(ref.path))
    with rasterio.open(out) as src:
        assert json.dumps(src.tags()["dates"]) == json.dumps(",".join(dates))


def test_stack_errors_say_what_to_change(small_scene, tmp_path) -> None:
    path, dates = _stack(small_scene, tmp_path)
    with pytest.raises(RasterInputError, match=r"--dates has 1 dates but .* holds 2 timesteps"):
        stack_inputs(path, dates[:1])
    bare = write_tif(tmp_path / "bare.tif", np.zeros((3, 8, 8), np.float32))
    with pytest.raises(RasterInputError, match="--stack needs band descriptions"):
        stack_inputs(bare, dates)
    result = runner.invoke(app, ["embed", "--out", str(tmp_path / "x.tif"), "--random-weights",
                                 "nano", "--stack", str(path)])
    assert result.exit_code == 2 and "--stack needs --dates" in flat(result.output)
