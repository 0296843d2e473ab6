"""Runs as background jobs through the worker process of a real server: fine-tune on labels
drawn in the app, predict over the project's area, result layer with legend, downloads,
cancel, and resume after a server restart."""

from __future__ import annotations

import io
import time
import uuid

import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
from pyproj import Transformer
from shapely.geometry import mapping, shape

from geolatent.app.sample import SAMPLE_SIZE, SAMPLE_YEAR
from geolatent.data.synthetic import CLASS_NAMES, make_sample_scene

from .servers import ADMIN, Client, start_server

pytestmark = pytest.mark.slow
FAST = {"epochs": 2, "batch_size": 8, "patch_size": 8, "head_hidden": 16, "window_px": 16,
        "encoder": "nano"}  # a random Nano encoder: a smoke run, not a useful model


def label_polygons(max_count: int = 40) -> list[dict]:
    """The sample scene's land-cover map as lon/lat polygons (the largest ones)."""
    scene = make_sample_scene(SAMPLE_SIZE, SAMPLE_SIZE, 12, seed=0, year=SAMPLE_YEAR)
    tr = Transformer.from_crs(scene.crs.to_wkt(), "EPSG:4326", always_xy=True)
    polys = [(shape(g), int(v)) for g, v in rasterio.features.shapes(
        scene.labels, transform=scene.transform)]
    polys.sort(key=lambda p: -p[0].area)
    return [{"geometry": mapping(shapely.transform(
                 g.buffer(-5).simplify(5), lambda xy: np.column_stack(tr.transform(*xy.T)))),
             "label": CLASS_NAMES[v]} for g, v in polys[:max_count]
            if not g.buffer(-5).is_empty]


def wait_job(c: Client, pid: int, job_id: int, until: set[str], timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/api/projects/{pid}/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still {job['status']}: {job['log'][-2000:]}")


def labelled_project(c: Client, max_count: int = 40) -> dict:
    p = c.post("/api/projects", json={"name": f"runs-{uuid.uuid4().hex[:6]}",
                                      "imagery": {"type": "sample"}}).json()
    for f in label_polygons(max_count):
        r = c.post(f"/api/projects/{p['id']}/features", json=f)
        assert r.status_code == 201, r.text
    return p


def test_finetune_then_predict_result_layer_legend_downloads(sqlite_server):
    c = Client(sqlite_server.url, *ADMIN)
    p = labelled_project(c)
    pid = p["id"]
    bad = c.post(f"/api/projects/{pid}/jobs", json={"kind": "predict", "params": {}})
    assert bad.status_code == 422 and "model_job" in bad.text
    ft = c.post(f"/api/projects/{pid}/jobs", json={"kind": "finetune", "params": FAST}).json()
    ft = wait_job(c, pid, ft["id"], {"succeeded", "failed", "cancelled"})
    assert ft["status"] == "succeeded", ft["error"] or ft["log"][-3000:]
    assert "epoch 2/2" in ft["log"] and ft["progress"] == 1.0
    val = ft["result"]["metrics"]["val"]
    assert "per_class" in val and len(val["confusion"]) == len(val["per_class"])
    pr = c.post(f"/api/projects/{pid}/jobs", json={
        "kind": "predict", "params": {"model_job": ft["id"], "start": "2024-01-01",
                                      "end": "2024-02-29"}}).json()
    pr = wait_job(c, pid, pr["id"], {"succeeded", "failed", "cancelled"})
    assert pr["status"] == "succeeded", pr["error"] or pr["log"][-3000:]
    legend = pr["result"]["legend"]
    schema = {k["value"]: k["color"] for k in p["label_schema"]["classes"]}
    assert legend and all(e["color"] == schema[e["value"]] for e in legend)
    tif = c.get(f"/api/projects/{pid}/jobs/{pr['id']}/files/map.tif")
    assert tif.status_code == 200
    with rasterio.MemoryFile(tif.content) as mem, mem.open() as src:
        classes = src.read(1)
        assert src.crs is not None and (classes != 255).mean() > 0.5
    gj = c.get(f"/api/projects/{pid}/jobs/{pr['id']}/files/map.geojson").json()
    assert {f["properties"]["name"] for f in gj["features"]} <= set(CLASS_NAMES)
    import morecantile
    from PIL import Image

    ctr = shape(p["aoi"]).centroid
    t = morecantile.tms.get("WebMercatorQuad").tile(ctr.x, ctr.y, 15)
    tile = c.get(f"/api/projects/{pid}/jobs/{pr['id']}/tiles/{t.z}/{t.x}/{t.y}.png")
    assert tile.status_code == 200
    rgba = np.asarray(Image.open(io.BytesIO(tile.content)).convert("RGBA"))
    shown = {"#" + bytes(px[:3].tolist()).hex() for px in rgba.reshape(-1, 4) if px[3]}
    assert shown and shown <= {e["color"] for e in legend}  # only legend colours on the map
    sneaky = c.get(f"/api/projects/{pid}/jobs/{pr['id']}/files/..%2F..%2Fgeolatent.db")
    assert sneaky.status_code == 404 and b"SQLite" not in sneaky.content


def test_cancel_running_job(sqlite_server):
    c = Client(sqlite_server.url, *ADMIN)
    p = labelled_project(c, 12)
    job = c.post(f"/api/projects/{p['id']}/jobs",
                 json={"kind": "finetune", "params": {**FAST, "epochs": 200}}).json()
    wait_job(c, p["id"], job["id"], {"running"}, 120)
    c.post(f"/api/projects/{p['id']}/jobs/{job['id']}/cancel")
    done = wait_job(c, p["id"], job["id"], {"succeeded", "failed", "cancelled"}, 300)
    assert done["status"] == "cancelled"


def test_job_resumes_after_server_restart_then_predicts_on_dask(tmp_path):
    """Stop the server mid fine-tune; the restarted server's worker requeues the job and
    finishes it. The restarted server sends prediction tiles to an existing Dask cluster
    (``--dask-scheduler``)."""
    distributed = pytest.importorskip("distributed")
    project_dir = tmp_path / "project"
    server = start_server(project_dir)
    try:
        c = Client(server.url, *ADMIN)
        p = labelled_project(c, 12)
        job = c.post(f"/api/projects/{p['id']}/jobs",
                     json={"kind": "finetune", "params": {**FAST, "epochs": 2}}).json()
        deadline = time.monotonic() + 300
        while "epoch 1/2" not in c.get(f"/api/projects/{p['id']}/jobs/{job['id']}").json()["log"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        server.stop()  # the worker dies with the server, mid-run: the row stays "running"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as dask_client:
        server = start_server(project_dir, extra_args=("--dask-scheduler",
                                                       cluster.scheduler_address))
        try:
            c = Client(server.url, *ADMIN)
            done = wait_job(c, p["id"], job["id"], {"succeeded", "failed", "cancelled"}, 600)
            assert done["status"] == "succeeded", done["error"] or done["log"][-3000:]
            assert "requeued after a restart" in done["log"] and "epoch 2/2" in done["log"]
            with distributed.get_task_stream(dask_client) as stream:
                pr = c.post(f"/api/projects/{p['id']}/jobs", json={
                    "kind": "predict", "params": {"model_job": job["id"], "start": "2024-01-01",
                                                  "end": "2024-02-29"}}).json()
                pr = wait_job(c, p["id"], pr["id"], {"succeeded", "failed", "cancelled"})
            assert pr["status"] == "succeeded", pr["error"] or pr["log"][-3000:]
            assert "Dask cluster" in pr["log"]
            assert stream.data  # the cluster ran the tiles
        finally:
            server.stop()
