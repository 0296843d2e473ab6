"""Browser tests: Playwright driving Debian's chromium against a real server on loopback.

Screenshots are saved under pytest's temp folder when a step fails (the path is in the error).
"""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest
from shapely.geometry import shape

from .browser import (  # noqa: F401 (browser_fixture provides the browser fixture)
    browser_fixture,
    draw_square,
    finetune_predict_show,
    labels_in_ui,
    login,
    screen_xy,
    screenshot_on_failure,
    wait_js,
    wait_ready,
    wait_saved,
)
from .servers import ADMIN, Client
from .test_api import square

pytestmark = pytest.mark.slow


def test_login_create_sample_project_draw_label_reload(browser, sqlite_server, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    with screenshot_on_failure(page, tmp_path, "draw"):
        login(page, sqlite_server.url)
        name = f"browser-{uuid.uuid4().hex[:6]}"
        page.fill("#new-project input[name=name]", name)
        page.click("#new-project button[type=submit]")
        wait_ready(page)
        project = page.evaluate("__geolatent.project")
        c = shape(project["aoi"]).centroid
        page.keyboard.press("2")  # forest, the second class
        d = 0.003
        draw_square(page, c.x, c.y, d)
        wait_saved(page)
        with Client(sqlite_server.url, *ADMIN) as api:
            feats = api.get(f"/api/projects/{project['id']}/features").json()
        assert [f["label"] for f in feats] == ["forest"]
        assert shape(feats[0]["geometry"]).area == pytest.approx((2 * d) ** 2, rel=0.05)
        page.reload()
        wait_ready(page)
        assert labels_in_ui(page) == ["forest"]
        page.click("button[data-mode=select]")
        if os.environ.get("GEOLATENT_APP_SCREENSHOT"):  # the README picture (docs/app.png)
            page.mouse.click(*screen_xy(page, c.x, c.y))
            page.wait_for_timeout(1500)
            page.screenshot(path=os.environ["GEOLATENT_APP_SCREENSHOT"])
    page.close()


def test_two_browsers_editing_one_polygon_get_one_conflict(browser, sqlite_server, tmp_path):
    with Client(sqlite_server.url, *ADMIN) as api:
        project = api.post("/api/projects", json={"name": f"conflict-{uuid.uuid4().hex[:6]}",
                                                  "imagery": {"type": "sample"}}).json()
        c = shape(project["aoi"]).centroid
        feat = api.post(f"/api/projects/{project['id']}/features",
                        json={"geometry": square(c.x, c.y, 0.003), "label": "water"}).json()
    pages = []
    for i in range(2):
        ctx = browser.new_context(viewport={"width": 1100, "height": 750})
        page = ctx.new_page()
        pages.append(page)
        with screenshot_on_failure(page, tmp_path, f"conflict-{i}"):
            login(page, sqlite_server.url)
            page.goto(f"{sqlite_server.url}/#/project/{project['id']}")
            wait_ready(page)
            page.click("button[data-mode=select]")
            page.mouse.click(*screen_xy(page, c.x + 0.001, c.y + 0.001))
            wait_js(page, "__geolatent.selected !== null", 10)
    a, b = pages
    with screenshot_on_failure(a, tmp_path, "conflict-a"):
        a.keyboard.press("3")  # cropland
        wait_saved(a)
        assert a.locator("#conflict").is_hidden()
    with screenshot_on_failure(b, tmp_path, "conflict-b"):
        b.keyboard.press("4")  # grassland, based on the now stale version 1
        b.wait_for_selector("#conflict:not([hidden])", timeout=20000)
        assert "Conflict" in b.locator("#conflict").inner_text()
        deadline = time.monotonic() + 10
        while labels_in_ui(b) != ["cropland"] and time.monotonic() < deadline:
            b.wait_for_timeout(100)
        assert labels_in_ui(b) == ["cropland"]  # b now shows a's saved edit
    with Client(sqlite_server.url, *ADMIN) as api:
        stored = api.get(f"/api/projects/{project['id']}/features").json()
    assert [(f["id"], f["label"], f["version"]) for f in stored] == [(feat["id"], "cropland", 2)]
    for p in pages:
        p.context.close()


def test_runs_from_the_ui_finetune_predict_result_layer_with_legend(browser, sqlite_server,
                                                                    tmp_path):
    from .test_jobs import labelled_project

    with Client(sqlite_server.url, *ADMIN) as api:
        project = labelled_project(api)  # the sample's land cover as labelled polygons
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    with screenshot_on_failure(page, tmp_path, "runs"):
        login(page, sqlite_server.url)
        page.goto(f"{sqlite_server.url}/#/project/{project['id']}")
        wait_ready(page)
        page.fill("#encoder", "nano")  # a random Nano encoder: a smoke run
        shown = set(finetune_predict_show(page, epochs=2))
        names = {c["name"] for c in project["label_schema"]["classes"]}
        assert shown and shown <= names
        if os.environ.get("GEOLATENT_APP_SCREENSHOT_RUNS"):
            page.wait_for_timeout(1500)
            page.screenshot(path=os.environ["GEOLATENT_APP_SCREENSHOT_RUNS"])
    page.close()


def test_create_project_with_uploaded_area_and_import_labels(browser, sqlite_server, tmp_path):
    aoi = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": square(14.56, 45.87, 0.01)}]}
    (tmp_path / "area.geojson").write_text(json.dumps(aoi))
    labels = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"lc": lc}, "geometry": square(lon, 45.87, 0.001)}
        for lc, lon in (("field", 14.558), ("wood", 14.562))]}
    (tmp_path / "labels.geojson").write_text(json.dumps(labels))
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    with screenshot_on_failure(page, tmp_path, "upload"):
        login(page, sqlite_server.url)
        name = f"upload-{uuid.uuid4().hex[:6]}"
        page.fill("#new-project input[name=name]", name)
        page.select_option("#new-project select[name=imagery]", "local")
        page.set_input_files("#new-project input[name=aoi]", str(tmp_path / "area.geojson"))
        page.fill("#new-project input[name=start]", "2024-03-01")
        page.fill("#new-project input[name=end]", "2024-10-31")
        page.click("#new-project button[type=submit]")
        wait_ready(page)
        project = page.evaluate("__geolatent.project")
        assert shape(project["aoi"]).equals(shape(aoi["features"][0]["geometry"]))
        assert (project["start_date"], project["end_date"]) == ("2024-03-01", "2024-10-31")
        page.set_input_files("#import input[name=file]", str(tmp_path / "labels.geojson"))
        page.fill("#import input[name=field]", "lc")
        page.click("#import button[type=submit]")
        page.wait_for_selector("#import-result >> text=added 2 label(s)")
        wait_js(page, "__geolatent.draw.getSnapshot().filter(f => f.properties.mode === "
                      "'polygon').length === 2")
        assert sorted(labels_in_ui(page)) == ["field", "wood"]
    page.close()


def test_add_a_real_sentinel1_image_in_the_ui_and_see_its_tiles(browser, sqlite_server,
                                                                real_data, tmp_path):
    import rasterio
    from pyproj import Transformer
    from shapely.geometry import box, mapping

    path = real_data / "s1_spatialist" / "S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif"
    with rasterio.open(path) as src:
        to_ll = Transformer.from_crs(src.crs, 4326, always_xy=True)
        (x0, x1), (y0, y1) = to_ll.transform([src.bounds.left, src.bounds.right],
                                             [src.bounds.bottom, src.bounds.top])
    with Client(sqlite_server.url, *ADMIN) as api:
        project = api.post("/api/projects", json={
            "name": f"s1ui-{uuid.uuid4().hex[:6]}", "aoi": mapping(box(x0, y0, x1, y1)),
            "imagery": {"type": "local", "path": "imagery"}}).json()
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    with screenshot_on_failure(page, tmp_path, "s1"):
        login(page, sqlite_server.url)
        page.goto(f"{sqlite_server.url}/#/project/{project['id']}")
        wait_ready(page)
        page.set_input_files("#add-image input[name=file]", str(path))
        page.select_option("#add-image select[name=modality]", "sentinel1")
        page.fill("#add-image input[name=date]", "2015-03-09")
        page.fill("#add-image input[name=bands]", "vv")
        with page.expect_response(lambda r: "/imagery/tiles/sar_vv/2015-03-09/" in r.url
                                  and r.status == 200, timeout=30_000):
            page.click("#add-image button[type=submit]")
        assert page.locator("#add-image-result").inner_text() == "added"
        assert page.locator("#date").inner_text() == "2015-03-09"
        assert page.locator("#preset").input_value() == "sar_vv"
    page.close()
