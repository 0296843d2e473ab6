"""Labels -> windows (data-layer grid), targets, imagery checks and materialized training data."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import shapely
from platform_fixtures import (  # noqa: F401
    s2_source,
    scene_box,
    single_torch_thread,
    write_scene,
)

from geolatent.data.config import FileSourceConfig
from geolatent.data.sources import open_sources
from geolatent.data.window import WGS84, reproject_geometry
from geolatent.platform.config import FinetuneConfig
from geolatent.platform.dataset import WindowSamples, load_target, prepare_training_data
from geolatent.platform.labels import LabelSet, check_labels, read_labels
from geolatent.platform.windows import (
    TargetSpec,
    build_target,
    check_imagery,
    label_time_ranges,
    make_label_windows,
)

UTM = "EPSG:32633"


def _write(path: Path, feats: list[tuple]) -> Path:
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": shapely.geometry.mapping(g), "properties": p}
        for g, p in feats]}
    path.write_text(json.dumps(fc))
    return path


def _labels(tmp_path: Path, feats: list[tuple], **kw) -> LabelSet:
    return check_labels(read_labels(_write(tmp_path / "l.geojson", feats), **kw))[0]


def _utm_point_lonlat(x: float, y: float) -> shapely.Point:
    return reproject_geometry(shapely.Point(x, y), UTM, WGS84)


def test_point_windows_are_centred_and_timed(tmp_path: Path):
    labels = _labels(tmp_path, [
        (_utm_point_lonlat(400_105, 5_099_895), {"label": "a", "start": "2024-06-15"}),
        (_utm_point_lonlat(400_305, 5_099_695), {"label": "b", "start": "2024-02-10",
                                                  "end": "2024-04-20"}),
        (_utm_point_lonlat(400_505, 5_099_495), {"label": "a"}),
    ], time_column="start", end_time_column="end")
    default = (datetime(2023, 1, 1), datetime(2024, 1, 1))
    windows, problems = make_label_windows(labels, "classification", size_px=16,
                                           default_time_range=default)
    assert not problems and len(windows) == 3
    w0 = windows[0].window
    assert w0.crs == UTM and w0.shape == (16, 16)
    cx = (w0.bounds[0] + w0.bounds[2]) / 2
    cy = (w0.bounds[1] + w0.bounds[3]) / 2
    assert abs(cx - 400_105) <= 5 and abs(cy - 5_099_895) <= 5
    # an instant -> 12 months around it; a range -> whole months; none -> the default
    assert w0.time_range == (datetime(2023, 12, 1), datetime(2024, 12, 1))
    assert windows[1].window.time_range == (datetime(2024, 2, 1), datetime(2024, 5, 1))
    assert windows[2].window.time_range == default
    ranges, _ = label_time_ranges(labels, None)
    assert ranges[2] is None


def test_polygons_are_tiled_and_rasterized(tmp_path: Path):
    # One polygon over exactly pixels cols 40000..40009, rows -510000..-509995 (10 x 5 px).
    poly_utm = shapely.box(400_000, 5_099_950, 400_100, 5_100_000)
    poly = reproject_geometry(shapely.segmentize(poly_utm, 10), UTM, WGS84)
    pt = _utm_point_lonlat(400_155, 5_099_985)  # pixel col 40015, row -509999
    labels = _labels(tmp_path, [(poly, {"label": 2}), (pt, {"label": 1})])
    windows, _ = make_label_windows(labels, "segmentation", size_px=32, crs=UTM,
                                    default_time_range=(datetime(2024, 1, 1),
                                                        datetime(2024, 3, 1)))
    assert len(windows) == 1  # both labels fall in one 32 px tile of the global grid
    lw = windows[0]
    assert lw.window.pixel_bounds == (40000 - 40000 % 32, -510016, 40000 - 40000 % 32 + 32,
                                      -509984)
    spec = TargetSpec("segmentation", tuple(shapely.to_wkb(labels.geometries[lw.labels])),
                      (1.0, 0.0))  # polygon -> class 1, point -> class 0
    target = build_target(lw.window, spec)
    assert target.dtype == np.int16 and target.shape == (32, 32)
    c0, r0 = lw.window.pixel_bounds[:2]
    poly_px = target[-510000 - r0 : -509995 - r0, 40000 - c0 : 40010 - c0]
    assert (poly_px == 1).all() and poly_px.size == 50
    assert target[-509999 - r0, 40015 - c0] == 0
    assert (target == -1).sum() == 32 * 32 - 51
    with_bg = build_target(lw.window, TargetSpec("segmentation", spec.shapes_wkb, spec.values,
                                                 background=5))
    assert (with_bg == 5).sum() == 32 * 32 - 51
    reg = build_target(lw.window, TargetSpec("pixel_regression", spec.shapes_wkb, (2.5, 7.0)))
    assert reg.dtype == np.float32 and np.isnan(reg).sum() == 32 * 32 - 51
    extent = reproject_geometry(shapely.box(400_000, 5_099_900, 400_050, 5_100_000), UTM, WGS84)
    clipped = build_target(lw.window, TargetSpec("segmentation", spec.shapes_wkb, spec.values,
                                                 shapely.to_wkb(extent)))
    assert (clipped == 1).sum() == 25


def test_labels_outside_the_imagery_are_reported(tmp_path: Path):
    scene = write_scene(tmp_path / "scene", height=32, width=32, timesteps=1)
    sources = open_sources([FileSourceConfig(**s2_source(tmp_path / "scene"))])
    inside = scene_box(scene, inset_px=12).centroid
    labels = _labels(tmp_path, [(inside, {"label": "a"}),
                                (shapely.Point(15.5, 46.5), {"label": "a"})])
    windows, _ = make_label_windows(labels, "classification", size_px=8,
                                    default_time_range=(datetime(2024, 1, 1),
                                                        datetime(2024, 2, 1)))
    keep, problems = check_imagery(windows, sources)
    assert keep.tolist() == [True, False]
    assert problems[0].kind == "outside_imagery" and "no scene" in problems[0].message
    late = [w for w in windows]
    for w in late:
        object.__setattr__(w.window, "time_range", (datetime(2030, 1, 1), datetime(2030, 2, 1)))
    keep, _ = check_imagery(late, sources)
    assert not keep.any()  # inside the footprint but outside the imagery's dates


def test_prepare_training_data_materializes_and_reports(tmp_path: Path):
    scene = write_scene(tmp_path / "scene", height=48, width=48, timesteps=2)
    box = scene_box(scene, inset_px=2)
    rng = np.random.default_rng(0)
    xs = rng.uniform(box.bounds[0], box.bounds[2], 12)
    ys = rng.uniform(box.bounds[1], box.bounds[3], 12)
    feats = [(shapely.Point(x, y), {"cls": ["crop", "forest"][i % 2]})
             for i, (x, y) in enumerate(zip(xs, ys, strict=True))]
    feats.append((shapely.Point(15.9, 47.0), {"cls": "crop"}))  # outside the imagery
    _write(tmp_path / "pts.geojson", feats)
    cfg = FinetuneConfig.model_validate(dict(
        task="classification", encoder="nano",
        labels=dict(path=str(tmp_path / "pts.geojson"), field="cls",
                    classes=["crop", "forest", "water"]),
        sources=[s2_source(tmp_path / "scene")],
        windows=dict(size_px=8, start="2024-01-01", end="2024-03-01"),
        split=dict(cell_size_m=80, train=0.6, val=0.2, test=0.2),
        output=str(tmp_path / "model"),
    ))
    data = prepare_training_data(cfg)
    kinds = [p.kind for p in data.problems]
    assert "outside_imagery" in kinds
    assert any(p.kind == "empty_class" and "water" in p.message for p in data.problems)
    assert 1 <= len(data.records) <= 12
    assert set(data.counts()) == {"train", "val", "test"}
    assert (data.root / "index.json").exists()
    rec = data.records[0]
    assert rec.bands["sentinel2_l2a"] and rec.timesteps == 2
    assert load_target(data, rec).tolist()[0] in (0, 1)
    split = data.records[0].split
    arrays, ts, target = WindowSamples(data, split, ["sentinel2_l2a"])[0]
    assert arrays["sentinel2_l2a"].shape == (8, 8, 2, 12) and ts.shape == (2, 3)
    # A rerun reuses every materialized window.
    mtimes = {p: p.stat().st_mtime_ns for p in (data.root / "windows").glob("*.h5")}
    again = prepare_training_data(cfg)
    assert [r.stem for r in again.records] == [r.stem for r in data.records]
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())


def test_studio_tasks_become_segmentation_windows(tmp_path: Path):
    task_utm = shapely.box(400_000, 5_099_800, 400_200, 5_100_000)  # 20 x 20 px
    task = reproject_geometry(shapely.segmentize(task_utm, 10), UTM, WGS84)
    ann = [(_utm_point_lonlat(400_055, 5_099_945), 1), (_utm_point_lonlat(400_155, 5_099_845), 0)]
    tasks_fc = {"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": shapely.geometry.mapping(task),
        "properties": {"oe_annotations_task_id": "t", "oe_start_time": "2024-03-01T00:00:00Z",
                       "oe_end_time": "2024-06-01T00:00:00Z"}}]}
    ann_fc = {"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": shapely.geometry.mapping(g),
        "properties": {"oe_annotations_task_id": "t", "oe_labels": {"crop": v}}} for g, v in ann]}
    (tmp_path / "annotation_task_features.geojson").write_text(json.dumps(tasks_fc))
    (tmp_path / "annotation_features.geojson").write_text(json.dumps(ann_fc))
    labels, _ = check_labels(read_labels(tmp_path))
    # The task spans two 32 px tiles of the global grid; only one holds annotations.
    windows, problems = make_label_windows(labels, "segmentation", size_px=32, crs=UTM)
    assert not problems and len(windows) == 1
    with_background, _ = make_label_windows(labels, "segmentation", size_px=32, crs=UTM,
                                            keep_unlabelled_task_tiles=True)
    assert len(with_background) == 2
    lw = windows[0]
    assert lw.extent is not None and len(lw.labels) == 2
    assert lw.window.time_range == (datetime(2024, 3, 1), datetime(2024, 6, 1))
    spec = TargetSpec("segmentation", tuple(shapely.to_wkb(labels.geometries[lw.labels])),
                      (1.0, 0.0), shapely.to_wkb(lw.extent), background=2)
    target = build_target(lw.window, spec)
    # Inside the task: labels or background; outside it: unlabelled.
    assert (target == 1).sum() == 1 and (target == 0).sum() == 1
    assert (target == 2).sum() == 16 * 20 - 2 and (target == -1).sum() == 32 * 32 - 16 * 20
