"""Project imagery from a STAC API preset and from an on-disk STAC catalog, against real
servers: the app (uvicorn subprocess + worker, SQLite), ``rustac serve`` as the STAC API in
Earth Search's item layout and a range-request file server with the real Sentinel-2 scenes as
COGs (tests/data/stac_env.py). The project's monthly composites are fetched by an ``imagery``
job with the library of ``geolatent imagery fetch``, served as tiles, and used by fine-tune and
predict jobs."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import rasterio
from data.stac_env import AOI_ONE_TILE, stac_env  # noqa: F401 (the loopback STAC fixture)
from shapely.geometry import box, mapping, shape

from geolatent.data.imagery import fetch_composites, imagery_source
from geolatent.data.stac_presets import _S2_EARTH_SEARCH_ASSETS

from .servers import ADMIN, REPO, Client, start_server
from .test_jobs import FAST, wait_job

pytestmark = pytest.mark.slow
START, END = "2015-07-01", "2015-09-30"
MONTHS = ["2015-07", "2015-08", "2015-09"]
DONE = {"succeeded", "failed", "cancelled"}
CLASSES = [{"value": "a", "name": "A", "color": "#1f78b4"},
           {"value": "b", "name": "B", "color": "#33a02c"}]


@pytest.fixture(scope="module")
def app(stac_env, tmp_path_factory):  # noqa: F811 (stac_env: the imported fixture)
    server = start_server(tmp_path_factory.mktemp("app-stac") / "project")
    yield server
    server.stop()


def new_project(c: Client, imagery: dict, **extra) -> dict:
    r = c.post("/api/projects", json={"name": f"stac-{uuid.uuid4().hex[:6]}", "imagery": imagery,
                                      "aoi": AOI_ONE_TILE, "start_date": START, "end_date": END,
                                      "label_schema": {"kind": "class", "classes": CLASSES},
                                      **extra})
    assert r.status_code == 201, r.text
    return r.json()


def fetch(c: Client, pid: int) -> dict:
    job = c.post(f"/api/projects/{pid}/jobs", json={"kind": "imagery"})
    assert job.status_code == 201, job.text
    done = wait_job(c, pid, job.json()["id"], DONE, 300)
    assert done["status"] == "succeeded", done["error"] or done["log"][-3000:]
    assert done["progress"] == 1.0 and "[imagery] tile 1/1" in done["log"]
    return done


def composite(folder: Path, month: str) -> np.ndarray:
    with rasterio.open(folder / f"sentinel2_l2a_{month}.tif") as src:
        return src.read()


def project_dir(app, p: dict) -> Path:  # noqa: ANN001
    return app.project / "projects" / p["slug"]


def test_preset_project_fetches_serves_tiles_and_refetches_nothing(app, stac_env, tmp_path):  # noqa: F811
    c = Client(app.url, *ADMIN)
    p = new_project(c, {"type": "preset", "preset": "earth-search", "url": stac_env["es"]})
    assert p["imagery"]["url"] == stac_env["es"]
    pid = p["id"]
    job = fetch(c, pid)
    assert job["result"]["files"] == [f"sentinel2_l2a_{m}.tif" for m in MONTHS]
    index = c.get(f"/api/projects/{pid}/imagery").json()
    assert index["scenes"] == {"sentinel2_l2a": MONTHS}
    assert {"true_color", "false_color"} <= set(index["presets"])
    assert index["fetch"]["files"] == job["result"]["files"]

    # the same library call in this process gives the same composites
    direct = fetch_composites([imagery_source("earth-search", url=stac_env["es"],
                                              cache_dir=tmp_path / "cache")],
                              AOI_ONE_TILE, START, "2015-10-01", tmp_path / "direct")
    imagery = project_dir(app, p) / "imagery"
    for m in MONTHS:
        np.testing.assert_array_equal(composite(imagery, m), composite(tmp_path / "direct", m))
    assert len(direct.files) == 3

    import morecantile
    from PIL import Image

    ctr = shape(AOI_ONE_TILE).centroid
    t = morecantile.tms.get("WebMercatorQuad").tile(ctr.x, ctr.y, 16)
    tile = c.get(f"/api/projects/{pid}/imagery/tiles/true_color/{MONTHS[1]}/{t.z}/{t.x}/{t.y}.png")
    assert tile.status_code == 200, tile.text
    rgba = np.asarray(Image.open(io.BytesIO(tile.content)))
    assert rgba[..., 3].any() and rgba[..., :3].std() > 0
    pt = c.get(f"/api/projects/{pid}/imagery/point",
               params={"lon": ctr.x, "lat": ctr.y, "date": MONTHS[1]}).json()
    with rasterio.open(imagery / f"sentinel2_l2a_{MONTHS[1]}.tif") as src:
        from pyproj import Transformer

        x, y = Transformer.from_crs(4326, src.crs, always_xy=True).transform(ctr.x, ctr.y)
        row, col = src.index(x, y)
        b04 = src.descriptions.index("B04") + 1
        assert pt["values"]["B04"] == pytest.approx(float(src.read(b04)[row, col]))

    # a second fetch reads every asset window from the project's cache: nothing fetched twice
    assets_before = len([r for r in stac_env["server"].requests() if "sas" not in r.path])
    again = fetch(c, pid)
    assert again["result"]["files"] == job["result"]["files"]
    assert len([r for r in stac_env["server"].requests() if "sas" not in r.path]) == assets_before
    cached = re.search(r"0 asset windows fetched, (\d+) from the cache", again["log"])
    assert cached and int(cached.group(1)) > 0, again["log"][-2000:]  # the project's cache
    busy = c.post(f"/api/projects/{pid}/imagery", data={"modality": "sentinel1",
                                                        "date": "2015-08-01", "bands": "vv"},
                  files={"file": ("x.tif", b"II*\x00")})
    assert busy.status_code == 409 and '"imagery"' in busy.json()["detail"]

    # fine-tune and predict on the fetched composites
    x0, y0, x1, y1 = shape(AOI_ONE_TILE).bounds
    nx, ny = 4, 4
    dx, dy = (x1 - x0) / nx, (y1 - y0) / ny
    for i in range(nx):
        for j in range(ny):
            cell = box(x0 + i * dx, y0 + j * dy, x0 + (i + 1) * dx, y0 + (j + 1) * dy)
            r = c.post(f"/api/projects/{pid}/features", json={
                "geometry": mapping(cell.buffer(-dx * 0.1)), "label": "ab"[(i + j) % 2]})
            assert r.status_code == 201, r.text
    ft = c.post(f"/api/projects/{pid}/jobs", json={
        "kind": "finetune", "params": {**FAST, "cell_size_m": 100}}).json()
    ft = wait_job(c, pid, ft["id"], DONE)
    assert ft["status"] == "succeeded", ft["error"] or ft["log"][-3000:]
    pr = c.post(f"/api/projects/{pid}/jobs", json={"kind": "predict",
                                                   "params": {"model_job": ft["id"]}}).json()
    pr = wait_job(c, pid, pr["id"], DONE)
    assert pr["status"] == "succeeded", pr["error"] or pr["log"][-3000:]
    with rasterio.MemoryFile(c.get(f"/api/projects/{pid}/jobs/{pr['id']}/files/map.tif")
                             .content) as mem, mem.open() as src:
        assert (src.read(1) != 255).mean() > 0.5  # the area is predicted from the composites


def write_catalog(folder: Path, real: Path) -> Path:
    """An on-disk STAC catalog (pystac, self-contained, relative asset hrefs) of the real
    Sentinel-2 scenes in Earth Search's item layout."""
    import pystac
    from data.stac_fixtures import build_s2

    assets = folder / "assets"
    items = build_s2(real, assets, str(assets))["earth-search"]
    cat = pystac.Catalog("project-imagery", "real Sentinel-2 scenes")
    for d in items:
        cat.add_item(pystac.Item.from_dict(d))
    cat.normalize_hrefs(str(folder))
    cat.make_all_asset_hrefs_relative()
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return folder / "catalog.json"


def test_on_disk_stac_catalog_project_gives_the_presets_composites(app, stac_env, real_data,  # noqa: F811
                                                                   tmp_path):
    c = Client(app.url, *ADMIN)
    p = new_project(c, {"type": "stac", "path": "catalog/catalog.json",
                        "assets": _S2_EARTH_SEARCH_ASSETS})
    missing = c.post(f"/api/projects/{p['id']}/jobs", json={"kind": "imagery"}).json()
    missing = wait_job(c, p["id"], missing["id"], DONE, 120)
    assert missing["status"] == "failed" and "imagery.path" in missing["error"]
    write_catalog(project_dir(app, p) / "catalog", real_data)
    job = fetch(c, p["id"])
    assert job["result"]["files"] == [f"sentinel2_l2a_{m}.tif" for m in MONTHS]
    assert c.get(f"/api/projects/{p['id']}/imagery").json()["scenes"] == {
        "sentinel2_l2a": MONTHS}
    # the same scenes through the preset: the same composites (same cloud mask, same months)
    fetch_composites([imagery_source("earth-search", url=stac_env["es"],
                                     cache_dir=tmp_path / "cache")],
                     AOI_ONE_TILE, START, "2015-10-01", tmp_path / "direct")
    for m in MONTHS:
        np.testing.assert_allclose(composite(project_dir(app, p) / "imagery", m),
                                   composite(tmp_path / "direct", m))


def test_imagery_settings_and_jobs_are_checked(app, stac_env):  # noqa: F811
    c = Client(app.url, *ADMIN)
    name = f"bad-{uuid.uuid4().hex[:6]}"
    unknown = c.post("/api/projects", json={"name": name, "imagery": {
        "type": "preset", "preset": "google-earth"}})
    assert unknown.status_code == 422 and "earth-search" in unknown.text
    landsat = c.post("/api/projects", json={"name": name, "imagery": {
        "type": "preset", "preset": "earth-search", "collections": ["landsat-c2-l2"]}})
    assert landsat.status_code == 422 and "Level-1" in landsat.text
    bad_url = c.post("/api/projects", json={"name": name, "imagery": {
        "type": "preset", "preset": "earth-search", "url": "ftp://example"}})
    assert bad_url.status_code == 422 and "imagery.url" in bad_url.text
    escape = c.post("/api/projects", json={"name": name, "imagery": {
        "type": "stac", "path": "../../catalog.json"}})
    assert escape.status_code == 422 and "without '..'" in escape.text
    sample = c.post("/api/projects", json={"name": name, "imagery": {"type": "sample"}}).json()
    r = c.post(f"/api/projects/{sample['id']}/jobs", json={"kind": "imagery"})
    assert r.status_code == 422 and "'preset' or 'stac'" in r.text
    # switched to a preset later: the sample's images are never mixed with (or replaced by) a fetch
    r = c.patch(f"/api/projects/{sample['id']}", json={"imagery": {
        "type": "preset", "preset": "earth-search", "url": stac_env["es"]}})
    assert r.status_code == 200, r.text
    job = c.post(f"/api/projects/{sample['id']}/jobs", json={"kind": "imagery"}).json()
    job = wait_job(c, sample["id"], job["id"], DONE, 120)
    assert job["status"] == "failed" and "create a new project" in job["error"]
    assert c.get(f"/api/projects/{sample['id']}/imagery").json()["scenes"]["sentinel2_l2a"]
    no_area = c.post("/api/projects", json={"name": name + "x", "imagery": {
        "type": "preset", "preset": "earth-search", "url": stac_env["es"]}}).json()
    r = c.post(f"/api/projects/{no_area['id']}/jobs", json={"kind": "imagery"})
    assert r.status_code == 422 and "aoi" in r.text


def test_imagery_job_resumes_after_a_server_kill_and_fetches_nothing_twice(stac_env, tmp_path):  # noqa: F811
    """kill -9 the server mid-fetch (its worker dies with it); the restarted server requeues
    the job, which goes on from the windows already fetched: the composites equal an
    uninterrupted fetch and at most the asset being read at the kill is fetched again."""
    server = stac_env["server"]
    server.clear_log()
    # the uninterrupted reference in a fresh process (GDAL's HTTP cache is per process)
    code = ("import json, sys; from geolatent.data.imagery import fetch_composites, "
            "imagery_source; a = json.loads(sys.argv[1]); fetch_composites([imagery_source("
            "'earth-search', url=a['url'], cache_dir=a['cache'])], a['aoi'], a['start'], "
            "a['end'], a['out'])")
    args = {"url": stac_env["es"], "cache": str(tmp_path / "c0"), "aoi": AOI_ONE_TILE,
            "start": START, "end": "2015-10-01", "out": str(tmp_path / "ref")}
    ref = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_paths = {r.path for r in server.requests() if r.path.endswith(".tif")}
    assert ref_paths
    app = start_server(tmp_path / "project")
    try:
        c = Client(app.url, *ADMIN)
        p = new_project(c, {"type": "preset", "preset": "earth-search", "url": stac_env["es"]})
        cache = project_dir(app, p) / "cache" / "stac" / "windows"
        server.state.delay_s = 0.02  # a slower link, so the kill lands mid-fetch
        server.clear_log()
        job = c.post(f"/api/projects/{p['id']}/jobs", json={"kind": "imagery"}).json()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(list(cache.glob("*.npz"))) < 8:
            time.sleep(0.02)
        app.process.kill()  # SIGKILL: the worker gets SIGTERM from the kernel (its parent died)
        app.process.wait(10)
    finally:
        app.stop()
    time.sleep(1)
    first = {r.path for r in server.requests() if r.path.endswith(".tif")}
    assert 8 <= len(list(cache.glob("*.npz"))) < len(ref_paths), "the kill must land mid-fetch"
    server.state.delay_s = 0.0
    server.clear_log()
    app = start_server(tmp_path / "project")
    try:
        c = Client(app.url, *ADMIN)
        done = wait_job(c, p["id"], job["id"], DONE, 300)
        assert done["status"] == "succeeded", done["error"] or done["log"][-3000:]
        assert "requeued after a restart" in done["log"]
    finally:
        app.stop()
    second = {r.path for r in server.requests() if r.path.endswith(".tif")}
    assert len(first & second) <= 1, sorted(first & second)
    assert first | second == ref_paths
    for m in MONTHS:
        np.testing.assert_array_equal(composite(project_dir(app, p) / "imagery", m),
                                      composite(tmp_path / "ref", m))
