"""Browser tests of labelling beyond single polygons: a multi-part polygon edited part by part
(moved, relabelled, a part added, a part deleted, undone) with versioned saves; and a project
whose labels are a numeric target with a range (values entered per feature, checked against
the range before saving). Real server on loopback, Debian's chromium, screenshots on failure."""

from __future__ import annotations

import uuid

import pytest
from shapely.geometry import shape

from . import browser as ui
from .browser import browser_fixture  # noqa: F401 (provides the browser fixture)
from .servers import ADMIN, Client

pytestmark = pytest.mark.slow


def parts_in_ui(page) -> list:
    """The labels of the drawn polygons (one per part) as Terra Draw holds them."""
    return page.evaluate("__geolatent.draw.getSnapshot().filter(f => f.properties.mode === "
                         "'polygon').map(f => f.properties.label)")


def test_multipolygon_edited_part_by_part_with_versioned_saves(browser, sqlite_server, tmp_path):
    api = Client(sqlite_server.url, *ADMIN)
    project = api.post("/api/projects", json={"name": f"multi-{uuid.uuid4().hex[:6]}",
                                              "imagery": {"type": "sample"}}).json()
    pid = project["id"]
    c = shape(project["aoi"]).centroid
    d = 0.0015  # the sample area is about 0.017 x 0.012 degrees: all parts stay in view

    def sq(x: float, y: float) -> list:
        return [[[x - d, y - d], [x + d, y - d], [x + d, y + d], [x - d, y + d], [x - d, y - d]]]

    west, east = (c.x - 0.005, c.y), (c.x + 0.005, c.y)
    feat = api.post(f"/api/projects/{pid}/features", json={
        "geometry": {"type": "MultiPolygon", "coordinates": [sq(*west), sq(*east)]},
        "label": "water"}).json()
    stored = lambda: api.get(f"/api/projects/{pid}/features").json()  # noqa: E731
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    with ui.screenshot_on_failure(page, tmp_path, "multipart"):
        ui.login(page, sqlite_server.url)
        page.goto(f"{sqlite_server.url}/#/project/{pid}")
        ui.wait_ready(page)
        assert parts_in_ui(page) == ["water", "water"]  # editable, not read-only
        assert page.evaluate("__geolatent.readonly.size") == 0
        page.click("button[data-mode=select]")
        # drag the east part 0.002 deg north: one save, still one MultiPolygon
        x, y = ui.screen_xy(page, *east)
        page.mouse.click(x, y)
        ui.wait_js(page, "__geolatent.selected !== null")
        to = ui.screen_xy(page, east[0], east[1] + 0.002)
        page.mouse.move(x, y)
        page.mouse.down()
        for k in range(1, 11):
            page.mouse.move(x + (to[0] - x) * k / 10, y + (to[1] - y) * k / 10)
        page.mouse.up()
        f = ui.until(lambda: (s := stored()[0])["version"] == 2 and s)
        assert f["id"] == feat["id"] and f["geometry"]["type"] == "MultiPolygon"
        polys = [shape({"type": "Polygon", "coordinates": p}) for p in f["geometry"]["coordinates"]]
        assert polys[0].centroid.y == pytest.approx(west[1], abs=1e-5)  # untouched
        assert polys[1].centroid.y - east[1] == pytest.approx(0.002, abs=3e-4)
        # a class key relabels every part
        page.keyboard.press("3")  # cropland
        ui.wait_saved(page)
        f = stored()[0]
        assert (f["version"], f["label"]) == (3, "cropland")
        assert parts_in_ui(page) == ["cropland", "cropland"]
        # add a third part south of the centre
        page.click("#add-part")
        south = (c.x, c.y - 0.003)
        ui.draw_square(page, *south, d)
        f = ui.until(lambda: (s := stored()[0])["version"] == 4 and s)
        assert len(f["geometry"]["coordinates"]) == 3
        assert shape(f["geometry"]).area == pytest.approx(3 * (2 * d) ** 2, rel=0.05)
        assert parts_in_ui(page) == ["cropland"] * 3
        # delete the west part only: the feature stays, with two parts
        page.click("button[data-mode=select]")
        page.mouse.click(*ui.screen_xy(page, *west))
        ui.wait_js(page, "__geolatent.selected !== null")
        page.click("#delete")
        f = ui.until(lambda: (s := stored()[0])["version"] == 5 and s)
        assert len(f["geometry"]["coordinates"]) == 2
        assert not shape(f["geometry"]).contains(shape({"type": "Point", "coordinates": west}))
        # undo brings the part back (a new version, nothing overwritten)
        page.click("#undo")
        f = ui.until(lambda: (s := stored()[0])["version"] == 6 and s)
        assert len(f["geometry"]["coordinates"]) == 3
        assert shape(f["geometry"]).contains(shape({"type": "Point", "coordinates": west}))
        page.reload()
        ui.wait_ready(page)
        assert parts_in_ui(page) == ["cropland"] * 3
    assert [x["id"] for x in stored()] == [feat["id"]]  # one feature throughout
    page.close()
    api.close()


def test_numeric_target_values_checked_against_the_range(browser, sqlite_server, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    api = Client(sqlite_server.url, *ADMIN)
    with ui.screenshot_on_failure(page, tmp_path, "numeric"):
        ui.login(page, sqlite_server.url)
        page.fill("#new-project input[name=name]", f"biomass-{uuid.uuid4().hex[:6]}")
        page.select_option("#new-project select[name=labels]", "value")
        page.fill("#new-project input[name=min]", "0")
        page.fill("#new-project input[name=max]", "250")
        page.click("#new-project button[type=submit]")
        ui.wait_ready(page)
        project = page.evaluate("__geolatent.project")
        assert project["label_schema"] == {"kind": "value", "classes": [], "min": 0.0,
                                           "max": 250.0}
        assert page.locator("#class-panel").is_hidden()
        assert page.locator("#value-range").inner_text() == "from 0 to 250"
        pid = project["id"]
        stored = lambda: api.get(f"/api/projects/{pid}/features").json()  # noqa: E731
        c = shape(project["aoi"]).centroid
        # the value for the next features, then draw one
        page.fill("#value", "120.5")
        page.press("#value", "Enter")
        ui.draw_square(page, c.x, c.y, 0.003)
        ui.wait_saved(page)
        assert [f["label"] for f in stored()] == ["120.5"]
        # an out-of-range value is refused in the UI and never saved
        page.click("button[data-mode=select]")
        page.mouse.click(*ui.screen_xy(page, c.x, c.y))
        ui.wait_js(page, "__geolatent.selected !== null")
        assert page.input_value("#value") == "120.5"
        page.fill("#value", "300")
        page.click("#value-form button[type=submit]")
        assert "outside the target range 0 to 250" in page.inner_text("#value-error")
        page.fill("#value", "")
        page.press("#value", "Enter")
        assert page.inner_text("#value-error") == "enter a number"
        assert [(f["label"], f["version"]) for f in stored()] == [("120.5", 1)]
        page.fill("#value", "7")
        page.press("#value", "Enter")
        ui.wait_saved(page)
        assert [(f["label"], f["version"]) for f in stored()] == [("7.0", 2)]
        assert page.inner_text("#value-error") == ""
        page.keyboard.press("Escape")
        page.keyboard.press("1")  # class keys do nothing in a numeric project
        page.reload()
        ui.wait_ready(page)
        assert page.evaluate("__geolatent.draw.getSnapshot().filter(f => f.properties.mode "
                             "=== 'polygon').map(f => f.properties.label)") == ["7.0"]
        assert [(f["label"], f["version"]) for f in stored()] == [("7.0", 2)]
        # features are coloured by value on the ramp whose legend shows the range
        assert page.locator("#value-legend .ramp-ends").inner_text().split() == ["0", "250"]
    page.close()
    api.close()


def test_numeric_target_finetune_from_the_ui_reports_regression_metrics(browser, sqlite_server,
                                                                      tmp_path):
    from .test_jobs import label_polygons

    api = Client(sqlite_server.url, *ADMIN)
    project = api.post("/api/projects", json={
        "name": f"regression-{uuid.uuid4().hex[:6]}", "imagery": {"type": "sample"},
        "label_schema": {"kind": "value", "min": 0, "max": 100}}).json()
    for i, f in enumerate(label_polygons(30)):  # the sample's land-cover polygons, as values
        f["label"] = str(10.0 * (i % 7))
        assert api.post(f"/api/projects/{project['id']}/features", json=f).status_code == 201
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    with ui.screenshot_on_failure(page, tmp_path, "regression"):
        ui.login(page, sqlite_server.url)
        page.goto(f"{sqlite_server.url}/#/project/{project['id']}")
        ui.wait_ready(page)
        page.fill("#encoder", "nano")  # a random Nano encoder: a smoke run
        page.fill("#epochs", "1")
        page.click("#start-finetune")
        page.wait_for_selector("#jobs li[data-status=succeeded], #jobs li[data-status=failed]",
                               timeout=600_000)
        assert page.locator("#jobs li[data-status=failed]").count() == 0, page.inner_text("#jobs")
        job = api.get(f"/api/projects/{project['id']}/jobs").json()[0]
        assert job["params"]["task"] == "pixel_regression"
        val = job["result"]["metrics"]["val"]
        shown = page.inner_text("#jobs li[data-kind=finetune]")
        assert f"RMSE {val['rmse']:.2f}" in shown and f"MAE {val['mae']:.2f}" in shown
        assert "accuracy" not in shown
    page.close()
    api.close()
