"""Embedding archives: build throughput, store size per km², and index search at scale.

Three parts (all on this machine; CPU model and flags are printed):

1. ``build``: km² per second of :func:`geolatent.archive.build` over the built-in sample scene
   (GeoTIFFs, Sentinel-2, 3 monthly steps, ``--scene`` px square, 64 px tiles, p=4) with Nano
   and Base architectures (random weights saved to a folder: same compute as trained weights);
   ``--models base@v1.3`` adds the v1.3 Base architecture's location-embedding archives, per
   pixel (10 m) and per patch (40 m), with their store size per km².
2. ``size``: bytes of the ``embeddings`` array per km² for float32 / float16 / int8, the same
   vectors (the float32 Nano build) written with the archive's layout and compression.
3. ``search``: ``--vectors`` (default 1 million; ``--vectors 10000000`` for the issue's figure)
   synthetic 128-d int8 vectors in the archive layout (clustered: 1000 Gaussian clusters,
   within-cluster cosine about 0.5), the FAISS index build time, its size and the process's
   process's peak resident memory, p50/p95 latency of single queries through the index
   (query = normalized mean of 3 vectors of one cluster, like search by example), and
   recall@10 against exact search (one streaming pass over the dequantized vectors for all
   queries together).

    python benchmarks/archive.py                        # all parts, 1 M vectors
    python benchmarks/archive.py --parts search --vectors 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def cpu_info() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                      if ln.startswith("Model name")), platform.processor())
        flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines()
                      if ln.startswith("Flags")), [])
        simd = [f for f in flags if f.startswith(("avx", "fma", "sse4", "amx"))]
        return f"{model}, {os.cpu_count()} CPUs, flags {' '.join(simd)}"
    except OSError:
        return platform.processor()


def rss_mb() -> float:
    for ln in Path("/proc/self/status").read_text().splitlines():
        if ln.startswith("VmRSS:"):
            return int(ln.split()[1]) / 1024
    return float("nan")


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- 1. build -------------------------------------------------------------------------------------
def bench_build(work: Path, scene_px: int, sizes: list[str]) -> dict:
    import json as _json

    import shapely
    from shapely.geometry import box, mapping

    import geolatent.archive as ga
    from geolatent.data.config import FileSourceConfig
    from geolatent.data.synthetic import make_sample_scene, write_scene_geotiffs
    from geolatent.data.window import WGS84, reproject_geometry
    from geolatent.modalities import MODALITIES
    from geolatent.model import build_model, save_model

    origin = (400_000.0, 5_101_440.0)  # tile-aligned for 64 px tiles
    scene = make_sample_scene(scene_px, scene_px, timesteps=3, seed=0, origin=origin)
    write_scene_geotiffs(scene, work / "imagery")
    src = FileSourceConfig(name="s2", type="files", modality="sentinel2_l2a",
                           paths=[str(work / "imagery" / "sentinel2_l2a_*.tif")],
                           bands=list(MODALITIES["sentinel2_l2a"].bands), nodata=0,
                           date_pattern=r"_(\d{4}-\d{2}-\d{2})\.tif", date_format="%Y-%m-%d")
    x0, y1 = origin
    area = box(x0 + 5, y1 - scene_px * 10 + 5, x0 + scene_px * 10 - 5, y1 - 5)
    ll = reproject_geometry(shapely.segmentize(area, 20), "EPSG:32633", WGS84)
    (work / "area.geojson").write_text(_json.dumps(mapping(ll)))
    out = {}
    for spec in sizes:
        size, _, version = spec.partition("@")
        version = version or "v1"
        mdir = work / f"model_{size}_{version}"
        save_model(build_model(size, version), mdir)
        # v1.3 (location tokens): per pixel (s=1, the default) and one vector per patch (s=p)
        runs = [("int8", None)] if version != "v1.3" else [("int8", 1), ("int8", 4)]
        if spec == sizes[0]:
            runs.insert(0, ("float32", runs[0][1]))
        for dtype, s in runs:
            name = f"{spec}_{dtype}" + ("" if s is None else f"_s{s}")
            r = ga.build(mdir, work / "area.geojson", "2024-01-01", "2024-03-31",
                         work / f"{name}.zarr", sources=[src], dtype=dtype, tile_size=64,
                         location_patch_size=s)  # fmt: skip
            out[name] = {"km2": round(r.area_km2, 3), "seconds": round(r.seconds, 2),
                         "km2_per_s": round(r.km2_per_s, 4), "tiles": r.tiles_total,
                         "vectors": r.vectors, "vectors_per_s": round(r.vectors / r.seconds, 1),
                         "store_mb_per_km2": round(du(work / f"{name}.zarr" / "zones") / 1e6
                                                   / r.area_km2, 3),
                         "dequantization_cosine": r.dequantization_cosine}  # fmt: skip
            what = "patch vectors, PCA fit included" if s is None else \
                f"location embedding, one vector per {s}x{s} px"
            print(f"build {name}: {r.area_km2:.2f} km2, {r.vectors} vectors, {r.tiles_total} "
                  f"tiles in {r.seconds:.1f} s = {r.km2_per_s:.4f} km2/s ({what})", flush=True)
    return out


# -- 2. size --------------------------------------------------------------------------------------
def bench_size(work: Path, float_store: Path) -> dict:
    import zarr

    from geolatent.archive.quantize import decode
    from geolatent.archive.store import create_archive, grid_from_attrs, write_zone_vectors

    src = zarr.open_group(str(float_store), mode="r")
    zone_name = sorted(src["zones"].group_keys())[0]
    zone = src["zones"][zone_name]
    grid = grid_from_attrs(dict(zone.attrs))
    v, ok = decode(zone["embeddings"][:])
    v[~ok] = np.nan
    km2 = ok.sum() * (10.0 * grid.patch_size) ** 2 / 1e6
    out = {}
    for dtype in ("float32", "float16", "int8"):
        p = work / f"size_{dtype}.zarr"
        root = create_archive(p, model=dict(src.attrs["geoemb:model"]), dims=v.shape[-1],
                              dtype=dtype, patch_size=grid.patch_size)
        t = grid.tile_out
        write_zone_vectors(root, grid.crs, grid.col0, grid.row0, v.shape[0], v.shape[1],
                           (v[r:r + t] for r in range(0, v.shape[0], t)), tile_out=t)
        n = du(p / "zones" / zone_name / "embeddings")
        out[dtype] = {"bytes_per_km2": round(n / km2), "km2": round(float(km2), 3)}
        print(f"store {dtype}: {n / km2 / 1e6:.3f} MB per km2 ({v.shape[-1]} dims, "
              f"{10 * grid.patch_size} m pixels, compressed chunks)", flush=True)
    return out


# -- 3. search ------------------------------------------------------------------------------------
def clustered(rng, centres, n, spread):
    idx = rng.integers(0, len(centres), n)
    x = centres[idx] + spread * rng.standard_normal((n, centres.shape[1]), dtype=np.float32) \
        / np.sqrt(centres.shape[1])
    return x / np.linalg.norm(x, axis=1, keepdims=True), idx


def bench_search(work: Path, n_vectors: int, queries: int, nprobe: int | None) -> dict:
    import faiss

    import geolatent.archive as ga
    from geolatent.archive.index import build_index, open_index
    from geolatent.archive.store import create_archive, write_zone_vectors

    dims, cols, strip = 128, 3200, 64
    rows = -(-n_vectors // cols)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1000, dims), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    path = work / "search.zarr"
    t0 = time.perf_counter()
    root = create_archive(path, model={"id": "synthetic", "revision": "0"}, dims=dims,
                          dtype="int8")
    labels = np.empty((rows, cols), np.int16)

    def strips():
        for r in range(0, rows, strip):
            h = min(strip, rows - r)
            x, lab = clustered(rng, centres, h * cols, 1.0)
            labels[r:r + h] = lab.reshape(h, cols)
            yield x.reshape(h, cols, dims)

    write_zone_vectors(root, "EPSG:32633", 40_000, -510_000, rows, cols, strips(), tile_out=64)
    t_write = time.perf_counter() - t0
    print(f"wrote {rows * cols:,} int8 vectors in {t_write:.0f} s "
          f"({du(path) / 1e9:.2f} GB on disk)", flush=True)
    a = ga.open(path)
    for p in path.parent.glob("search.faiss*"):
        p.unlink()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    idx = build_index(a)
    t_index = time.perf_counter() - t0
    size = (path.parent / "search.faiss").stat().st_size
    print(f"index {idx.meta['kind']}: built in {t_index:.0f} s (train {idx.meta['train_seconds']}"
          f" s), {size / 1e9:.2f} GB", flush=True)
    del idx
    idx = open_index(a)
    # faiss keeps the codes, ids and centroids in RAM: the loaded index takes about its file size
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # queries: normalized mean of 3 random vectors of one cluster, looked up in the archive
    qs = []
    emb = a.zones[0]
    from geolatent.archive.quantize import decode

    for _ in range(queries):
        c = rng.integers(0, 1000)
        rr, cc = np.nonzero(labels[: min(rows, 512)] == c)
        pick = rng.choice(len(rr), 3, replace=False)
        v, _ = decode(emb.read_pixels(rr[pick], cc[pick]))
        q = v.mean(0)
        qs.append(q / np.linalg.norm(q))
    Q = np.stack(qs).astype(np.float32)
    # exact: one streaming pass for all queries
    t0 = time.perf_counter()
    best_s = np.full((queries, 10), -np.inf, np.float32)
    best_i = np.zeros((queries, 10), np.int64)
    for _, r0, v, ok in a.iter_vectors():
        s = v.reshape(-1, dims) @ Q.T
        s[~ok.ravel()] = -np.inf
        ids = r0 * cols + np.arange(s.shape[0])
        top = np.argpartition(-s, 10, axis=0)[:10]  # [10, Q]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, top, 0).T], 1)
        cand_i = np.concatenate([best_i, ids[top].T], 1)
        o = np.argsort(-cand_s, 1)[:, :10]
        best_s = np.take_along_axis(cand_s, o, 1)
        best_i = np.take_along_axis(cand_i, o, 1)
    t_exact = time.perf_counter() - t0
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    res = {}
    for probe in ([nprobe] if nprobe else [16, 32, 48, 64]):
        lat, recall = [], []
        for i in range(queries):
            t = time.perf_counter()
            m = idx.search(Q[i], 0.0, "cosine", 10, set(), probe)
            lat.append((time.perf_counter() - t) * 1000)
            got = {mm.row * cols + mm.col for mm in m}
            recall.append(len(got & set(best_i[i].tolist())) / 10)
        res[probe] = {"p50_ms": round(float(np.percentile(lat, 50)), 2),
                      "p95_ms": round(float(np.percentile(lat, 95)), 2),
                      "recall_at_10": round(float(np.mean(recall)), 4)}
        print(f"nprobe {probe}: p50 {res[probe]['p50_ms']} ms, p95 {res[probe]['p95_ms']} ms, "
              f"recall@10 {res[probe]['recall_at_10']}", flush=True)
    print(f"exact search: {t_exact:.1f} s for {queries} queries in one pass "
          f"({t_exact / queries * 1000:.0f} ms per query amortized)", flush=True)
    return {"vectors": int(rows * cols), "write_seconds": round(t_write, 1),
            "index_kind": idx.meta["kind"], "index_build_seconds": round(t_index, 1),
            "index_train_seconds": idx.meta["train_seconds"], "index_bytes": size,
            "rss_mb_before_index": round(rss0), "peak_rss_mb_after_index": round(peak_rss),
            "exact_pass_seconds": round(t_exact, 1), "by_nprobe": res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["build", "size", "search"])
    ap.add_argument("--models", nargs="+", default=["nano", "base"],
                    help="sizes, SIZE@VERSION for a release version (base@v1.3: per pixel)")
    ap.add_argument("--scene", type=int, default=128, help="sample scene side in pixels")
    ap.add_argument("--vectors", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--nprobe", type=int, default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_info()}; torch threads {args.threads}; machine shared with other jobs")
    work = args.work or Path(tempfile.mkdtemp(prefix="archive_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"cpu": cpu_info(), "threads": args.threads}
    try:
        if "build" in args.parts:
            out["build"] = bench_build(work, args.scene, args.models)
        if "size" in args.parts:
            store = work / f"{args.models[0]}_float32.zarr"
            if not store.exists():
                out.setdefault("build", {}).update(bench_build(work, args.scene, args.models[:1]))
            out["size"] = bench_size(work, store)
        if "search" in args.parts:
            out["search"] = bench_search(work, args.vectors, args.queries, args.nprobe)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
