"""Prediction over an area crossing the UTM zone 32 / 33 boundary (12 E) from inputs in both
zones: one output grid, data on both sides, nodata where no scene covers the area."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import shapely
from platform_fixtures import make_bundle, s2_source, single_torch_thread  # noqa: F401
from pyproj import Transformer

from geolatent.data.synthetic import make_sample_scene, write_scene_geotiffs
from geolatent.platform.area import plan_prediction
from geolatent.platform.predict import predict_area

LAT = 46.0


def _scene_at(folder: Path, epsg: int, lon_west: float, seed: int) -> None:
    """A 48 x 48 px scene in ``epsg`` whose upper-left corner is at (lon_west, LAT + 0.002)."""
    x, y = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True).transform(
        lon_west, LAT + 0.002)
    scene = make_sample_scene(48, 48, timesteps=1, seed=seed, epsg=epsg,
                              origin=(round(x / 10) * 10, round(y / 10) * 10))
    write_scene_geotiffs(scene, folder)


def test_area_across_two_utm_zones(tmp_path: Path):
    _scene_at(tmp_path / "west", 32632, 11.9945, seed=1)  # zone 32, ends just east of 12 E
    _scene_at(tmp_path / "east", 32633, 11.9995, seed=2)  # zone 33, starts just west of 12 E
    source = s2_source(tmp_path / "west")
    source["paths"].append(str(tmp_path / "east" / "sentinel2_l2a_*.tif"))
    make_bundle(tmp_path / "m", "pixel_regression", [source])
    area = shapely.box(11.996, LAT - 0.0015, 12.0045, LAT + 0.0015)  # ~660 m x 330 m
    plan = plan_prediction(area, ("2024-01-01", "2024-02-01"), crop=16)
    assert {t.window.crs for t in plan.tiles} == {plan.crs}  # one grid for the whole area
    res = predict_area(tmp_path / "m", area, "2024-01-01", "2024-01-31", tmp_path / "map.tif")
    with rasterio.open(res.path) as src:
        assert src.crs.to_string() == plan.crs
        values = src.read(1)
        t = src.transform
        lon_of = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
        xs = t.c + (np.arange(src.width) + 0.5) * t.a
        lons, _ = lon_of.transform(xs, np.full_like(xs, t.f + src.height / 2 * t.e))
    inner = values[2:-2]
    west, east = inner[:, lons < 11.999], inner[:, lons > 12.001]
    assert np.isfinite(west).mean() > 0.9 and np.isfinite(east).mean() > 0.9
    # Beyond the eastern scene's edge (about 12.0057 E... ) nothing is known: nodata there.
    outside = res.path.with_name("outside.tif")
    far = shapely.box(12.0065, LAT - 0.001, 12.009, LAT + 0.001)
    res2 = predict_area(tmp_path / "m", shapely.union(area, far), "2024-01-01", "2024-01-31",
                        outside)
    with rasterio.open(res2.path) as src:
        v = src.read(1)
        xs = src.transform.c + (np.arange(src.width) + 0.5) * src.transform.a
        lons2, _ = lon_of.transform(xs, np.full_like(xs, src.transform.f))
    assert np.isnan(v[:, lons2 > 12.0068]).all()
