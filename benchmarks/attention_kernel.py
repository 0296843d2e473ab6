"""geolatent's attention kernel (each variant) vs PyTorch's fused CPU SDPA, fp32 or bf16.

Prints milliseconds per call and the speed ratios for the head widths of the v1 sizes (16 for
Nano, 64 for Tiny / Base / Large) over growing sequences, plus the largest difference to SDPA.
All run on the same [B, N, H, d] inputs; SDPA gets the contiguous head-major layout it is
fastest on (the copy is not timed). Each round times every variant once (interleaved, for a
shared machine); medians of ``--rounds`` are printed.

With ``--bf16``: bf16 inputs, the bf16 kernel (AVX512_BF16) vs the fp32 kernel as the bf16
encoder used it before (upcast q, k, v, attend in fp32, cast back: the casts are timed, the
encoder pays them) vs SDPA in bf16, with the cosine and max difference of the bf16 kernel to
the fp32 kernel on the same inputs.

    python benchmarks/attention_kernel.py [--threads 2] [--rounds 5] [--bf16]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from geolatent.model import attention_kernel
from geolatent.runtime import cpu_info

CASES = [  # (label, heads, head width, tokens)
    ("nano, 64x64 px, T=12, p=4", 8, 16, 12288),
    ("nano, T=6", 8, 16, 6144),
    ("nano, T=1", 8, 16, 1024),
    ("base, T=6", 12, 64, 6144),
    ("base, 64x64 px, T=12, p=4", 12, 64, 12288),
]


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def with_isa(isa: str):
    """The kernel forced to variant ``isa`` (through ``GEOLATENT_ATTENTION_ISA``)."""

    def run(q, k, v):
        os.environ["GEOLATENT_ATTENTION_ISA"] = isa
        return attention_kernel.attention(q, k, v)

    return run


def fp32_kernel_upcast(q, k, v):
    return attention_kernel.attention(q.float(), k.float(), v.float()).to(torch.bfloat16)


def bf16_main(rounds: int) -> None:
    if "avx512_bf16" not in attention_kernel.supported_isas():
        raise SystemExit("this CPU has no AVX512_BF16: the bf16 kernel cannot run here")
    info = cpu_info()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {info.model} "
          f"({' '.join(info.features)}); median of {rounds} interleaved rounds "
          "(machine may be shared)")  # fmt: skip
    g = torch.Generator().manual_seed(0)
    for label, h, d, n in CASES:
        q, k, v = (torch.randn(1, n, h, d, generator=g).bfloat16() for _ in range(3))
        qh, kh, vh = (t.transpose(1, 2).contiguous() for t in (q, k, v))
        runs = {
            "bf16 kernel": (attention_kernel.attention, (q, k, v)),
            "fp32 kernel": (fp32_kernel_upcast, (q, k, v)),
            "sdpa bf16": (F.scaled_dot_product_attention, (qh, kh, vh)),
        }
        with torch.inference_mode():
            ours = attention_kernel.attention(q, k, v).float()  # also the warm-up
            exact = fp32_kernel_upcast(q, k, v).float()
            F.scaled_dot_product_attention(qh, kh, vh)
            cos = F.cosine_similarity(ours.flatten(0, -2), exact.flatten(0, -2), dim=-1)
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(rounds):
                for name, (fn, a) in runs.items():
                    times[name].append(timed(fn, *a))
        med = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
        parts = ", ".join(f"{name} {med[name] * 1e3:7.1f} ms" for name in runs)
        print(
            f"{label:28s} H={h:2d} d={d} N={n:6d}: {parts}; bf16 kernel "
            f"{med['fp32 kernel'] / med['bf16 kernel']:.2f}x fp32 kernel, "
            f"{med['sdpa bf16'] / med['bf16 kernel']:.2f}x sdpa bf16; cosine to fp32 min "
            f"{cos.min().item():.6f}, max diff {(ours - exact).abs().max().item():.1e}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bf16", action="store_true", help="bf16 inputs: the bf16 kernel")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.bf16:
        return bf16_main(args.rounds)
    isas = attention_kernel.supported_isas()
    print(f"torch {torch.__version__}, {args.threads} threads, kernel: "
          f"{attention_kernel.attention_backend()}, variants here: {', '.join(isas)}; "
          f"CPU {cpu_info().model} ({' '.join(cpu_info().features)}); "
          f"median of {args.rounds} interleaved rounds (machine may be shared)")  # fmt: skip
    g = torch.Generator().manual_seed(0)
    for label, h, d, n in CASES[:-1]:  # the last one (Base at 12,288 tokens) for bf16 only
        q, k, v = (torch.randn(1, n, h, d, generator=g) for _ in range(3))
        qh, kh, vh = (t.transpose(1, 2).contiguous() for t in (q, k, v))
        runs = {isa: (with_isa(isa), (q, k, v)) for isa in isas}
        runs["sdpa"] = (F.scaled_dot_product_attention, (qh, kh, vh))
        with torch.inference_mode():
            ref = F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2)
            diffs = {
                isa: (fn(*a) - ref).abs().max().item()
                for isa, (fn, a) in runs.items()
                if isa != "sdpa"
            }  # fmt: skip (also the warm-up)
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.rounds):
                for name, (fn, a) in runs.items():
                    times[name].append(timed(fn, *a))
        med = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
        parts = [f"{name} {med[name] * 1e3:7.1f} ms" for name in runs]
        ratios = [f"{isa}/sdpa {med['sdpa'] / med[isa]:.2f}x" for isa in isas]
        if {"avx2", "avx512"} <= set(isas):
            ratios.append(f"avx512 vs avx2 {med['avx2'] / med['avx512']:.2f}x")
        print(f"{label:28s} H={h:2d} d={d} N={n:6d}: {', '.join(parts)}; {', '.join(ratios)}; "
              f"max diff {max(diffs.values()):.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
