"""AOIs in any CRS (GeoJSON legacy ``crs`` member, GeoPackage CRS, ``crs=`` / ``--aoi-crs``) and
clear errors for areas that cannot be right."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyogrio import raw

from geolatent.platform.area import AreaError, read_area

UTM_BOX = (465181.05, 5079244.89, 466180.53, 5080254.63)  # the eo-learn patch, EPSG:32633
LONLAT = (14.5513, 45.8659, 14.5643, 45.8750)


def test_eolearn_bbox_geojson_as_shipped(real_data: Path):
    path = real_data / "eolearn" / "TestEOPatch" / "bbox.geojson"
    if not path.exists():
        pytest.skip(f"{path} not available")
    geom = read_area(path)
    np.testing.assert_allclose(geom.bounds, LONLAT, atol=2e-4)


def test_geopackage_crs_and_explicit_crs(tmp_path: Path):
    gpkg = tmp_path / "aoi.gpkg"
    raw.write(gpkg, np.array([shapely.to_wkb(shapely.box(*UTM_BOX))], dtype=object), [], [],
              driver="GPKG", geometry_type="Polygon", crs="EPSG:32633")
    np.testing.assert_allclose(read_area(gpkg).bounds, LONLAT, atol=2e-4)
    np.testing.assert_allclose(read_area(UTM_BOX, crs="EPSG:32633").bounds, LONLAT, atol=2e-4)
    plain = tmp_path / "plain.geojson"
    plain.write_text(json.dumps(shapely.geometry.mapping(shapely.box(*UTM_BOX))))
    np.testing.assert_allclose(read_area(plain, crs="EPSG:32633").bounds, LONLAT, atol=2e-4)
    with pytest.raises(AreaError, match="declares CRS EPSG:32633 but EPSG:4326 was given"):
        read_area(gpkg, crs="EPSG:4326")


@pytest.mark.parametrize(("area", "message"), [
    (UTM_BOX, "projected coordinates.*--aoi-crs in the CLI, crs= in Python"),
    ((184.0, 0.0, 185.0, 1.0), "longitude must be in -180..180"),
    ({"type": "FeatureCollection", "features": []}, "holds no geometry"),
    ({"type": "Topology"}, "not a GeoJSON geometry"),
])
def test_bad_areas_are_named(area, message):
    with pytest.raises(AreaError, match=message):
        read_area(area)


def test_garbage_files_are_named(tmp_path: Path):
    for name, text in (("a.geojson", "{not json"), ("a.gpkg", "garbage"),
                       ("a.json", "[1, 2]")):
        (tmp_path / name).write_text(text)
        with pytest.raises(AreaError, match=f"area file .*{name}"):
            read_area(tmp_path / name)
    with pytest.raises(AreaError, match="does not exist"):
        read_area(tmp_path / "missing.geojson")
