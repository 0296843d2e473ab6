"""Scripted annotators for the load test and ``benchmarks/app_load.py``.

Each annotator (a thread with its own HTTP connection and API token) loops for a fixed time:
create a feature with a client-chosen UUID, then edit one of its own features with the version
it holds. Afterwards the server's features are compared with what the clients saw acknowledged:
none lost, none duplicated, every feature at the version and label of its last acknowledged
edit.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
import numpy as np


@dataclass
class LoadResult:
    saves: int
    errors: list[str]
    save_ms: np.ndarray
    lost: list[str]
    duplicated: list[str]
    mismatched: list[str]
    seconds: float
    features: int = 0
    tile_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def p95(self, a: np.ndarray) -> float:
        return float(np.percentile(a, 95)) if len(a) else float("nan")


def run_load(url: str, project: dict, tokens: list[str], seconds: float,
             classes: list[str], centre: tuple[float, float], seed: int = 0) -> LoadResult:
    """Run ``len(tokens)`` annotators against ``project`` for ``seconds``."""
    pid = project["id"]
    acked: dict[str, tuple[int, str]] = {}  # feature id -> (version, label) last acknowledged
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.monotonic() + seconds

    def annotator(i: int, token: str) -> None:
        rng = random.Random(seed * 1000 + i)
        mine: dict[str, int] = {}
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          timeout=60) as c:
            while time.monotonic() < stop_at:
                label = rng.choice(classes)
                lon = centre[0] + rng.uniform(-0.005, 0.005)
                lat = centre[1] + rng.uniform(-0.005, 0.005)
                d = 0.0003
                geom = {"type": "Polygon", "coordinates": [[[lon, lat], [lon + d, lat],
                                                            [lon + d, lat + d], [lon, lat + d],
                                                            [lon, lat]]]}
                t0 = time.perf_counter()
                if not mine or rng.random() < 0.3:
                    fid = str(uuid.uuid4())
                    r = c.post(f"/api/projects/{pid}/features",
                               json={"id": fid, "geometry": geom, "label": label})
                    ok = r.status_code == 201
                else:
                    fid = rng.choice(list(mine))
                    r = c.put(f"/api/projects/{pid}/features/{fid}",
                              json={"version": mine[fid], "geometry": geom, "label": label})
                    ok = r.status_code == 200
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    if ok:
                        latencies.append(ms)
                        mine[fid] = r.json()["version"]
                        acked[fid] = (mine[fid], label)
                    else:
                        errors.append(f"{r.status_code}: {r.text[:200]}")

    threads = [threading.Thread(target=annotator, args=(i, t)) for i, t in enumerate(tokens)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    stored = httpx.get(f"{url}/api/projects/{pid}/features", timeout=120,
                       headers={"Authorization": f"Bearer {tokens[0]}"}).json()
    ids = [f["id"] for f in stored]
    by_id = {f["id"]: f for f in stored}
    lost = sorted(set(acked) - set(ids))
    dup = sorted({i for i in ids if ids.count(i) > 1}) if len(ids) != len(set(ids)) else []
    mismatched = sorted(fid for fid, (v, lab) in acked.items() if fid in by_id and
                        (by_id[fid]["version"], by_id[fid]["label"]) != (v, lab))
    return LoadResult(len(latencies), errors, np.array(latencies), lost, dup, mismatched,
                      elapsed, len(stored))


def tile_latencies(url: str, project: dict, token: str, n: int = 100) -> np.ndarray:
    """Milliseconds per 256 px tile over the sample's area (zooms 14-17, all months)."""
    import morecantile
    from shapely.geometry import shape

    tms = morecantile.tms.get("WebMercatorQuad")
    minx, miny, maxx, maxy = shape(project["aoi"]).bounds
    tiles = [t for z in (14, 15, 16, 17) for t in tms.tiles(minx, miny, maxx, maxy, [z])]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                      timeout=60) as c:
        dates = c.get(f"/api/projects/{project['id']}/imagery").json()["scenes"]["sentinel2_l2a"]
        out = []
        for i in range(n):
            t = tiles[i % len(tiles)]
            date = dates[i % len(dates)]
            preset = ("true_color", "false_color", "sar")[i % 3]
            t0 = time.perf_counter()
            r = c.get(f"/api/projects/{project['id']}/imagery/tiles/{preset}/{date}/"
                      f"{t.z}/{t.x}/{t.y}.png")
            out.append((time.perf_counter() - t0) * 1000)
            assert r.status_code in (200, 204), r.text
    return np.array(out)
