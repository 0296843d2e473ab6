"""``predict`` over an area (or dates) without imagery is an error, not an all-nodata map."""

from __future__ import annotations

from pathlib import Path

import pytest
import shapely
from platform_fixtures import make_bundle, s2_source, single_torch_thread, write_scene  # noqa: F401

from geolatent.platform.predict import predict_area


def test_predict_far_from_the_imagery_is_an_error(tmp_path: Path):
    write_scene(tmp_path / "scene", height=32, width=32, timesteps=1)
    make_bundle(tmp_path / "model", "segmentation", [s2_source(tmp_path / "scene")])
    far = shapely.box(2.30, 48.80, 2.32, 48.82)  # Paris; the scene is in Slovenia
    with pytest.raises(ValueError, match=r"no scene of the sources \['s2'\] covers the area"
                       r"|does not overlap the grid of the imagery"):
        predict_area(tmp_path / "model", far, "2024-01-01", "2024-01-31", tmp_path / "map.tif")
    assert not (tmp_path / "map.tif").exists()
