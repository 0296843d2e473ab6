"""Area prediction throughput (km² per second) and peak memory at several area sizes.

Generates monthly Sentinel-2 GeoTIFFs (12 bands, uint16 DN, tiled, written block by block)
covering the largest area, and a fine-tuned model folder with a random-weight encoder (or uses
``--model``). Then, in a fresh process per area size, runs :func:`predict_area` over a square
area and reports km²/s and the process's peak resident memory. Peak memory must not grow with
the area: tiles are materialized, predicted and written one at a time.

    python benchmarks/predict_area.py                          # nano on CPU, 2 sizes
    python benchmarks/predict_area.py --sizes 512 2048 --size-model base --device cuda \\
        --precision bf16                                       # base bf16 on a GPU
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

CRS = "EPSG:32633"
ORIGIN = (500_000.0, 5_100_000.0)  # about 46 N 15 E
BLOCK = 256


def make_inputs(folder: Path, size: int, months: int) -> list[Path]:
    """One ``size x size`` 12-band uint16 GeoTIFF per month (2024), written block by block."""
    import rasterio
    from affine import Affine

    from geolatent.modalities import MODALITIES

    bands = MODALITIES["sentinel2_l2a"].bands
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for m in range(months):
        path = folder / f"s2_2024-{m + 1:02d}-15.tif"
        profile = dict(driver="GTiff", width=size, height=size, count=len(bands), dtype="uint16",
                       crs=CRS, transform=Affine(10.0, 0.0, ORIGIN[0], 0.0, -10.0, ORIGIN[1]),
                       nodata=0, tiled=True, blockxsize=BLOCK, blockysize=BLOCK,
                       compress="deflate", zlevel=1, predictor=2, BIGTIFF="IF_SAFER")
        with rasterio.open(path, "w", **profile) as dst:
            for i, b in enumerate(bands, start=1):
                dst.set_band_description(i, b)
            for row in range(0, size, BLOCK):
                for col in range(0, size, BLOCK):
                    h, w = min(BLOCK, size - row), min(BLOCK, size - col)
                    yy, xx = np.mgrid[row : row + h, col : col + w].astype(np.float32)
                    field = np.sin(xx / 53.0 + m) * np.cos(yy / 71.0)
                    base = 1500 + 900 * field
                    scale = 1.0 + 0.15 * np.arange(len(bands))[:, None, None]
                    block = base[None] * scale + rng.integers(0, 150, (len(bands), h, w))
                    dst.write(block.astype(np.uint16),
                              window=rasterio.windows.Window(col, row, w, h))
        paths.append(path)
    return paths


def make_model(path: Path, size_model: str, folder: Path, crop: int, patch_size: int) -> Path:
    """A segmentation model folder (6 classes) with a random encoder of ``size_model``."""
    import torch

    from geolatent.modalities import MODALITIES
    from geolatent.model import build_model
    from geolatent.platform.bundle import FinetunedModel, InputSpec, TaskSpec, save_bundle
    from geolatent.platform.classes import ClassTable
    from geolatent.platform.finetune import head_spec_for
    from geolatent.platform.heads import TaskModel, build_head

    torch.manual_seed(0)
    model = build_model(size_model)
    s2 = "sentinel2_l2a"
    spec = head_spec_for("segmentation", model.config.embedding_size, 6, [s2], 64, 0.0)
    source = dict(name="s2", type="files", modality=s2, paths=[str(folder / "s2_*.tif")],
                  bands=list(MODALITIES[s2].bands), date_pattern=r"s2_(\d{4}-\d{2}-\d{2})\.tif",
                  date_format="%Y-%m-%d")
    fm = FinetunedModel(TaskModel(model.encoder, build_head(spec), spec),
                        TaskSpec("segmentation"),
                        InputSpec([s2], {s2: list(MODALITIES[s2].bands)}, patch_size, crop, crop),
                        model.config, ClassTable.from_values(range(6)), [source])
    save_bundle(fm, path)
    return path


def run_one(args: dict, queue) -> None:
    """Predict one square area in this (fresh) process and report speed and peak memory."""
    import shapely
    import torch

    from geolatent.data.window import WGS84, reproject_geometry
    from geolatent.platform.predict import predict_area

    torch.set_num_threads(args["threads"])
    px = args["size_px"]
    x0, y1 = ORIGIN[0] + 80, ORIGIN[1] - 80  # inside the generated rasters
    area = reproject_geometry(shapely.segmentize(
        shapely.box(x0, y1 - px * 10, x0 + px * 10, y1), 100.0), CRS, WGS84)
    out = Path(args["out_dir"]) / f"map_{px}.tif"
    t0 = time.perf_counter()
    res = predict_area(args["model"], area, "2024-01-01", args["end"], out, crs=CRS,
                       crop=args["crop"], stride=args["stride"], tile=args["tile"],
                       batch_size=args["batch_size"], device=args["device"],
                       precision=args["precision"], executor=args["executor"],
                       workers=args["workers"], resume=False)
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mb = usage.ru_maxrss / 1024
    gpu_mb = (torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else 0.0
    # CPU seconds too: on a shared machine wall time says more about the neighbours.
    queue.put(dict(size_px=px, km2=res.area_km2, seconds=seconds, km2_per_s=res.area_km2 / seconds,
                   cpu_s=usage.ru_utime + usage.ru_stime, peak_rss_mb=peak_mb, peak_gpu_mb=gpu_mb,
                   tiles=res.tiles_total))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[192, 384], help="area sides, px")
    ap.add_argument("--months", type=int, default=3, help="monthly timesteps")
    ap.add_argument("--size-model", default="nano", help="random encoder size (no --model)")
    ap.add_argument("--model", default=None, help="a fine-tuned model folder to use instead")
    ap.add_argument("--crop", type=int, default=32)
    ap.add_argument("--stride", type=int, default=None)
    ap.add_argument("--patch-size", type=int, default=4)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--executor", default="serial")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--json", action="store_true", help="print one JSON line per size")
    args = ap.parse_args()

    ctx = multiprocessing.get_context("spawn")  # a fresh process per size: clean peak memory
    with tempfile.TemporaryDirectory(prefix="geolatent_predict_bench_") as tmp:
        folder = Path(tmp) / "inputs"
        t0 = time.perf_counter()
        make_inputs(folder, max(args.sizes) + 32, args.months)
        model = args.model or str(make_model(Path(tmp) / "model", args.size_model, folder,
                                             args.crop, args.patch_size))
        print(f"inputs: {args.months} monthly 12-band S2 GeoTIFFs of {max(args.sizes) + 32} px "
              f"({time.perf_counter() - t0:.1f} s); model: {args.model or args.size_model} "
              f"(random weights), crop {args.crop}, device {args.device}, {args.precision}, "
              f"{args.threads} torch thread(s)")
        end = f"2024-{args.months:02d}-28"
        for px in args.sizes:
            queue = ctx.Queue()
            job = dict(vars(args), size_px=px, model=model, out_dir=tmp, end=end)
            proc = ctx.Process(target=run_one, args=(job, queue))
            proc.start()
            row = queue.get()
            proc.join()
            if args.json:
                print(json.dumps(row))
            else:
                print(f"{px:>6} px  {row['km2']:8.2f} km²  {row['seconds']:7.1f} s "
                      f"({row['cpu_s']:.0f} CPU s)  {row['km2_per_s']:7.3f} km²/s  "
                      f"peak RSS {row['peak_rss_mb']:7.0f} MB  "
                      f"peak GPU {row['peak_gpu_mb']:6.0f} MB  {row['tiles']} tiles")


if __name__ == "__main__":
    main()
