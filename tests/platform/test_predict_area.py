"""Prediction over an area: plan geometry, seamless tiling, nodata, resume, COG outputs."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from platform_fixtures import (  # noqa: F401
    make_bundle,
    s2_source,
    scene_box,
    single_torch_thread,
    write_scene,
)

from geolatent.data.io.cog import is_cloud_optimized
from geolatent.data.window import WGS84, reproject_geometry
from geolatent.model import build_model
from geolatent.model.checkpoint import save_model
from geolatent.platform.area import blend_weights, plan_prediction
from geolatent.platform.classes import NODATA_CLASS
from geolatent.platform.predict import predict_area

START, END = "2024-01-01", "2024-02-29"  # two monthly composites (inclusive end)


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> tuple[Path, object]:
    folder = tmp_path_factory.mktemp("scene")
    return folder, write_scene(folder, height=64, width=64, timesteps=2, seed=3)


def test_plan_covers_the_area_with_crops():
    area = shapely.box(14.55, 45.86, 14.56, 45.865)
    plan = plan_prediction(area, ("2024-01-01", "2024-03-01"), crop=16, stride=8, tile=24)
    assert plan.crs == "EPSG:32633" and plan.tile == 24 and plan.stride == 8
    cores = [t.core for t in plan.tiles]
    covered = np.zeros((plan.height, plan.width), int)
    c0, r0 = plan.bounds[:2]
    for t in plan.tiles:
        a, b, c, d = t.core
        covered[b - r0 : d - r0, a - c0 : c - c0] += 1
        rows, cols = plan.crop_origins(t)
        ec0, er0, ec1, er1 = t.window.pixel_bounds
        assert rows.min() >= er0 and rows.max() + 16 <= er1
        assert cols.min() >= ec0 and cols.max() + 16 <= ec1
        assert (rows % 8 == 0).all() and (cols % 8 == 0).all()  # the global crop grid
    assert covered.max() == 1 and len(set(cores)) == len(cores)  # tiles never overlap
    inside = shapely.contains_xy(plan.area, *np.meshgrid(
        (np.arange(c0, plan.bounds[2]) + 0.5) * 10, -(np.arange(r0, plan.bounds[3]) + 0.5) * 10))
    assert covered[inside].min() == 1  # every pixel of the area belongs to a tile
    w = blend_weights(16, 8, "trim")
    assert w.sum() == 64 and w[4:12, 4:12].min() == 1
    lin = blend_weights(16, 8)
    assert lin[8, 8] > lin[0, 0] > 0


def test_tiling_leaves_no_seams(tmp_path: Path, scene_dir):
    folder, scene = scene_dir
    make_bundle(tmp_path / "m", "pixel_regression", [s2_source(folder)])
    area = scene_box(scene, inset_px=4)
    small = predict_area(tmp_path / "m", area, START, END, tmp_path / "small.tif", tile=16,
                         batch_size=64)
    large = predict_area(tmp_path / "m", area, START, END, tmp_path / "large.tif", tile=128,
                         batch_size=64)
    assert small.tiles_total > 4 * large.tiles_total
    with rasterio.open(small.path) as a, rasterio.open(large.path) as b:
        x, y = a.read(1), b.read(1)
        assert a.transform == b.transform and a.crs == b.crs
    assert np.isfinite(x).mean() > 0.9
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_nodata_outside_imagery_and_small_areas(tmp_path: Path, scene_dir):
    folder, scene = scene_dir
    make_bundle(tmp_path / "m", "segmentation", [s2_source(folder)])
    # Half the area lies east of the scene: no input there.
    box = scene_box(scene)
    x0, y0, x1, y1 = box.bounds
    area = shapely.box(x0 + (x1 - x0) / 2, y0 + 0.0001, x1 + (x1 - x0), y1 - 0.0001)
    res = predict_area(tmp_path / "m", area, START, END, tmp_path / "half.tif")
    with rasterio.open(res.path) as src:
        data = src.read(1)
        cols = (np.arange(src.width) + 0.5) * src.transform.a + src.transform.c
    scene_x1 = scene.transform.c + 64 * 10
    assert (data[:, cols > scene_x1 + 5] == NODATA_CLASS).all()
    assert (data[:, cols < scene_x1 - 5] != NODATA_CLASS).mean() > 0.9
    # An area of a few pixels, smaller than the 16 px crop.
    c = reproject_geometry(shapely.Point(scene.transform.c + 305, scene.transform.f - 305),
                           scene.crs.to_string(), WGS84)
    tiny = predict_area(tmp_path / "m", c.buffer(0.0002), START, END, tmp_path / "tiny.tif")
    with rasterio.open(tiny.path) as src:
        t = src.read(1)
    assert t.shape[0] < 16 and t.shape[1] < 16 and (t != NODATA_CLASS).sum() >= 4


class _Stop(Exception):
    pass


def test_resume_after_interruption(tmp_path: Path, scene_dir):
    folder, scene = scene_dir
    make_bundle(tmp_path / "m", "segmentation", [s2_source(folder)])
    area = scene_box(scene, inset_px=2)
    out = tmp_path / "map.tif"

    def stop_after_three(done: int, total: int) -> None:
        if done >= 3:
            raise _Stop

    with pytest.raises(_Stop):
        predict_area(tmp_path / "m", area, START, END, out, tile=16, progress=stop_after_three)
    assert not out.exists()
    assert len(list((tmp_path / "map.tif.work").glob("tile_*.npy"))) == 3
    resumed = predict_area(tmp_path / "m", area, START, END, out, tile=16)
    assert resumed.tiles_resumed == 3 and resumed.tiles_run == resumed.tiles_total - 3
    assert not (tmp_path / "map.tif.work").exists()
    fresh = predict_area(tmp_path / "m", area, START, END, tmp_path / "fresh.tif", tile=16)
    with rasterio.open(out) as a, rasterio.open(fresh.path) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    again = predict_area(tmp_path / "m", area, START, END, out, tile=16)
    assert again.tiles_run == 0 and again.tiles_resumed == again.tiles_total


def test_class_cog_and_polygons(tmp_path: Path, scene_dir):
    folder, scene = scene_dir
    fm = make_bundle(tmp_path / "m", "segmentation", [s2_source(folder)], num_classes=3)
    area = scene_box(scene, inset_px=3)
    res = predict_area(tmp_path / "m", area, START, END, tmp_path / "map.tif",
                       vector_path=tmp_path / "map.geojson", tile=32, blend="trim")
    ok, problems = is_cloud_optimized(res.path)
    assert ok, problems
    with rasterio.open(res.path) as src:
        assert src.crs.to_string() == "EPSG:32633" and src.dtypes[0] == "uint8"
        assert src.nodata == NODATA_CLASS and src.res == (10.0, 10.0)
        assert src.transform.c % 10 == 0 and src.transform.f % 10 == 0  # on the global grid
        cmap = src.colormap(1)
        assert cmap[0][:3] == fm.classes.colors[0] and cmap[NODATA_CLASS][3] == 0
        assert json.loads(src.tags()["class_names"]) == list(fm.classes.names)
        data = src.read(1)
    assert set(np.unique(data)) <= {0, 1, 2, NODATA_CLASS}
    fc = json.loads((tmp_path / "map.geojson").read_text())
    assert fc["features"] and {f["properties"]["name"] for f in fc["features"]} <= set(
        fm.classes.names)
    lon, lat = shapely.get_coordinates(shapely.geometry.shape(fc["features"][0]["geometry"]))[0]
    assert 13 < lon < 16 and 45 < lat < 47  # lon/lat, not metres


def test_embedding_map_is_on_the_patch_grid(tmp_path: Path, scene_dir):
    """A plain (not fine-tuned) model's map is its embedding map: D bands at 10 * p m."""
    folder, scene = scene_dir
    save_model(build_model("nano"), tmp_path / "plain")
    res = predict_area(tmp_path / "plain", scene_box(scene, inset_px=8), START, END,
                       tmp_path / "emb.tif", sources=[s2_source(folder)], patch_size=8, crop=16)
    assert res.kind == "embedding"
    with rasterio.open(res.path) as src:
        assert src.count == 128 and src.res == (80.0, 80.0) and src.dtypes[0] == "float32"
        assert src.tags()["geolatent_product"] == "embedding"
        data = src.read()
    assert np.isfinite(data).all(axis=0).mean() > 0.5


@pytest.mark.slow  # >= 5 s (pytest --durations)
def test_ranks_share_tiles_and_dask_materializes(tmp_path: Path, scene_dir):
    folder, scene = scene_dir
    make_bundle(tmp_path / "m", "segmentation", [s2_source(folder)])
    area = scene_box(scene, inset_px=2)
    ref = predict_area(tmp_path / "m", area, START, END, tmp_path / "ref.tif", tile=16)
    # Two ranks (as under torchrun): rank 1 writes its share, rank 0 its own and the COG.
    rank1 = threading.Thread(target=predict_area, args=(tmp_path / "m", area, START, END,
                                                        tmp_path / "ranked.tif"),
                             kwargs=dict(tile=16, rank=1, world_size=2))
    rank1.start()
    r0 = predict_area(tmp_path / "m", area, START, END, tmp_path / "ranked.tif", tile=16,
                      rank=0, world_size=2, executor="dask", workers=2)
    rank1.join()
    assert r0.tiles_run == (ref.tiles_total + 1) // 2
    with rasterio.open(ref.path) as a, rasterio.open(r0.path) as b:
        np.testing.assert_array_equal(a.read(), b.read())

