"""What fine-tuning's per-epoch resume checkpoint costs: its size and the seconds to write it
(atomically, :func:`geolatent.platform.training_state.save_checkpoint`) per encoder size, with
the AdamW state of an unfrozen encoder (the largest case) and a best epoch other than the last
(two copies of the weights).

    PYTHONPATH=$PWD python benchmarks/finetune_checkpoint.py [--sizes nano,base] [--repeats 3]

Prints one row per size: parameters, checkpoint MiB, median write seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from geolatent.model import build_model
from geolatent.platform.heads import HeadSpec, TaskModel, build_head
from geolatent.platform.training_state import CHECKPOINT_FILE, Progress, save_checkpoint


def one_size(size: str, repeats: int, folder: Path) -> tuple[int, float, float]:
    encoder = build_model(size).encoder
    spec = HeadSpec("pooled", encoder.dim, 5)
    model = TaskModel(encoder, build_head(spec), spec)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():  # one step, so AdamW holds both moments for every weight
        p.grad = torch.zeros_like(p)
    opt.step()
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path = folder / f"{size}-{CHECKPOINT_FILE}"
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        save_checkpoint(path, model=model, optimizer=opt, scheduler=plateau, best_state=best,
                        progress=Progress(3, 0.5, 1, {}, []),
                        generator=np.random.default_rng(0), fingerprint={"k": "v"})
        times.append(time.perf_counter() - t0)
    n = sum(p.numel() for p in model.parameters())
    mib = path.stat().st_size / 2**20
    path.unlink()
    return n, mib, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="nano,base")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    a = ap.parse_args()
    print(f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        print("size   parameters   checkpoint MiB   write s (median)")
        for size in a.sizes.split(","):
            n, mib, sec = one_size(size, a.repeats, Path(tmp))
            print(f"{size:6s} {n:11,d}   {mib:14.1f}   {sec:8.2f}")


if __name__ == "__main__":
    main()
