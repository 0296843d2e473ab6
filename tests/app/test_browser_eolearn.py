"""The app on real scenes, as a user would drive it in the browser: a project over the
eo-learn patch (Slovenia; five Sentinel-2 scenes written as GeoTIFFs from the .npy with the
data README's CRS and bounds, ``bbox.geojson`` uploaded as shipped), a few polygons drawn where
the reference land-use raster (LULC.npy) is one class, fine-tuning the reference Nano weights
and predicting from the UI, and the result layer with its legend. Screenshots on failure."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from shapely.geometry import shape
from shared_data import REAL_DATA, require

from . import browser as ui
from .browser import browser_fixture  # noqa: F401 (provides the browser fixture)
from .servers import ADMIN, Client

pytestmark = pytest.mark.slow

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12")  # REFERENCE_SCENES.npy band order
DATES = ("2015-08-20", "2015-07-31", "2015-09-09", "2015-08-30", "2015-07-11")  # array order
CRS = "EPSG:32633"
TRANSFORM = Affine(10.0, 0.0, 465181.0, 0.0, -10.0, 5080255.0)  # 100 x 101 px at 10 m
# LULC_ID -> the class drawn for it (keys 1, 2, 3 in this order); the patch has only 11 px of
# cultivated land and no 3 x 3 px block of shrubland, so those two are left out
CLASSES = {2: ("forest", "#1b7837"), 3: ("grassland", "#a6d96a"),
           8: ("artificial surface", "#e41a1c")}
HALF = 0.0001  # the drawn square's half side in degrees: +-11 m N-S, +-8 m E-W
ZOOM = 19  # about 0.2 m per screen pixel there: the square's corners are 40-50 px apart


@pytest.fixture(scope="module")
def eolearn() -> Path:
    return require(REAL_DATA / "eolearn" / "REFERENCE_SCENES.npy").parent


def write_scenes(root: Path, folder: Path) -> list[Path]:
    """The five L1C scenes as GeoTIFFs: reflectance x 10000 (DN), bands named by their
    descriptions, B10 (cirrus, not a model band) dropped. The bands are written in the
    registry's order: the app's fine-tuning source still names the bands in that order
    whatever the file's descriptions say (see .handoff/appui.md)."""
    from geolatent.modalities import MODALITIES

    scenes = np.load(root / "REFERENCE_SCENES.npy")  # [5, 101, 100, 13] reflectance 0-1
    order = list(MODALITIES["sentinel2_l2a"].bands)
    keep = [BANDS.index(b) for b in order]
    folder.mkdir()
    paths = []
    for t, date in enumerate(DATES):
        data = np.moveaxis(scenes[t][..., keep] * 10000.0, -1, 0).astype(np.float32)
        path = folder / f"s2_{date}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=100, height=101, count=len(keep),
                           dtype="float32", crs=CRS, transform=TRANSFORM) as dst:
            dst.write(data)
            for i, name in enumerate(order, start=1):
                dst.set_band_description(i, name)
        paths.append(path)
    return paths


def uniform_places(lulc: np.ndarray, value: int, count: int) -> list[tuple[int, int]]:
    """(row, col) of ``count`` pixels whose 3 x 3 px neighbourhood (30 m) is all ``value`` in
    the label raster, spread over the patch (a drawn square of +-HALF fits inside)."""
    from scipy import ndimage

    rows, cols = np.nonzero(ndimage.binary_erosion(lulc == value, np.ones((3, 3))))
    assert len(rows) >= count, f"only {len(rows)} 3 x 3 px places of class {value}"
    picks = np.linspace(0, len(rows) - 1, count).round().astype(int)
    return [(int(rows[i]), int(cols[i])) for i in picks]


def test_label_finetune_predict_on_the_real_eolearn_scenes(browser, sqlite_server, eolearn,
                                                           fixture_dir, tmp_path):
    patch = eolearn / "TestEOPatch"
    lulc = np.load(patch / "mask_timeless" / "LULC.npy")[..., 0]
    scenes = write_scenes(eolearn, tmp_path / "s2")
    to_ll = Transformer.from_crs(CRS, 4326, always_xy=True)
    to_utm = Transformer.from_crs(4326, CRS, always_xy=True)
    places = {v: uniform_places(lulc, v, 2) for v in CLASSES}

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    with ui.screenshot_on_failure(page, tmp_path, "eolearn"):
        ui.login(page, sqlite_server.url)
        # the project: local imagery, the patch footprint as shipped, the scenes' season
        page.fill("#new-project input[name=name]", f"eolearn-{uuid.uuid4().hex[:6]}")
        page.select_option("#new-project select[name=imagery]", "local")
        page.set_input_files("#new-project input[name=aoi]", str(patch / "bbox.geojson"))
        page.fill("#new-project input[name=start]", "2015-07-01")
        page.fill("#new-project input[name=end]", "2015-09-30")
        page.fill("#new-project input[name=model]", str(fixture_dir))  # reference Nano weights
        page.fill("#new-project input[name=classes]",
                  ", ".join(f"{n}:{c}" for n, c in CLASSES.values()))
        page.click("#new-project button[type=submit]")
        ui.wait_ready(page)
        project = page.evaluate("__geolatent.project")
        pid = project["id"]
        assert [c["name"] for c in project["label_schema"]["classes"]] == [
            n for n, _ in CLASSES.values()]
        aoi_utm = shapely.transform(shape(project["aoi"]), lambda xy: np.column_stack(
            to_utm.transform(xy[:, 0], xy[:, 1])))
        assert aoi_utm.bounds == pytest.approx((465181, 5079245, 466181, 5080255), abs=1)

        # the five scenes, added in the UI
        for path, date in zip(scenes, DATES, strict=True):
            page.set_input_files("#add-image input[name=file]", str(path))
            page.select_option("#add-image select[name=modality]", "sentinel2_l2a")
            page.fill("#add-image input[name=date]", date)
            with page.expect_response(lambda r: "/imagery" in r.url and r.request.method ==
                                      "POST", timeout=60_000) as resp:
                page.click("#add-image button[type=submit]")
            assert resp.value.status == 201, resp.value.text()
        ui.wait_js(page, "__geolatent.dates.length === 5")
        assert page.evaluate("__geolatent.dates") == sorted(DATES)

        # draw two polygons per class where the label raster is that class
        for key, pixels in enumerate(places.values(), start=1):
            for r, c in pixels:
                lon, lat = to_ll.transform(*(TRANSFORM @ (c + 0.5, r + 0.5)))
                page.evaluate(f"__geolatent.map.jumpTo({{center: [{lon}, {lat}], zoom: {ZOOM}}})")
                page.keyboard.press(str(key))
                ui.draw_square(page, lon, lat, HALF)
                ui.wait_saved(page)
            page.click("button[data-mode=select]")
        with Client(sqlite_server.url, *ADMIN) as api:
            feats = api.get(f"/api/projects/{pid}/features").json()
        assert len(feats) == 6
        for f in feats:  # each polygon lies on its class in the reference raster
            cx, cy = to_utm.transform(*shape(f["geometry"]).centroid.coords[0])
            col, row = (int(v) for v in ~TRANSFORM @ (cx, cy))
            assert CLASSES[int(lulc[row, col])][0] == f["label"]

        # fine-tune (tiny: two epochs) and predict from the UI
        assert page.input_value("#encoder") == str(fixture_dir)
        shown = ui.finetune_predict_show(page, epochs=2)
        assert shown and set(shown) <= {n for n, _ in CLASSES.values()}
        ui.wait_js(page, "__geolatent.map.areTilesLoaded()", 30)

    # the map covers the patch on its grid, with the project's classes
    with Client(sqlite_server.url, *ADMIN) as api:
        job = ui.until(lambda: next((j for j in api.get(f"/api/projects/{pid}/jobs").json()
                                  if j["kind"] == "predict" and j["status"] == "succeeded"),
                                 None))
        tif = api.get(f"/api/projects/{pid}/jobs/{job['id']}/files/map.tif")
    assert tif.status_code == 200
    with rasterio.open(io.BytesIO(tif.content)) as src:
        assert src.crs.to_epsg() == 32633
        left, bottom, right, top = src.bounds
        assert left <= 465181 + 10 and right >= 466181 - 10
        assert bottom <= 5079245 + 10 and top >= 5080255 - 10
        predicted = set(np.unique(src.read(1)).tolist())
    indexes = {e["index"] for e in job["result"]["legend"]}
    assert predicted - {255} <= indexes, (predicted, indexes)  # 255: no data
    page.close()
