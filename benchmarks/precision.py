"""Encoder tokens/s per precision (fp32, bf16, int8) against the reference's fp32, one run.

Issue-2 shapes: 64x64 px, T=12, Sentinel-2 L2A + Sentinel-1, p=4 (12,288 tokens per sample),
sizes nano / tiny / base with the same random weights for geolatent and the reference (no
released weights are downloadable here; speed does not depend on the weight values). Every
repeat times every variant once, interleaved, and medians are reported, because the machine
may be shared. Also prints the token cosine similarity of each precision to geolatent fp32 and
the max difference of geolatent fp32 to the reference.

The reference (olmoearth-pretrain) lives in its own virtual environment; run this script there
with geolatent on ``PYTHONPATH`` (see ``benchmarks/compare_reference.py`` for the install)::

    PYTHONPATH=. /work/refvenv-v1/bin/python benchmarks/precision.py --sizes nano,tiny,base

Without olmoearth-pretrain importable the reference column is left out (said in the output).

``--int8-activations`` times instead one Base-width int8 linear (12,288 tokens x 768 -> 3,072)
with PyTorch's 7-bit activations against the 8-bit ones geolatent uses on VNNI CPUs, and
prints their errors against fp32: the speed side of that accuracy change.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from encoder_bench_args import parse_encoder_timing_args

import geolatent
from geolatent.model.checkpoint import export_release_folder
from geolatent.runtime import cpu_info

PRECISIONS = tuple(os.environ.get("BENCH_PRECISIONS", "fp32,bf16,int8").split(","))


def lscpu_summary() -> str:
    info = cpu_info()
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                      if ln.startswith("Model name")), info.model)  # fmt: skip
    except OSError:
        model = info.model
    return (f"CPU: {model} ({info.logical_cores} cores available), features: "
            f"{' '.join(info.features)}, torch {torch.__version__} "
            f"capability {info.torch_capability}, threads {torch.get_num_threads()}")  # fmt: skip


def inputs(batch: int, t: int) -> tuple[dict, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = {
        "sentinel2_l2a": torch.rand(batch, 64, 64, t, 12, generator=g),
        "sentinel1": torch.rand(batch, 64, 64, t, 2, generator=g),
    }
    ts = torch.tensor([[[1, i % 12, 2024] for i in range(t)]] * batch)
    return x, ts


def token_cosine(a: dict, b: dict) -> tuple[float, float]:
    """(min, median) cosine similarity over all tokens of all modalities."""
    cos = torch.cat(
        [F.cosine_similarity(a[m].flatten(0, -2).float(), b[m].flatten(0, -2).float(), dim=-1)
         for m in a]
    )  # fmt: skip
    return cos.min().item(), cos.median().item()


def bench_size(size: str, args, folder: Path) -> None:
    export_release_folder(geolatent.build_model(size), folder)
    x, ts = inputs(args.batch, args.timesteps)
    p = 4
    runners = {}
    for prec in PRECISIONS:
        enc = geolatent.load_model(folder, precision=prec).encoder
        runners[prec] = (lambda e: lambda: e(x, ts, p).tokens)(enc)
    try:
        from compare_reference import reference_encoder, run_reference

        ref = reference_encoder(folder)
        runners["reference fp32"] = lambda: run_reference(ref, x, ts, p)
    except ImportError as exc:
        print(f"  (reference not importable here: {exc}; run in the reference venv)")
    with torch.inference_mode():
        outs = {k: fn() for k, fn in runners.items()}  # also warms up every path
        for k, out in outs.items():
            if k == "fp32":
                continue
            lo, med = token_cosine(out, outs["fp32"])
            print(f"  {size} {k:15s} token cosine to geolatent fp32: min {lo:.5f} median {med:.5f}")
        times: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(args.repeats):
            for k, fn in runners.items():
                start = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - start)
    tokens = args.batch * args.timesteps * 256 * 4
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    base = med.get("reference fp32")
    for k, s in med.items():
        ratio = f", {base / s:.2f}x reference fp32" if base else ""
        print(f"  {size:5s} {k:15s} {s:7.2f} s/pass {tokens / s:10,.0f} tokens/s "
              f"{med['fp32'] / s:5.2f}x geolatent fp32{ratio}")  # fmt: skip


def int8_activations(repeats: int) -> None:
    from geolatent.model.precision import Int8Linear

    torch.manual_seed(0)
    lin = torch.nn.Linear(768, 3072)
    x = torch.randn(12288, 768)
    ref = lin(x).detach()
    runs = {f"{8 if full else 7}-bit": Int8Linear(lin, full) for full in (False, True)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for _ in range(repeats):
            for k, mod in runs.items():
                start = time.perf_counter()
                mod(x)
                times[k].append(time.perf_counter() - start)
        for k, mod in runs.items():
            err = ((mod(x) - ref).norm() / ref.norm()).item()
            med = sorted(times[k])[len(times[k]) // 2]
            print(f"  int8 linear, {k} activations: {med * 1e3:7.1f} ms, relative error {err:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="nano,tiny,base")
    ap.add_argument("--int8-activations", action="store_true")
    args = parse_encoder_timing_args(ap, batch=1)
    from geolatent.model.attention_kernel import attention_backend

    print(lscpu_summary())
    if args.int8_activations:
        return int8_activations(max(args.repeats, 5))
    print(f"fp32 attention: {attention_backend()}; batch {args.batch}, T={args.timesteps}, "
          f"p=4, median of {args.repeats} interleaved repeats (shared machine)")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            bench_size(size.strip(), args, Path(tmp) / size)


if __name__ == "__main__":
    main()
