"""Load: 20 scripted annotators saving edits concurrently for 10 s on loopback (the 60 s figure
comes from benchmarks/app_load.py): no lost or duplicated feature, p95 save latency reported."""

from __future__ import annotations

import uuid

import pytest
from shapely.geometry import shape

from .load import run_load, tile_latencies
from .servers import ADMIN, Client

pytestmark = pytest.mark.slow


def test_twenty_annotators_lose_and_duplicate_nothing(server):
    with Client(server.url, *ADMIN) as admin:
        project = admin.post("/api/projects", json={"name": f"load-{uuid.uuid4().hex[:6]}",
                                                    "imagery": {"type": "sample"}}).json()
        tokens = []
        for i in range(20):
            name = f"ann{i}-{uuid.uuid4().hex[:4]}"
            admin.post("/api/users", json={"username": name, "password": "annotator-pw-1"})
            admin.put(f"/api/projects/{project['id']}/members",
                      json={"username": name, "role": "annotator"})
            with Client(server.url, name, "annotator-pw-1") as c:
                tokens.append(c.post("/api/auth/tokens", json={"name": "load"}).json()["token"])
    classes = [c["value"] for c in project["label_schema"]["classes"]]
    c = shape(project["aoi"]).centroid
    res = run_load(server.url, project, tokens, 10, classes, (c.x, c.y))
    print(f"\n{server.url}: {res.saves} saves in {res.seconds:.1f} s by 20 annotators, "
          f"p95 save {res.p95(res.save_ms):.0f} ms, {res.features} features")
    assert not res.errors, res.errors[:5]
    assert res.saves > 20
    assert res.lost == [] and res.duplicated == [] and res.mismatched == []
    tiles = tile_latencies(server.url, project, tokens[0], n=30)
    print(f"tile p95 {float(sorted(tiles)[int(0.95 * len(tiles)) - 1]):.0f} ms")
