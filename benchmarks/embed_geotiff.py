"""``embed`` throughput on a synthetic GeoTIFF scene (tiles/s, km²/s, CPU seconds).

Writes the built-in sample scene (Sentinel-2 L2A + Sentinel-1, ``--timesteps`` dates) as one
GeoTIFF per modality and date, then times :func:`geolatent.inference.embed_rasters.
embed_geotiffs` with a random-weight Nano model (``--repeats`` runs, median), the default
tiling and one torch thread, and prints one JSON line. ``benchmarks/before_after.py --benches
embed`` runs it on two checkouts interleaved (issue #10: embed within 5 % of before).

    python benchmarks/embed_geotiff.py --size 256 --timesteps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, help="scene side in 10 m pixels")
    ap.add_argument("--timesteps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    from geolatent.data.synthetic import make_sample_scene, write_scene_geotiffs
    from geolatent.inference.demo import random_model
    from geolatent.inference.embed_rasters import embed_geotiffs

    try:  # the module holding RasterInput (named raster_io before the one-pixel-path change)
        from geolatent.inference.file_inputs import RasterInput
    except ImportError:
        from geolatent.inference.raster_io import RasterInput

    torch.set_num_threads(args.threads)
    model = random_model("nano")
    scene = make_sample_scene(args.size, args.size, timesteps=args.timesteps, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_scene_geotiffs(scene, Path(tmp) / "scene")
        inputs = {m: [RasterInput(p, d) for p, d in zip(files[m], scene.dates, strict=True)]
                  for m in ("sentinel2_l2a", "sentinel1")}
        walls, cpus, res = [], [], None
        for k in range(args.repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            res = embed_geotiffs(model, inputs, Path(tmp) / f"emb{k}.tif")
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    assert res is not None
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    km2 = (args.size * 10 / 1000) ** 2
    print(json.dumps({"size_px": args.size, "timesteps": args.timesteps,
                      "tiles": res.tiles_total, "tile_size": res.tile_size,
                      "overlap": res.overlap, "wall_s": wall, "cpu_s": cpu,
                      "tiles_per_s": res.tiles_total / wall, "km2_per_s": km2 / wall,
                      "km2_per_cpu_s": km2 / cpu}))


if __name__ == "__main__":
    main()
