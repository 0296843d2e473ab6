"""geolatent's AVX2 attention kernel vs PyTorch's fused CPU SDPA, same inputs, fp32.

Prints milliseconds per call and the speed ratio for the head widths of the v1 sizes (16 for
Nano, 64 for Tiny / Base / Large) over growing sequences, plus the largest difference between the
two outputs. Both run on the same [B, N, H, d] inputs; SDPA gets the contiguous head-major layout
it is fastest on (the copy is not timed).

    python benchmarks/attention_kernel.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from geolatent.model import attention_kernel

CASES = [  # (label, heads, head width, tokens)
    ("nano, 64x64 px, T=12, p=4", 8, 16, 12288),
    ("nano, T=6", 8, 16, 6144),
    ("nano, T=1", 8, 16, 1024),
    ("base, T=6", 12, 64, 6144),
]


def best_of(fn, *args, seconds: float = 3.0) -> float:
    """Fastest of repeated calls ``fn(*args)`` (after one warm-up), over about ``seconds``."""
    fn(*args)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, kernel: "
          f"{attention_kernel.attention_backend()}")  # fmt: skip
    g = torch.Generator().manual_seed(0)
    for label, h, d, n in CASES:
        q, k, v = (torch.randn(1, n, h, d, generator=g) for _ in range(3))
        qh, kh, vh = (t.transpose(1, 2).contiguous() for t in (q, k, v))
        with torch.inference_mode():
            ours = attention_kernel.attention(q, k, v)
            ref = F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2)
            diff = (ours - ref).abs().max().item()
            t_k = best_of(attention_kernel.attention, q, k, v)
            t_s = best_of(F.scaled_dot_product_attention, qh, kh, vh)
        cycles = t_k * args.threads * 2.45e9 / (h * n * n)
        print(f"{label:28s} H={h:2d} d={d} N={n:6d}: kernel {t_k * 1e3:8.1f} ms, "
              f"sdpa {t_s * 1e3:8.1f} ms, ratio {t_s / t_k:.2f}x, max diff {diff:.1e}, "
              f"{cycles:.2f} cycles/score at 2.45 GHz")  # fmt: skip


if __name__ == "__main__":
    main()
