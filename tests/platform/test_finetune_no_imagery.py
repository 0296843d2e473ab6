"""Labelled pixels without imagery never reach a loss or a metric; the report counts them;
a diverging run stops with an error naming the cause."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import shapely
from affine import Affine
from platform_fixtures import s2_source, single_torch_thread, write_scene  # noqa: F401

from geolatent.data.window import WGS84, reproject_geometry
from geolatent.platform.config import FinetuneConfig
from geolatent.platform.finetune import REPORT_FILE, TrainingError, finetune


def _half_outside_labels(tmp_path: Path, transform: Affine, crs: str) -> Path:
    """Two class polygons, each reaching 24 px beyond the scene's east edge (64 px wide)."""
    feats = []
    for k, (r0, r1) in enumerate(((4, 30), (34, 60))):
        x0, y0 = transform @ (40, r0)
        x1, y1 = transform @ (88, r1)
        geom = reproject_geometry(shapely.segmentize(shapely.box(x0, y1, x1, y0), 20), crs,
                                  WGS84)
        feats.append({"type": "Feature", "geometry": shapely.geometry.mapping(geom),
                      "properties": {"label": ["field", "wood"][k]}})
    path = tmp_path / "labels.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def _config(tmp_path: Path, **train) -> FinetuneConfig:
    # Origin 8 px off the 16 px window grid: windows straddle the scene's east edge.
    scene = write_scene(tmp_path / "scene", height=64, width=64, timesteps=1, seed=3,
                        origin=(400_080.0, 5_100_000.0))
    labels = _half_outside_labels(tmp_path, scene.transform, scene.crs.to_string())
    return FinetuneConfig.model_validate(dict(
        task="segmentation", encoder="nano", labels=dict(path=str(labels), field="label"),
        sources=[s2_source(tmp_path / "scene")],
        windows=dict(size_px=16, start="2024-01-01", end="2024-02-01",
                     min_imagery_fraction=0.0),
        split=dict(cell_size_m=320, train=0.5, val=0.5, test=0.0, seed=0),
        train=dict(dict(epochs=1, batch_size=8, patch_size=8, lr=2e-3, head_hidden=8), **train),
        output=str(tmp_path / "model"),
    ))


@pytest.mark.slow
def test_no_imagery_pixels_are_counted_and_never_scored(tmp_path: Path):
    log: list[str] = []
    result = finetune(_config(tmp_path), log=log.append)
    report = json.loads((Path(result.bundle_path) / REPORT_FILE).read_text())
    splits = report["splits"]
    used = sum(s["labelled_pixels"] for s in splits.values())
    dropped = sum(s["dropped_no_imagery"] for s in splits.values())
    # The polygons cover rows 4-29 and 34-59 of columns 40-63 inside the scene (24 x 52 px),
    # and 24 more columns outside it, of which the 8 in windows straddling the edge are
    # materialized (windows wholly outside have no scene and are reported, not built).
    assert used == 24 * 52
    assert dropped == 8 * 52
    # Validation metrics are computed on exactly the imagery-covered labelled pixels.
    assert result.val["count"] == splits["val"]["labelled_pixels"]
    assert any("labelled pixels used" in line for line in log)


def test_a_diverging_run_stops_naming_the_cause(tmp_path: Path):
    with pytest.raises(TrainingError, match=r"loss is (nan|inf).*train\.lr \(now 1e\+12\)"):
        finetune(_config(tmp_path, lr=1e12, epochs=3, freeze_epochs=0, grad_clip=1e12))
