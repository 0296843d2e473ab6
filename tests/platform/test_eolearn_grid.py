"""Maps on the input's grid (issue #11 item 4): a prediction over the eo-learn patch, whose
10 m grid starts at (465181, 5080255) (off the global 10 m grid), is on exactly that grid:
same origin, same 101 x 100 pixels, by default for a single-grid file source and with
``--align-to``; class names are GDAL category names."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import rasterio
import shapely
from platform_fixtures import make_bundle, single_torch_thread  # noqa: F401
from shared_data import REAL_DATA
from test_eolearn_real import BANDS, CRS, TRANSFORM, _write_scenes
from typer.testing import CliRunner

from geolatent.cli import app
from geolatent.data.window import WGS84, reproject_geometry
from geolatent.platform.predict import predict_area

EOLEARN = REAL_DATA / "eolearn"
# The patch footprint of the README: 465181-466181 E, 5079245-5080255 N, EPSG:32633.
PATCH = shapely.box(465181.0, 5079245.0, 466181.0, 5080255.0)


@pytest.fixture(scope="module")
def patch(tmp_path_factory) -> tuple[Path, Path]:
    if not (EOLEARN / "REFERENCE_SCENES.npy").exists():
        pytest.skip(f"eo-learn real data not found at {EOLEARN} (set GEOLATENT_SHARED)")
    root = tmp_path_factory.mktemp("eolearn")
    _write_scenes(EOLEARN, root / "s2")
    lonlat = reproject_geometry(shapely.segmentize(PATCH, 50), CRS, WGS84)
    aoi = root / "patch.geojson"
    aoi.write_text(json.dumps(shapely.geometry.mapping(lonlat)))
    return root, aoi


def _source(root: Path) -> dict:
    return dict(name="s2", type="files", modality="sentinel2_l2a",
                paths=[str(root / "s2" / "s2_*.tif")], bands=[b for b in BANDS if b != "B10"],
                date_pattern=r"s2_(\d{4}-\d{2}-\d{2})\.tif", date_format="%Y-%m-%d")


def test_map_is_on_the_single_input_grid(patch, tmp_path: Path) -> None:
    root, aoi = patch
    fm = make_bundle(tmp_path / "m", "segmentation", [_source(root)], num_classes=3)
    res = predict_area(tmp_path / "m", aoi, "2015-07-01", "2015-09-30", tmp_path / "map.tif",
                       tile=64)
    with rasterio.open(res.path) as src:
        assert src.transform == TRANSFORM and (src.height, src.width) == (101, 100)
        assert src.crs.to_string() == CRS
        assert (src.read(1) != 255).mean() > 0.99  # the whole patch is predicted
    if shutil.which("gdalinfo"):  # QGIS reads the class names through GDAL
        info = subprocess.run(["gdalinfo", str(res.path)], capture_output=True, text=True,
                              check=True).stdout
        assert all(n in info[info.index("Categories:"):] for n in fm.classes.names)
    # an explicit CRS puts the map on that CRS's global grid instead (as before)
    glob = predict_area(tmp_path / "m", aoi, "2015-07-01", "2015-09-30", tmp_path / "g.tif",
                        tile=64, crs=CRS)
    assert glob.transform.c % 10 == 0 and glob.transform.f % 10 == 0


def test_align_to_on_the_cli(patch, tmp_path: Path) -> None:
    root, aoi = patch
    make_bundle(tmp_path / "m", "segmentation", [_source(root)], num_classes=3)
    target = sorted((root / "s2").glob("*.tif"))[0]
    out = tmp_path / "aligned.tif"
    res = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "m"), "--aoi", str(aoi),
                                   "--start", "2015-07-01", "--end", "2015-09-30", "-o",
                                   str(out), "--align-to", str(target), "--tile", "64"])
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as src, rasterio.open(target) as t:
        assert src.transform == t.transform and src.shape == t.shape
    both = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "m"), "--aoi", str(aoi),
                                    "--start", "2015-07-01", "--end", "2015-09-30", "-o",
                                    str(tmp_path / "x.tif"), "--align-to", str(target),
                                    "--crs", CRS])
    assert both.exit_code == 1 and "either align_to" in " ".join(both.output.split())


def test_map_keeps_the_grid_of_the_patch_as_shipped(tmp_path: Path) -> None:
    """The patch's exact bbox (``bbox.geojson`` as shipped, a legacy ``crs`` member) gives
    9.995 x 9.997 m pixels: the map keeps the input's origin and 100 x 101 pixels (10 m pixels,
    under 0.5 m of drift at the far edge) instead of moving to the global 10 m grid."""
    bbox = EOLEARN / "TestEOPatch" / "bbox.geojson"
    if not bbox.exists():
        pytest.skip(f"eo-learn real data not found at {EOLEARN} (set GEOLATENT_SHARED)")
    _write_scenes(EOLEARN, tmp_path / "s2")
    x0, y0, x1, y1 = shapely.geometry.shape(json.loads(bbox.read_text())).bounds
    exact = rasterio.transform.from_bounds(x0, y0, x1, y1, 100, 101)
    for f in (tmp_path / "s2").glob("*.tif"):
        with rasterio.open(f, "r+") as dst:
            dst.transform = exact
    make_bundle(tmp_path / "m", "segmentation", [_source(tmp_path)], num_classes=3)
    res = predict_area(tmp_path / "m", bbox, "2015-07-01", "2015-09-30", tmp_path / "map.tif",
                       tile=64)
    with rasterio.open(res.path) as src:
        assert (src.transform.c, src.transform.f) == pytest.approx((exact.c, exact.f), abs=1e-6)
        assert (src.height, src.width) == (101, 100) and src.crs.to_string() == CRS
        assert (src.read(1) != 255).mean() > 0.99
