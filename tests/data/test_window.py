"""Windows: UTM choice, grid alignment, tiling of boxes / GeoJSON / labels, crops."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from shapely.geometry import Point, box, mapping

from geolatent.data.window import (
    Window,
    months_in_range,
    tile_windows,
    utm_crs_for,
    windows_from_bbox,
    windows_from_geojson,
    windows_from_labels,
    year_range,
)

YEAR = year_range(2020)


def test_utm_zone_from_location():
    assert utm_crs_for(4.5, 43.6) == "EPSG:32631"  # Camargue
    assert utm_crs_for(-54.5, -25.3) == "EPSG:32721"  # southern hemisphere
    assert utm_crs_for(6.6, 0.3) == "EPSG:32632"  # São Tomé, just north of the equator
    assert utm_crs_for(179.99, 10) == "EPSG:32660"
    assert utm_crs_for(-180.0, 10) == "EPSG:32601"


def test_from_bounds_is_grid_aligned_and_covers_the_box():
    w = Window.from_bounds((4.50, 43.58, 4.53, 43.60), time_range=YEAR)
    assert w.crs == "EPSG:32631"
    t = w.transform
    assert t.a == 10 and t.e == -10 and t.c % 10 == 0 and t.f % 10 == 0
    lon0, lat0, lon1, lat1 = w.bounds_wgs84
    assert lon0 <= 4.50 and lat0 <= 43.58 and lon1 >= 4.53 and lat1 >= 43.60
    assert 2400 / 10 < w.width < 2500 / 10 + 2  # ~2.4 km wide
    lat, lon = w.latlon
    assert 43.58 < lat < 43.60 and 4.50 < lon < 4.53


def test_window_validation_and_name():
    with pytest.raises(ValueError, match="empty"):
        Window("EPSG:32631", (10, 10, 10, 20), YEAR)
    with pytest.raises(ValueError, match="start < end"):
        Window("EPSG:32631", (0, 0, 1, 1), (datetime(2021, 1, 1), datetime(2020, 1, 1)))
    w = Window("EPSG:32631", (0, -10, 256, 246), ("2020-01-01", "2021-01-01T00:00:00Z"))
    assert w.time_range == YEAR  # strings and aware datetimes become naive UTC
    assert w.name == "epsg32631_10m_0_-10_256x256_20200101-20210101"
    assert Window.from_dict(json.loads(json.dumps(w.to_dict()))) == w


def test_months():
    assert len(months_in_range(*YEAR)) == 12
    assert months_in_range(datetime(2020, 11, 15), datetime(2021, 2, 1)) == [
        (2020, 11),
        (2020, 12),
        (2021, 1),
    ]


def test_split_into_samples_keeps_the_grid():
    w = Window("EPSG:32631", (512, -1024, 768, -768), YEAR)
    parts = w.split(128)
    assert [(r, c) for r, c, _ in parts] == [(0, 0), (0, 128), (128, 0), (128, 128)]
    assert parts[3][2].pixel_bounds == (640, -896, 768, -768)
    assert parts[3][2].transform.c == 6400 and parts[3][2].transform.f == 8960
    with pytest.raises(ValueError):
        w.split(100)


def test_tiling_is_on_a_global_grid_and_covers_the_area():
    bbox = (4.49, 43.575, 4.55, 43.61)
    tiles = windows_from_bbox(bbox, time_range=YEAR)
    assert tiles and all(t.shape == (256, 256) for t in tiles)
    assert all(t.pixel_bounds[0] % 256 == 0 and t.pixel_bounds[1] % 256 == 0 for t in tiles)
    union = box(*tiles[0].bounds)
    for t in tiles[1:]:
        union = union.union(box(*t.bounds))
    area = Window.from_bounds(bbox, time_range=YEAR)
    assert union.contains(box(*area.bounds).buffer(-10))
    # a sub-area gives a subset of the same tiles (stable names for resuming)
    sub = windows_from_bbox((4.50, 43.58, 4.51, 43.59), time_range=YEAR)
    assert {t.name for t in sub} <= {t.name for t in tiles}


def test_tiling_across_utm_zones_uses_each_zone():
    tiles = windows_from_bbox((5.98, 45.0, 6.02, 45.01), time_range=YEAR)
    assert {t.crs for t in tiles} == {"EPSG:32631", "EPSG:32632"}
    fixed = windows_from_bbox((5.98, 45.0, 6.02, 45.01), time_range=YEAR, crs="EPSG:32631")
    assert {t.crs for t in fixed} == {"EPSG:32631"}


def test_windows_from_geojson_tiles_only_the_polygon(tmp_path):
    # An L-shaped area: the empty corner of its bounding box gets no tiles.
    w = Window.from_bounds((4.49, 43.575, 4.55, 43.61), time_range=YEAR)
    x0, y0, x1, y1 = w.bounds_wgs84
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    poly = box(x0, y0, x1, ym).union(box(x0, ym, xm, y1))
    path = tmp_path / "area.geojson"
    feature = {"type": "Feature", "geometry": mapping(poly), "properties": {}}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    from_poly = windows_from_geojson(path, time_range=YEAR)
    from_box = windows_from_bbox((x0, y0, x1, y1), time_range=YEAR)
    assert 0 < len(from_poly) < len(from_box)
    assert len(tile_windows(poly, time_range=YEAR)) == len(from_poly)


def test_windows_from_labels_are_centred():
    pts = [Point(4.51, 43.59), Point(-54.5, -25.3)]
    ws = windows_from_labels(pts, time_range=YEAR, size_px=64)
    assert [w.crs for w in ws] == ["EPSG:32631", "EPSG:32721"]
    assert all(w.shape == (64, 64) for w in ws)
    lat, lon = ws[0].latlon
    assert abs(lat - 43.59) < 1e-3 and abs(lon - 4.51) < 1e-3
    big = windows_from_labels([box(4.5, 43.58, 4.52, 43.60)], time_range=YEAR, size_px=16)[0]
    assert big.width > 160  # grown to cover a ~1.6 km polygon
