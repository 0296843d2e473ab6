"""bf16 attention: geolatent's AVX512_BF16 kernel vs the fp32 kernel (what the bf16 path did
before: upcast q, k, v, attend in fp32, cast back) vs PyTorch's fused CPU SDPA in bf16.

Same bf16 [B, N, H, d] inputs for all; the upcast and downcast are timed as part of the fp32
path because the bf16 encoder pays them. SDPA gets the head-major layout it is fastest on (the
copy is not timed). Each round times every path once (interleaved, for a shared machine);
medians of ``--rounds`` are printed, with the cosine and max difference of the bf16 kernel to
the fp32 kernel on the same inputs.

    python benchmarks/attention_bf16.py [--threads 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from geolatent.model import attention_kernel
from geolatent.runtime import cpu_info

CASES = [  # (label, heads, head width, tokens)
    ("nano, 64x64 px, T=12, p=4", 8, 16, 12288),
    ("nano, T=6", 8, 16, 6144),
    ("tiny/base, T=6 (d=64)", 12, 64, 6144),
    ("base, 64x64 px, T=12, p=4", 12, 64, 12288),
]


def fp32_kernel_upcast(q, k, v):
    return attention_kernel.attention(q.float(), k.float(), v.float()).to(torch.bfloat16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if "avx512_bf16" not in attention_kernel.supported_isas():
        raise SystemExit("this CPU has no AVX512_BF16: the bf16 kernel cannot run here")
    info = cpu_info()
    print(f"torch {torch.__version__}, {args.threads} threads, CPU {info.model} "
          f"({' '.join(info.features)}); median of {args.rounds} interleaved rounds "
          "(machine may be shared)")  # fmt: skip
    g = torch.Generator().manual_seed(0)
    for label, h, d, n in CASES:
        q, k, v = (torch.randn(1, n, h, d, generator=g).bfloat16() for _ in range(3))
        qh, kh, vh = (t.transpose(1, 2).contiguous() for t in (q, k, v))
        runs = {
            "bf16 kernel": (attention_kernel.attention_bf16, (q, k, v)),
            "fp32 kernel": (fp32_kernel_upcast, (q, k, v)),
            "sdpa bf16": (F.scaled_dot_product_attention, (qh, kh, vh)),
        }
        with torch.inference_mode():
            ours = attention_kernel.attention_bf16(q, k, v).float()  # also the warm-up
            exact = fp32_kernel_upcast(q, k, v).float()
            F.scaled_dot_product_attention(qh, kh, vh)
            cos = F.cosine_similarity(ours.flatten(0, -2), exact.flatten(0, -2), dim=-1)
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.rounds):
                for name, (fn, a) in runs.items():
                    start = time.perf_counter()
                    fn(*a)
                    times[name].append(time.perf_counter() - start)
        med = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
        parts = ", ".join(f"{name} {med[name] * 1e3:7.1f} ms" for name in runs)
        print(
            f"{label:26s} H={h:2d} d={d} N={n:6d}: {parts}; bf16 kernel "
            f"{med['fp32 kernel'] / med['bf16 kernel']:.2f}x fp32 kernel, "
            f"{med['sdpa bf16'] / med['bf16 kernel']:.2f}x sdpa bf16; cosine to fp32 min "
            f"{cos.min().item():.6f}, max diff {(ours - exact).abs().max().item():.1e}"
        )


if __name__ == "__main__":
    main()
