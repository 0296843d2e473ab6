"""Command-line options the encoder timing benchmarks share (``precision.py``,
``compare_reference.py``): sample shape, repeats and threads, parsed the same way."""

from __future__ import annotations

import argparse

import torch


def parse_encoder_timing_args(ap: argparse.ArgumentParser, batch: int) -> argparse.Namespace:
    """Add ``--batch`` (default ``batch``), ``--timesteps``, ``--repeats`` and ``--threads`` to
    ``ap``, parse the command line and set torch's thread count to ``--threads``."""
    ap.add_argument("--batch", type=int, default=batch, help="samples per encoder call")
    ap.add_argument("--timesteps", type=int, default=12, help="timesteps T of each sample")
    ap.add_argument("--repeats", type=int, default=3,
                    help="interleaved repeats of every variant; medians are reported")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    return args
