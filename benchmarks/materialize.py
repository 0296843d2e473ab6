"""Window materialization throughput and memory on large COG scenes.

Generates one large uint16 cloud-optimized GeoTIFF per scene size in a temporary folder (written
block by block, never held in memory), then, in a fresh process per size, materializes random
256 px windows from it and reports windows per second and peak memory. Peak memory should not
grow with the scene size: only the blocks under each window are read.

    python benchmarks/materialize.py                       # 2048 and 10980 px scenes
    python benchmarks/materialize.py --sizes 4096 20000 --windows 64 --modes warp
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

ORIGIN = (600_000.0, 5_100_000.0)  # EPSG:32631, about 46 N 4.3 E
BLOCK = 512


def make_cog(path: Path, size: int, bands: int) -> Path:
    """A ``size x size x bands`` uint16 COG (deflate, 512 px tiles, overviews), block-wise."""
    import rasterio
    from affine import Affine
    from rasterio.shutil import copy as rio_copy

    tmp = path.with_suffix(".tiled.tif")
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=bands,
        dtype="uint16",
        crs="EPSG:32631",
        transform=Affine(10.0, 0.0, ORIGIN[0], 0.0, -10.0, ORIGIN[1]),
        nodata=0,
        tiled=True,
        blockxsize=BLOCK,
        blockysize=BLOCK,
        compress="deflate",
        zlevel=1,
        predictor=2,
        BIGTIFF="IF_SAFER",
    )
    rng = np.random.default_rng(0)
    with rasterio.Env(GDAL_CACHEMAX=256), rasterio.open(tmp, "w", **profile) as dst:
        for row in range(0, size, BLOCK):
            for col in range(0, size, BLOCK):
                h, w = min(BLOCK, size - row), min(BLOCK, size - col)
                yy, xx = np.mgrid[row : row + h, col : col + w].astype(np.float32)
                base = 2000 + 800 * np.sin(xx / 97.0) * np.cos(yy / 131.0)
                noise = rng.integers(0, 200, (bands, h, w))
                block = (base[None] + 300 * np.arange(bands)[:, None, None] + noise).astype(
                    np.uint16
                )
                dst.write(block, window=rasterio.windows.Window(col, row, w, h))
    with rasterio.Env(GDAL_CACHEMAX=256):
        rio_copy(
            tmp,
            path,
            driver="COG",
            COMPRESS="DEFLATE",
            LEVEL=1,
            PREDICTOR=2,
            BLOCKSIZE=BLOCK,
            OVERVIEW_RESAMPLING="NEAREST",
            BIGTIFF="IF_SAFER",
        )
    tmp.unlink()
    return path


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    Linux ``VmHWM`` belongs to this process image; ``ru_maxrss`` would also count the parent's
    peak (it survives fork + exec), which here includes writing the COG.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_windows(path: str, size: int, n_windows: int, reproject: bool, queue) -> None:
    """Child process: materialize ``n_windows`` random windows; report timing and memory."""
    from geolatent.data.config import FileSourceConfig
    from geolatent.data.materialize import materialize_window
    from geolatent.data.sources import open_source
    from geolatent.data.window import Window

    src = open_source(
        FileSourceConfig(
            name="cog",
            modality="sentinel2_l2a",
            paths=[path],
            bands=["B02", "B03", "B04", "B08"],
            date_pattern=r"_(\d{8})\.tif$",
            date_format="%Y%m%d",
        )
    )
    time_range = (datetime(2020, 6, 1), datetime(2020, 7, 1))
    rng = np.random.default_rng(1)
    # Warm-up window: imports, GDAL driver registration and the first open are not measured.
    c0, r0 = int(ORIGIN[0] / 10), int(-ORIGIN[1] / 10)
    materialize_window(Window("EPSG:32631", (c0, r0, c0 + 256, r0 + 256), time_range), [src])
    baseline = _peak_rss_mb()
    windows = []
    for _ in range(n_windows):
        col, row = (int(v) for v in rng.integers(0, size - 300, 2))
        x0, y1 = ORIGIN[0] + col * 10, ORIGIN[1] - row * 10
        if reproject:  # the same place on the UTM 32 grid: a real warp, not a windowed copy
            windows.append(
                Window.from_bounds(
                    (x0, y1 - 2560, x0 + 2560, y1),
                    bounds_crs="EPSG:32631",
                    crs="EPSG:32632",
                    time_range=time_range,
                )
            )
        else:
            c, r = int(x0 / 10), int(-y1 / 10)
            windows.append(Window("EPSG:32631", (c, r, c + 256, r + 256), time_range))
    t0 = time.perf_counter()
    valid = 0.0
    for w in windows:
        mw = materialize_window(w, [src])
        valid += mw.valid_fraction("sentinel2_l2a")
    elapsed = time.perf_counter() - t0
    queue.put(
        {
            "windows": n_windows,
            "seconds": elapsed,
            "windows_per_s": n_windows / elapsed,
            "peak_rss_mb": _peak_rss_mb(),
            "baseline_rss_mb": baseline,
            "mean_valid_fraction_10m_bands": valid / n_windows,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 10980], help="scene px")
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--windows", type=int, default=48, help="windows per scene size")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=["grid", "warp"],
        default=["grid", "warp"],
        help="grid: windows on the scene's own 10 m grid; warp: windows in the next UTM zone",
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")  # a fresh process: peak memory is per size
    with tempfile.TemporaryDirectory(prefix="geolatent_bench_") as tmp:
        for size in args.sizes:
            t0 = time.perf_counter()
            path = make_cog(Path(tmp) / f"scene_{size}_20200615.tif", size, args.bands)
            gen_s = time.perf_counter() - t0
            for mode in args.modes:
                queue = ctx.Queue()
                proc = ctx.Process(
                    target=run_windows,
                    args=(str(path), size, args.windows, mode == "warp", queue),
                )
                proc.start()
                res = queue.get()
                proc.join()
                res |= {
                    "scene_px": size,
                    "bands": args.bands,
                    "raw_scene_mb": round(size * size * args.bands * 2 / 2**20, 1),
                    "cog_mb": round(path.stat().st_size / 2**20, 1),
                    "generate_s": round(gen_s, 1),
                    "mode": mode,
                }
                if args.json:
                    print(json.dumps(res), flush=True)
                    continue
                grid = "warped to UTM 32" if mode == "warp" else "on the scene grid"
                growth = res["peak_rss_mb"] - res["baseline_rss_mb"]
                print(
                    f"scene {size}x{size}x{args.bands} uint16 COG ({res['cog_mb']} MB on disk, "
                    f"{res['raw_scene_mb']} MB raw): {res['windows']} windows of 256 px {grid} "
                    f"in {res['seconds']:.2f} s -> {res['windows_per_s']:.1f} windows/s; "
                    f"peak RSS {res['peak_rss_mb']:.0f} MB (+{growth:.0f} MB over the process "
                    "after imports and one warm-up window)",
                    flush=True,
                )
            path.unlink()


if __name__ == "__main__":
    main()
