"""A fine-tuning job interrupted by a server restart continues from its last finished epoch (not
from scratch) on the labels it started with, and ends with the model an uninterrupted job of
the same inputs gives, bit for bit. Real server (uvicorn in a subprocess), real SQLite file."""

from __future__ import annotations

import re
import time

import pytest

from .servers import ADMIN, Client, start_server
from .test_jobs import FAST, label_polygons, labelled_project, wait_job

pytestmark = pytest.mark.slow
EPOCHS = 6


def _job(c: Client, pid: int, job_id: int) -> dict:
    return c.get(f"/api/projects/{pid}/jobs/{job_id}").json()


def test_finetune_job_resumes_from_its_last_epoch_after_a_server_restart(tmp_path):
    project_dir = tmp_path / "project"
    server = start_server(project_dir)
    try:
        c = Client(server.url, *ADMIN)
        p = labelled_project(c, 12)
        pid = p["id"]
        params = {**FAST, "epochs": EPOCHS}
        job = c.post(f"/api/projects/{pid}/jobs", json={"kind": "finetune",
                                                        "params": params}).json()
        deadline = time.monotonic() + 300
        while f"epoch 2/{EPOCHS}" not in _job(c, pid, job["id"])["log"]:  # epoch 1 is saved
            assert time.monotonic() < deadline, _job(c, pid, job["id"])["log"][-3000:]
            assert _job(c, pid, job["id"])["status"] in ("queued", "running")
            time.sleep(0.1)
    finally:
        server.stop()  # the worker dies with the server, mid-run: the row stays "running"
    folder = project_dir / "projects" / p["slug"] / "jobs" / str(job["id"])
    assert not (folder / "model" / "bundle.json").exists()
    labels = (folder / "labels.geojson").read_bytes()

    server = start_server(project_dir)
    try:
        c = Client(server.url, *ADMIN)
        # an edit after the start never changes the running job's inputs
        extra = c.post(f"/api/projects/{pid}/features", json=label_polygons(13)[-1])
        assert extra.status_code == 201, extra.text
        done = wait_job(c, pid, job["id"], {"succeeded", "failed", "cancelled"}, 600)
        assert done["status"] == "succeeded", done["error"] or done["log"][-3000:]
        log = done["log"]
        assert "requeued after a restart" in log
        after = log.split("requeued after a restart")[1]
        k = int(re.search(rf"resumed at epoch (\d+)/{EPOCHS}", after).group(1))
        assert k >= 2  # not from scratch: epoch 1 (at least) is not trained again
        assert [int(n) for n in re.findall(rf"\bepoch (\d+)/{EPOCHS} ", after)] == \
            list(range(k, EPOCHS + 1))
        assert done["progress"] == 1.0 and (folder / "labels.geojson").read_bytes() == labels

        # an uninterrupted job on the same inputs gives the same model, bit for bit
        gone = c.delete(f"/api/projects/{pid}/features/{extra.json()['id']}",
                        params={"version": extra.json()["version"]})
        assert gone.status_code == 204, gone.text
        again = c.post(f"/api/projects/{pid}/jobs", json={"kind": "finetune",
                                                          "params": params}).json()
        again = wait_job(c, pid, again["id"], {"succeeded", "failed", "cancelled"}, 600)
        assert again["status"] == "succeeded", again["error"] or again["log"][-3000:]
        assert "resumed" not in again["log"]
        other = folder.parent / str(again["id"])
        assert (other / "labels.geojson").read_bytes() == labels
        assert (other / "model" / "weights.safetensors").read_bytes() == \
            (folder / "model" / "weights.safetensors").read_bytes()
        assert again["result"]["metrics"] == done["result"]["metrics"]
    finally:
        server.stop()
