"""Load figure of the web app: N scripted annotators saving edits concurrently on loopback for
a fixed time against a real ``geolatent serve`` (SQLite WAL, or a throwaway PostgreSQL with
``--postgres``); prints saves/s, p50/p95 save latency, lost/duplicated features, and p50/p95 of
256 px imagery tiles. Run: ``python benchmarks/app_load.py [--seconds 60] [--postgres]``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
from shapely.geometry import shape

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # as pytest sees it
from tests.app.load import run_load, tile_latencies  # noqa: E402
from tests.app.servers import ADMIN, Client, start_postgres, start_server  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--annotators", type=int, default=20)
    ap.add_argument("--tiles", type=int, default=200)
    ap.add_argument("--postgres", action="store_true")
    args = ap.parse_args()
    pg = start_postgres() if args.postgres else None
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "project", pg.url if pg else "")
        try:
            with Client(server.url, *ADMIN) as admin:
                project = admin.post("/api/projects", json={
                    "name": "load", "imagery": {"type": "sample"}}).json()
                tokens = []
                for i in range(args.annotators):
                    name = f"ann{i}"
                    admin.post("/api/users", json={"username": name, "password": "pw-12345678"})
                    admin.put(f"/api/projects/{project['id']}/members",
                              json={"username": name, "role": "annotator"})
                    with Client(server.url, name, "pw-12345678") as c:
                        tokens.append(c.post("/api/auth/tokens", json={"name": "x"}
                                             ).json()["token"])
            classes = [c["value"] for c in project["label_schema"]["classes"]]
            c = shape(project["aoi"]).centroid
            res = run_load(server.url, project, tokens, args.seconds, classes, (c.x, c.y),
                           seed=uuid.uuid4().int % 1000)
            tiles = tile_latencies(server.url, project, tokens[0], args.tiles)
        finally:
            server.stop()
            if pg:
                pg.stop()
    db = "PostgreSQL 15" if args.postgres else "SQLite (WAL)"
    print(f"database: {db}; {args.annotators} annotators for {res.seconds:.1f} s")
    print(f"saves: {res.saves} ({res.saves / res.seconds:.1f}/s), errors: {len(res.errors)}")
    print(f"save latency ms: p50 {np.percentile(res.save_ms, 50):.0f}, "
          f"p95 {np.percentile(res.save_ms, 95):.0f}")
    print(f"features stored: {res.features}; lost {len(res.lost)}, duplicated "
          f"{len(res.duplicated)}, stale {len(res.mismatched)}")
    print(f"256 px tiles ({len(tiles)} sequential): p50 {np.percentile(tiles, 50):.0f} ms, "
          f"p95 {np.percentile(tiles, 95):.0f} ms")


if __name__ == "__main__":
    main()
