"""Streaming keeps memory bounded: a 4096 x 4096 px input never sits in RAM as a whole."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from geolatent.modalities import MODALITIES

SIZE = 4096
TILE = 256
VALID = 64  # a valid 64 x 64 px block in each tile on the diagonals; the rest is nodata, which
# keeps the model's share of the run small (tokens without data are dropped) while every tile
# is still read and every output pixel written.

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import torch
    from geolatent.inference.demo import random_model
    from geolatent.inference.embed_rasters import embed_geotiffs
    from geolatent.inference.file_inputs import RasterInput

    def rss_kb(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])

    torch.set_num_threads(2)
    model = random_model("nano")
    # Warm up torch's allocator and kernels on one small tile so they are in the baseline.
    x = np.full((1, 288, 288, 1, 12), 1500.0, np.float32)
    model.embed({"sentinel2_l2a": x}, timestamps=[[1, 0, 2024]], patch_size=8)
    base = rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    start = time.perf_counter()
    res = embed_geotiffs(
        model, {"sentinel2_l2a": [RasterInput(sys.argv[1], "2024-06-01")]}, sys.argv[2],
        patch_size=8, tile_size=256, overlap=16, batch_size=4, gdal_cache_mb=32,
    )
    peak = rss_kb("VmHWM")
    print(json.dumps({"base_kb": base, "peak_kb": peak, "seconds": time.perf_counter() - start,
                      "tiles": res.tiles_total, "embedded": res.tiles_embedded,
                      "shape": [res.height, res.width, res.count]}))
    """
)


def _peak_resettable() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@pytest.mark.slow  # >= 5 s (pytest --durations)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for peak RSS")
def test_peak_memory_stays_far_below_raster_size(tmp_path) -> None:
    if not _peak_resettable():
        pytest.skip("cannot reset the peak RSS counter (/proc/self/clear_refs)")
    bands = MODALITIES["sentinel2_l2a"].bands
    src_path = tmp_path / "big_s2.tif"
    profile = dict(
        driver="GTiff", width=SIZE, height=SIZE, count=12, dtype="uint16", nodata=0,
        crs="EPSG:32633", transform=Affine(10.0, 0.0, 400_000.0, 0.0, -10.0, 5_100_000.0),
        tiled=True, blockxsize=256, blockysize=256, compress="deflate",
    )  # fmt: skip
    rng = np.random.default_rng(0)
    block = rng.integers(300, 4000, (12, VALID, VALID)).astype(np.uint16)
    with rasterio.open(src_path, "w", **profile) as dst:
        for i, b in enumerate(bands, start=1):
            dst.set_band_description(i, b)
        n = SIZE // TILE
        for k in range(n):
            for j in range(n):
                if k == j or k + j == n - 1:  # both diagonals: 32 tiles with data
                    dst.write(block, window=Window(j * TILE + 96, k * TILE + 96, VALID, VALID))

    out = tmp_path / "emb.tif"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(src_path), str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    growth_mb = (stats["peak_kb"] - stats["base_kb"]) / 1024
    input_mb = SIZE * SIZE * 12 * 4 / 2**20  # the input as float32: 768 MiB
    output_mb = (SIZE // 8) ** 2 * 128 * 4 / 2**20  # the embedding as float32: 128 MiB
    print(f"peak RSS growth {growth_mb:.0f} MiB (input {input_mb:.0f}, output {output_mb:.0f} MiB)")
    assert stats["shape"] == [512, 512, 128]
    assert stats["tiles"] == 256 and stats["embedded"] == 32
    # Only fixed costs: a batch of windows and the model's activations on it (~100 MiB here),
    # GDAL's block cache, compression buffers. Holding the input would need 768 MiB.
    assert growth_mb < 256, stats
    with rasterio.open(out) as src:
        assert (src.height, src.width) == (512, 512)
        # Valid blocks are embedded, the rest is nodata; read one block, not the raster.
        # Valid data at input px 96-160 of the first tile = output px 12-20 (p = 8).
        assert np.isfinite(src.read(window=Window(12, 12, 8, 8))).all()
        assert np.isnan(src.read(1, window=Window(40, 8, 8, 8))).all()
