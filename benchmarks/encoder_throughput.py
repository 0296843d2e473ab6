"""Encoder inference throughput (tokens/s) and long-sequence time / peak memory.

Shapes (issue #2): 64x64 px, T=12, Sentinel-2 L2A + Sentinel-1, p=4 -> 12,288 tokens per sample;
nano at B=8, base at B=2; fp32 on CPU with 2 threads, bf16 autocast on a GPU when one exists.
The anchor is the reference implementation on a 2-core machine: about 4,100 tokens/s (nano) and
274 tokens/s (base); the script prints our ratio to it.

    python benchmarks/encoder_throughput.py                 # nano + base + long-sequence table
    python benchmarks/encoder_throughput.py --sizes nano --repeats 3
    GEOLATENT_ATTENTION=sdpa python benchmarks/encoder_throughput.py   # PyTorch's kernel instead
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time

import torch

import geolatent

ANCHOR_TOKENS_PER_S = {"nano": 4100.0, "base": 274.0}
BATCH = {"nano": 8, "base": 2, "tiny": 8, "large": 1}


def make_inputs(b: int, t: int, hw: int = 64, device: str = "cpu") -> tuple[dict, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = {
        "sentinel2_l2a": torch.rand(b, hw, hw, t, 12, generator=g).to(device),
        "sentinel1": torch.rand(b, hw, hw, t, 2, generator=g).to(device),
    }
    ts = torch.tensor([[[1, i % 12, 2024] for i in range(t)]] * b, device=device)
    return x, ts


def time_encoder(size: str, b: int, t: int, device: str, dtype: str, repeats: int) -> float:
    """Median seconds for one inference pass (normalized inputs, all tokens encoded)."""
    model = geolatent.build_model(size).to(device).eval()
    x, ts = make_inputs(b, t, device=device)
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                              enabled=dtype == "bf16")  # fmt: skip
    times = []
    with torch.inference_mode(), autocast:
        model.encoder(x, ts, 4)  # warm-up
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            model.encoder(x, ts, 4)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def long_sequence_child(t: int) -> None:
    """One T of the long-sequence table, in a fresh process; peak RSS sampled every 5 ms."""
    torch.set_num_threads(2)
    base = _rss_mb()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    sec = time_encoder("nano", 1, t, "cpu", "fp32", 1)
    done.set()
    thread.join()
    row = {"T": t, "tokens": 256 * 4 * t, "seconds": sec}
    row.update(peak_rss_mb=peak[0], growth_mb=peak[0] - base)
    print(json.dumps(row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["nano", "base"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-long", action="store_true", help="skip the long-sequence table")
    ap.add_argument("--long-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.long_child:
        long_sequence_child(args.long_child)
        return
    torch.set_num_threads(args.threads)
    from geolatent.model.attention_kernel import attention_backend

    print(f"torch {torch.__version__}, {args.threads} CPU threads, "
          f"CPU attention: {attention_backend()}")  # fmt: skip
    for size in args.sizes:
        b = BATCH[size]
        sec = time_encoder(size, b, 12, "cpu", "fp32", args.repeats)
        tps = b * 12288 / sec
        anchor = ANCHOR_TOKENS_PER_S.get(size)
        ratio = f", {tps / anchor:.2f}x the reference anchor ({anchor:.0f} tok/s)" if anchor else ""
        print(f"cpu fp32 {size:5s} B={b}: {sec:.2f} s/pass, {tps:,.0f} tokens/s{ratio}")
        if torch.cuda.is_available():
            sec = time_encoder(size, b, 12, "cuda", "bf16", args.repeats)
            tps = b * 12288 / sec
            print(f"gpu bf16 {size:5s} B={b}: {sec * 1000:.1f} ms/pass, {tps:,.0f} tokens/s")
    if not args.no_long:
        print("long sequences (nano, B=1, 64x64, S2+S1, p=4, cpu fp32):")
        print(f"{'T':>3} {'tokens':>7} {'seconds':>8} {'peak RSS MB':>12} {'growth MB':>10}")
        for t in (1, 3, 6, 12):
            out = (
                subprocess.run(
                    [sys.executable, __file__, "--long-child", str(t)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            r = json.loads(out)
            print(f"{r['T']:>3} {r['tokens']:>7} {r['seconds']:>8.2f} {r['peak_rss_mb']:>12.0f} "
                  f"{r['growth_mb']:>10.0f}")  # fmt: skip
        # A materialized fp32 score matrix for T=12 would be 8 heads x 12288^2 x 4 B = 4.8 GB.


if __name__ == "__main__":
    main()
