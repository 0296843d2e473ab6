"""Windowed reads of a remote COG through the STAC API source's reader, on loopback.

Writes one 10980 x 10980 uint16 COG (a Sentinel-2 tile; deflate, ``--block`` px tiles as on
Earth Search / Planetary Computer, overviews) in a temporary folder, serves it with a threaded
range-request HTTP server on 127.0.0.1, and reads random 256 px windows through the data
layer's remote path (``read_scene`` of a ``stac_api`` source: GDAL range reads, retries, window
cache) with 1, 4 and 16 windows in flight. Prints windows per second and the bytes the server
sent per window, as a ratio to the window's own bytes (256 * 256 * 2): a windowed read must
fetch only the tiles under the window, never the scene (a whole-scene download would be a
ratio of ~1840 uncompressed).

    python benchmarks/stac_fetch.py                     # 1024 px tiles, 48 windows per level
    python benchmarks/stac_fetch.py --block 512 --windows 96
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np

SIZE = 10980
ORIGIN = (600_000.0, 5_100_000.0)  # EPSG:32631
WIN = 256


def make_cog(path: Path, block: int) -> None:
    """A 10980^2 uint16 COG written block by block (reflectance-like: smooth field + noise)."""
    import rasterio
    from affine import Affine
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window as RW

    tmp = path.with_suffix(".tiled.tif")
    rng = np.random.default_rng(0)
    with rasterio.open(tmp, "w", driver="GTiff", width=SIZE, height=SIZE, count=1,
                       dtype="uint16", crs="EPSG:32631", nodata=0, tiled=True, blockxsize=512,
                       blockysize=512, compress="deflate",
                       transform=Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])) as dst:
        for r in range(0, SIZE, 512):
            for c in range(0, SIZE, 512):
                h, w = min(512, SIZE - r), min(512, SIZE - c)
                yy, xx = np.mgrid[r:r + h, c:c + w]
                base = 1500 + 800 * np.sin(yy / 700.0) * np.cos(xx / 900.0)
                block_data = base + rng.normal(0, 120, (h, w))
                dst.write(np.clip(block_data, 1, 10000).astype(np.uint16)[None],
                          window=RW(c, r, w, h))
    with rasterio.open(tmp) as src:
        rio_copy(src, path, driver="COG", blocksize=block, compress="deflate",
                 overview_resampling="average")
    tmp.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block", type=int, default=1024, help="COG tile size (px)")
    ap.add_argument("--windows", type=int, default=48, help="windows per concurrency level")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))
    from stac_servers import AssetServer  # the tests' loopback range server

    from geolatent.data.config import StacApiSourceConfig
    from geolatent.data.materialize import read_scene
    from geolatent.data.sources import BandAsset, Scene, Source
    from geolatent.data.window import Window

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        make_cog(tmp / "B04.tif", args.block)
        size_mb = (tmp / "B04.tif").stat().st_size / 1e6
        print(f"COG {SIZE}x{SIZE} uint16, {args.block} px tiles, {size_mb:.0f} MB, written in "
              f"{time.perf_counter() - t0:.0f} s")
        with AssetServer(tmp) as server:
            rng = np.random.default_rng(1)
            c0 = round(ORIGIN[0] / 10)
            r0 = round(-ORIGIN[1] / 10)
            # interleaved: each level twice, in forward then reverse order
            for rep, levels in enumerate((args.levels, list(reversed(args.levels)))):
                for level in levels:
                    cfg = StacApiSourceConfig(
                        name="bench", modality="sentinel2_l2a", url="http://127.0.0.1",
                        collections=["x"], assets={"B04": "red"},
                        cache_dir=str(tmp / f"cache-{rep}-{level}"), retries=2)
                    src = Source(cfg, ("B04",), [])
                    scene = Scene("s", datetime(2024, 6, 1),
                                  {"B04": BandAsset(f"{server.url}/B04.tif")},
                                  (0.0, 0.0, 1.0, 1.0))
                    offs = rng.integers(0, SIZE - WIN, (args.windows, 2))
                    windows = [Window("EPSG:32631", (c0 + int(x), r0 + int(y), c0 + int(x) + WIN,
                                                     r0 + int(y) + WIN),
                                      (datetime(2024, 6, 1), datetime(2024, 7, 1)))
                               for x, y in offs]
                    server.clear_log()
                    t = time.perf_counter()
                    with ThreadPoolExecutor(level) as pool:
                        n = len(windows)
                        outs = list(pool.map(read_scene, [scene] * n, [src] * n, windows))
                    dt = time.perf_counter() - t
                    assert all(np.isfinite(o[2]).all() for o in outs)  # B04 is channel 2
                    sent = sum(r.bytes_sent for r in server.requests("B04.tif"))
                    per = sent / len(windows)
                    print(f"concurrent {level:2d}: {len(windows) / dt:6.1f} windows/s, "
                          f"{per / 1e3:7.1f} kB read per window, ratio bytes read / window "
                          f"bytes = {per / (WIN * WIN * 2):.2f}, "
                          f"{len(server.requests('B04.tif')) / len(windows):.1f} requests/window")


if __name__ == "__main__":
    main()
