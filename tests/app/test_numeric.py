"""Numeric targets through the API (real server, SQLite and PostgreSQL): values checked
against the label schema's range, import / export round trips keeping the values, and a
regression fine-tune + predict job giving a value map with MAE / RMSE / R²."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import numpy as np
import pytest
import rasterio

from .servers import ADMIN, Client
from .test_api import centre, square
from .test_jobs import FAST, label_polygons, wait_job

pytestmark = pytest.mark.slow
SCHEMA = {"kind": "value", "min": 0, "max": 100}
DONE = {"succeeded", "failed", "cancelled"}


def value_project(c: Client) -> dict:
    r = c.post("/api/projects", json={"name": f"num-{uuid.uuid4().hex[:6]}",
                                      "imagery": {"type": "sample"}, "label_schema": SCHEMA})
    assert r.status_code == 201, r.text
    assert r.json()["label_schema"]["kind"] == "value"
    return r.json()


def test_values_are_checked_against_the_range(server, admin):
    p = value_project(admin)
    url = f"/api/projects/{p['id']}/features"
    lon, lat = centre(p)
    ok = admin.post(url, json={"geometry": square(lon, lat), "label": 42.5})
    assert ok.status_code == 201 and float(ok.json()["label"]) == 42.5
    text = admin.post(url, json={"geometry": square(lon, lat), "label": "7"})
    assert text.status_code == 201 and float(text.json()["label"]) == 7
    high = admin.post(url, json={"geometry": square(lon, lat), "label": 150})
    assert high.status_code == 422 and "[0, 100]" in high.json()["detail"]
    for bad in ("abc", "nan", "inf"):
        r = admin.post(url, json={"geometry": square(lon, lat), "label": bad})
        assert r.status_code == 422 and "number" in r.json()["detail"], bad
    low = admin.put(f"{url}/{ok.json()['id']}", json={"version": 1, "label": -3})
    assert low.status_code == 422 and "[0, 100]" in low.json()["detail"]
    bad_schema = admin.patch(f"/api/projects/{p['id']}",
                             json={"label_schema": {"kind": "value", "min": 5, "max": 1}})
    assert bad_schema.status_code == 422 and "min must be below max" in bad_schema.text


def test_export_and_import_keep_the_values(server, admin, tmp_path):
    from geolatent.platform import read_labels

    p = value_project(admin)
    lon, lat = centre(p)
    values = [12.5, 40.0, 99.75]
    for i, v in enumerate(values):
        r = admin.post(f"/api/projects/{p['id']}/features",
                       json={"geometry": square(lon + i * 0.001, lat, 0.0004), "label": v})
        assert r.status_code == 201, r.text
    base = f"/api/projects/{p['id']}/features/export"
    gj = admin.get(f"{base}/geojson")
    assert sorted(f["properties"]["label"] for f in gj.json()["features"]) == values  # numbers
    (tmp_path / "l.geojson").write_bytes(gj.content)
    (tmp_path / "l.gpkg").write_bytes(admin.get(f"{base}/gpkg").content)
    studio = admin.get(f"{base}/studio").content
    zipfile.ZipFile(io.BytesIO(studio)).extractall(tmp_path / "studio")
    for path, kw in ((tmp_path / "l.geojson", {"field": "label"}),
                     (tmp_path / "l.gpkg", {"field": "label"}), (tmp_path / "studio", {})):
        labels = read_labels(path, kind="value", **kw)
        assert sorted(float(v) for v in labels.values) == values, path

    for name, payload in (("l.geojson", gj.content), ("studio.zip", studio),
                          ("l.gpkg", (tmp_path / "l.gpkg").read_bytes())):
        q = value_project(admin)
        r = admin.post(f"/api/projects/{q['id']}/features/import",
                       files={"file": (name, payload)},
                       data={"field": "label"} if name != "studio.zip" else {})
        assert r.status_code == 200 and r.json()["added"] == 3, (name, r.text)
        back = admin.get(f"/api/projects/{q['id']}/features").json()
        assert sorted(float(f["label"]) for f in back) == values, name

    fc = json.loads(gj.content)
    fc["features"][0]["properties"]["label"] = 250.0
    q = value_project(admin)
    r = admin.post(f"/api/projects/{q['id']}/features/import", data={"field": "label"},
                   files={"file": ("out.geojson", json.dumps(fc).encode())})
    assert r.status_code == 422 and "[0, 100]" in r.json()["detail"]
    assert admin.get(f"/api/projects/{q['id']}/features").json() == []  # nothing half-imported


def test_regression_finetune_and_predict_give_a_value_map_and_metrics(sqlite_server):
    # jobs run on SQLite only, as in test_jobs (the worker's database code is the same)
    admin = Client(sqlite_server.url, *ADMIN)
    p = value_project(admin)
    pid = p["id"]
    # a numeric target per land-cover polygon of the sample scene
    for i, f in enumerate(label_polygons(24)):
        value = {"water": 5.0, "forest": 80.0}.get(f["label"], 20.0 + (i % 5) * 10)
        r = admin.post(f"/api/projects/{pid}/features", json={**f, "label": value})
        assert r.status_code == 201, r.text
    wrong = admin.post(f"/api/projects/{pid}/jobs",
                       json={"kind": "finetune", "params": {**FAST, "task": "segmentation"}})
    assert wrong.status_code == 422 and "pixel_regression" in wrong.text
    ft = admin.post(f"/api/projects/{pid}/jobs", json={"kind": "finetune", "params": FAST})
    assert ft.status_code == 201 and ft.json()["params"]["task"] == "pixel_regression"
    ft = wait_job(admin, pid, ft.json()["id"], DONE)
    assert ft["status"] == "succeeded", ft["error"] or ft["log"][-3000:]
    val = ft["result"]["metrics"]["val"]
    assert {"mae", "rmse", "r2"} <= set(val) and val["count"] > 0
    assert 0 <= val["mae"] <= val["rmse"]
    pr = admin.post(f"/api/projects/{pid}/jobs", json={
        "kind": "predict", "params": {"model_job": ft["id"], "start": "2024-01-01",
                                      "end": "2024-02-29"}}).json()
    pr = wait_job(admin, pid, pr["id"], DONE)
    assert pr["status"] == "succeeded", pr["error"] or pr["log"][-3000:]
    assert pr["result"]["files"] == ["map.tif"] and pr["result"]["legend"] == []
    lo, hi = pr["result"]["range"]
    tif = admin.get(f"/api/projects/{pid}/jobs/{pr['id']}/files/map.tif")
    with rasterio.MemoryFile(tif.content) as mem, mem.open() as src:
        data = src.read(1, masked=True)
        assert src.dtypes[0].startswith("float") and data.count() > 0
        assert lo == pytest.approx(float(data.min())) and hi == pytest.approx(float(data.max()))
    assert admin.get(f"/api/projects/{pid}/jobs/{pr['id']}/files/map.geojson").status_code == 404
    import morecantile
    from PIL import Image

    t = morecantile.tms.get("WebMercatorQuad").tile(*centre(p), 15)
    tile = admin.get(f"/api/projects/{pid}/jobs/{pr['id']}/tiles/{t.z}/{t.x}/{t.y}.png")
    assert tile.status_code == 200
    rgba = np.asarray(Image.open(io.BytesIO(tile.content)).convert("RGBA"))
    assert rgba[..., 3].any()  # the colour ramp
