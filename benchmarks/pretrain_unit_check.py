"""Cost of the per-file unit check on pretraining data loading.

Writes built-in sample files (Sentinel-2 DN + Sentinel-1 dB, the sizes of a real 128 px /
12-month sample), then loads one crop from every file with ``PretrainDataset(check_units=True)``
and ``check_units=False``, interleaved (A B A B ...) so both see the same machine load. Every
pass uses a fresh dataset, so every file is checked: the first-epoch (worst) case; later epochs
reuse the per-file result and pay nothing. Prints samples/s for both and their ratio.

    python benchmarks/pretrain_unit_check.py                  # 48 files of 128 px, 3 repeats
    python benchmarks/pretrain_unit_check.py --files 96 --size 256 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def one_pass(manifest, check_units: bool, crop: int, timesteps: int) -> float:
    """Seconds to load one crop from every file with a fresh dataset."""
    from geolatent.pretrain.dataset import PretrainDataset
    from geolatent.pretrain.sampler import SampleRequest

    ds = PretrainDataset(manifest, check_units=check_units)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for i in range(len(manifest)):
        ds.load_crop(i, SampleRequest(i, 4, crop, timesteps, i, step=0, micro_index=0), rng)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=48)
    ap.add_argument("--size", type=int, default=128, help="sample side in pixels")
    ap.add_argument("--timesteps", type=int, default=12)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker

    from geolatent.pretrain.samples import build_manifest, write_builtin_samples

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_builtin_samples(root, args.files, args.size, args.timesteps)
        manifest, errors = build_manifest(root)
        assert not errors, errors
        one_pass(manifest, False, args.crop, args.timesteps)  # warm the page cache
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for check in (True, False):
                times[check].append(one_pass(manifest, check, args.crop, args.timesteps))
    rate = {k: args.files / statistics.median(v) for k, v in times.items()}
    per_file_ms = (statistics.median(times[True]) - statistics.median(times[False])) \
        / args.files * 1e3
    print(f"{args.files} files of {args.size} px x {args.timesteps} months (S2 + S1), "
          f"{args.crop} px crops, 1 thread, median of {args.repeats} interleaved passes")
    print(f"check_units=False: {rate[False]:.1f} samples/s")
    print(f"check_units=True : {rate[True]:.1f} samples/s (first epoch: every file checked)")
    print(f"ratio (checked / unchecked): {rate[True] / rate[False]:.3f}; "
          f"check cost {per_file_ms:.2f} ms per file, once per file and worker")


if __name__ == "__main__":
    main()
