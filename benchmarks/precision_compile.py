"""Does ``torch.compile`` (inductor, CPU) speed up the encoder? fp32 and bf16, eager vs compiled.

Every transformer block is wrapped in ``torch.compile`` (the blocks are ~all of the work;
patch embedding, encodings and pooling have data-dependent shapes). CPU attention is
geolatent's C kernel called through ctypes: it is excluded from tracing
(``torch.compiler.disable``; traced, dynamo guarded on its data pointers and recompiled every
call until its recompile limit), so inductor gets the norms, linears, GELU and residuals
around it. Inputs: 64x64 px, S2 + S1, p=4, batch 1,
``--timesteps`` per size. Each round times eager and compiled once (interleaved, for a shared
machine); medians of ``--rounds``; the first compiled call (compilation) is timed apart.

    PYTHONPATH=.:benchmarks python benchmarks/precision_compile.py [--sizes nano:12,base:3]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
from precision import inputs, lscpu_summary

import geolatent
from geolatent.model import attention_kernel
from geolatent.model.checkpoint import export_release_folder


def compiled(encoder: torch.nn.Module) -> torch.nn.Module:
    # module attribute, looked up at call time by attention.py and precision.py
    attention_kernel.attention = torch.compiler.disable(attention_kernel.attention)
    enc = copy.deepcopy(encoder)
    for i, blk in enumerate(enc.blocks):
        enc.blocks[i] = torch.compile(blk, dynamic=False)
    return enc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="nano:12,base:3", help="size:timesteps,...")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(lscpu_summary())
    print(f"median of {args.rounds} interleaved rounds (shared machine)")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.sizes.split(","):
            size, t = spec.split(":")
            folder = Path(tmp) / size
            export_release_folder(geolatent.build_model(size), folder)
            x, ts = inputs(1, int(t))
            tokens = int(t) * 256 * 4
            for prec in args.precisions.split(","):
                eager = geolatent.load_model(folder, precision=prec).encoder
                comp = compiled(eager)
                with torch.inference_mode():
                    ref = eager(x, ts, 4).tokens
                    start = time.perf_counter()
                    out = comp(x, ts, 4).tokens
                    first = time.perf_counter() - start
                    diff = max((out[m] - ref[m]).abs().max().item() for m in ref)
                    times: dict[str, list[float]] = {"eager": [], "compiled": []}
                    for _ in range(args.rounds):
                        for name, enc in (("eager", eager), ("compiled", comp)):
                            start = time.perf_counter()
                            enc(x, ts, 4)
                            times[name].append(time.perf_counter() - start)
                med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
                print(f"{size} T={t} {prec}: eager {med['eager']:.2f} s "
                      f"({tokens / med['eager']:,.0f} tok/s), compiled {med['compiled']:.2f} s "
                      f"({tokens / med['compiled']:,.0f} tok/s) = "
                      f"{med['eager'] / med['compiled']:.2f}x eager; first compiled call "
                      f"{first:.1f} s; max diff to eager {diff:.1e}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
