"""Reading labels from every supported format, checking them, and the class table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyogrio import raw

from geolatent.data.window import reproject_geometry
from geolatent.platform.classes import IGNORE_INDEX, ClassTable, canonical_value
from geolatent.platform.labels import (
    LabelError,
    check_labels,
    detect_format,
    empty_class_problems,
    read_labels,
)

POINTS = [(14.56, 45.87), (14.57, 45.875), (14.58, 45.88)]


def _feature(geom, **props) -> dict:
    return {"type": "Feature", "geometry": shapely.geometry.mapping(geom), "properties": props}


def _write_geojson(path: Path, feats: list[dict]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def test_geojson_points_and_polygons_with_times(tmp_path: Path):
    poly = shapely.box(14.55, 45.86, 14.552, 45.862)
    path = _write_geojson(tmp_path / "l.geojson", [
        _feature(shapely.Point(POINTS[0]), label="forest", start_time="2024-03-01",
                 end_time="2024-06-30"),
        _feature(poly, label="water", start_time="2024-01-01T00:00:00Z", end_time=None),
    ])
    labels = read_labels(path, time_column="start_time", end_time_column="end_time")
    assert len(labels) == 2 and labels.kind == "class"
    assert list(labels.values) == ["forest", "water"]
    assert labels.is_point.tolist() == [True, False]
    assert str(labels.start[0]) == "2024-03-01T00:00:00"
    assert np.isnat(labels.end[1])
    assert shapely.equals_exact(labels.geometries[1], poly, 1e-12)


def test_gpkg_in_projected_crs_is_read_as_lonlat(tmp_path: Path):
    utm = [reproject_geometry(shapely.Point(p), "EPSG:4326", "EPSG:32633") for p in POINTS]
    path = tmp_path / "l.gpkg"
    raw.write(path, np.array(shapely.to_wkb(utm), dtype=object),
              [np.array([1, 2, 2]), np.array(["a", "b", "b"], dtype=object)],
              ["code", "name"], driver="GPKG", geometry_type="Point", crs="EPSG:32633")
    labels = read_labels(path, field="code")
    assert [canonical_value(v) for v in labels.values] == [1, 2, 2]
    xy = shapely.get_coordinates(labels.geometries.astype(object))
    np.testing.assert_allclose(xy, np.array(POINTS), atol=1e-7)


def test_shapefile_regression_values(tmp_path: Path):
    geoms = [shapely.Point(p).buffer(0.001) for p in POINTS]
    path = tmp_path / "l.shp"
    raw.write(path, np.array(shapely.to_wkb(geoms), dtype=object),
              [np.array([1.5, 2.5, 3.0])], ["height"], driver="ESRI Shapefile",
              geometry_type="Polygon", crs="EPSG:4326")
    labels = read_labels(path, kind="value", field="height")
    checked, problems = check_labels(labels)
    assert checked.values.dtype == np.float64
    np.testing.assert_allclose(checked.values, [1.5, 2.5, 3.0])
    assert not problems
    assert detect_format(tmp_path) == "shapefile"


def test_csv_lat_lon_columns(tmp_path: Path):
    path = tmp_path / "l.csv"
    classes = ["2", "2.0", "maize"]
    rows = ["Latitude,Longitude,crop,date"] + [
        f"{lat},{lon},{c},2024-05-0{i + 1}"
        for i, ((lon, lat), c) in enumerate(zip(POINTS, classes, strict=True))
    ]
    path.write_text("\n".join(rows) + "\n")
    labels = read_labels(path, field="crop", time_column="date")
    assert labels.values.tolist() == [2, 2, "maize"]  # "2" and "2.0" are one class
    xy = shapely.get_coordinates(labels.geometries.astype(object))
    np.testing.assert_allclose(xy, np.array(POINTS))
    assert (labels.start == labels.end).all()  # one time column: an instant


def test_studio_export(tmp_path: Path):
    task_geom = shapely.box(14.55, 45.86, 14.56, 45.87)
    _write_geojson(tmp_path / "annotation_task_features.geojson", [
        _feature(task_geom, oe_annotations_task_id="t1", oe_start_time="2024-02-01T00:00:00+00:00",
                 oe_end_time="2024-05-01T00:00:00+00:00"),
    ])
    _write_geojson(tmp_path / "annotation_features.geojson", [
        _feature(shapely.Point(14.552, 45.862), oe_annotations_task_id="t1",
                 oe_labels={"crop": 1}, src_labels={"crop": "maize"}),
        _feature(shapely.Point(14.555, 45.865), oe_annotations_task_id="t1",
                 oe_labels={"crop": 0}, src_labels={"crop": "wheat"},
                 oe_start_time="2024-03-01 00:00:00+00:00",
                 oe_end_time="2024-03-01 00:00:00+00:00"),
    ])
    labels = read_labels(tmp_path)  # the folder is recognised as a Studio export
    assert labels.values.tolist() == [1, 0]
    assert labels.class_names == {1: "maize", 0: "wheat"}
    assert labels.groups.tolist() == ["t1", "t1"]
    assert str(labels.start[0]) == "2024-02-01T00:00:00"  # inherited from the task
    assert str(labels.start[1]) == "2024-03-01T00:00:00"  # its own
    assert shapely.equals(labels.tasks["t1"].geometry, task_geom)


def test_problems_are_reported_with_feature_numbers(tmp_path: Path):
    bowtie = shapely.Polygon([(14.55, 45.86), (14.56, 45.87), (14.56, 45.86), (14.55, 45.87)])
    feats = [
        _feature(shapely.Point(POINTS[0]), label="ok"),
        _feature(bowtie, label="ok"),                                 # self-intersection
        {"type": "Feature", "geometry": None, "properties": {"label": "ok"}},  # no geometry
        _feature(shapely.Point(POINTS[1]), label=""),                 # missing label
        _feature(shapely.Point(465_000, 5_079_000), label="ok"),      # UTM metres as lon/lat
        _feature(shapely.Point(POINTS[2]), label="ok", start="2024-05-01", end="2024-01-01"),
        _feature(shapely.Point(POINTS[2]), label="nodata"),           # ignored silently
    ]
    labels = read_labels(_write_geojson(tmp_path / "l.geojson", feats), time_column="start",
                         end_time_column="end")
    checked, problems = check_labels(labels, ignore_values=["nodata"])
    assert len(checked) == 1
    by_kind = {p.kind: p for p in problems}
    assert by_kind["invalid_geometry"].row == 1 and "Self-intersection" in by_kind[
        "invalid_geometry"].message
    assert by_kind["empty_geometry"].row == 2
    assert by_kind["missing_label"].row == 3
    assert by_kind["bad_coordinates"].row == 4 and "CRS" in by_kind["bad_coordinates"].message
    assert by_kind["bad_time"].row == 5
    assert len(problems) == 5
    repaired, rp = check_labels(labels, ignore_values=["nodata"], repair_invalid=True)
    assert len(repaired) == 2 and any(p.severity == "warning" for p in rp)


def test_no_usable_label_is_an_error(tmp_path: Path):
    path = _write_geojson(tmp_path / "l.geojson", [_feature(shapely.Point(POINTS[0]), label=None)])
    with pytest.raises(LabelError, match="no usable labels"):
        check_labels(read_labels(path))
    with pytest.raises(LabelError, match="no label column"):
        read_labels(_write_geojson(tmp_path / "m.geojson",
                                   [_feature(shapely.Point(POINTS[0]), foo=1)]))


def test_class_table_and_empty_classes():
    table = ClassTable.from_values([3, "b", 1, 3, "a"], names={3: "three"})
    assert table.values == (1, 3, "a", "b")
    assert table.names == ("1", "three", "a", "b")
    assert table.indices([3, "a", "zzz", 1.0]).tolist() == [1, 2, IGNORE_INDEX, 0]
    assert len(set(table.colors)) == 4
    assert ClassTable.from_dict(table.to_dict()) == table
    declared = ClassTable.from_values([], order=["x", "y", "z"])
    warn = empty_class_problems(np.array(["x", "z"], dtype=object), declared.values)
    assert [p.kind for p in warn] == ["empty_class"] and "'y'" in warn[0].message
    assert table.colormap()[255] == (0, 0, 0, 0)


def test_label_time_is_never_guessed_and_an_unused_date_column_is_reported(tmp_path: Path):
    path = _write_geojson(tmp_path / "l.geojson", [
        _feature(shapely.Point(POINTS[0]), label="forest", DATE="2018-02-02"),
        _feature(shapely.Point(POINTS[1]), label="water", DATE="2017-12-18"),
    ])
    labels = read_labels(path)
    assert np.isnat(labels.start).all() and labels.time_column is None
    notes = [p for p in labels.problems if p.kind == "unused_time_column"]
    assert len(notes) == 1 and "'DATE'" in notes[0].message
    assert "labels.time_column" in notes[0].message
    used = read_labels(path, time_column="DATE")
    assert str(used.start[0]) == "2018-02-02T00:00:00" and used.time_column == "DATE"
    assert not [p for p in used.problems if p.kind == "unused_time_column"]


def test_bad_time_values_name_the_column_and_the_value(tmp_path: Path):
    path = _write_geojson(tmp_path / "l.geojson", [
        _feature(shapely.Point(POINTS[0]), label="forest", when="2024-13-45"),
    ])
    labels = read_labels(path, time_column="when")
    bad = [p for p in labels.problems if p.kind == "bad_time"]
    assert len(bad) == 1 and "'when'" in bad[0].message and "2024-13-45" in bad[0].message
    with pytest.raises(LabelError, match="time column 'missing' not found"):
        read_labels(path, time_column="missing")


def test_empty_label_file_says_it_is_empty(tmp_path: Path):
    path = _write_geojson(tmp_path / "l.geojson", [])
    with pytest.raises(LabelError, match="holds no labels"):
        read_labels(path)
