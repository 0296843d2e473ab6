"""Before / after throughput of two checkouts, interleaved on one machine (issue #10 "done when").

Runs, for each round, every benchmark on the base checkout and on the head checkout back to
back (the order alternates between rounds, so a load change on a shared machine hits both
sides alike), then prints the median of each figure per side and the ratio head / base:

* encoder tokens/s  (``benchmarks/encoder_throughput.py --sizes nano``),
* predict km²/s and its CPU seconds (``benchmarks/predict_area.py``),
* materialize windows/s, grid and warp modes (``benchmarks/materialize.py``),
* embed km²/s and km² per CPU second (``benchmarks/embed_geotiff.py``; the script of the head
  checkout runs on both, as the base may not have it).

    git worktree add /tmp/base-e1fc219 e1fc219
    python benchmarks/before_after.py --base /tmp/base-e1fc219 --head . --rounds 3

Each checkout runs with its own tree first on ``PYTHONPATH`` and this interpreter. Print the
CPU (``lscpu``) with the figures, and say whether the machine was shared. On a loaded machine
compare CPU figures: ``--cpu-time`` times the encoder on process CPU time; ``predict cpu s`` is
the prediction process's own CPU seconds (its km²/s stays wall time: it runs in a child).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

BENCHES = {
    "encoder": ["benchmarks/encoder_throughput.py", "--sizes", "nano", "--repeats", "1",
                "--threads", "1", "--no-long"],
    "predict": ["benchmarks/predict_area.py", "--sizes", "128", "--json"],
    "materialize": ["benchmarks/materialize.py", "--sizes", "2048", "--windows", "16", "--json"],
    "embed": [str(Path(__file__).resolve().parent / "embed_geotiff.py")],
}


# The benchmark with its timer on this process's CPU time: on a shared, loaded machine wall time
# swings by 2x between runs of the same code, CPU time much less.
CPU_TIME = ("import runpy, sys, time; time.perf_counter = time.process_time; "
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def run(checkout: Path, bench: str, cpu_time: bool = False) -> dict[str, float]:
    """One benchmark on one checkout: its figures by name."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    cmd = [sys.executable, *(["-c", CPU_TIME] if cpu_time else []), *BENCHES[bench]]
    out = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True,
                         check=True).stdout
    figures: dict[str, float] = {}
    if bench == "encoder":
        m = re.search(r"([\d,.]+) tokens/s", out)
        if m is None:
            raise RuntimeError(f"no tokens/s in the encoder benchmark's output:\n{out}")
        figures["encoder tokens/s"] = float(m[1].replace(",", ""))
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        if bench == "predict":
            figures["predict km2/s"] = rec["km2_per_s"]
            figures["predict cpu s"] = rec["cpu_s"]
        elif bench == "materialize":
            figures[f"materialize windows/s ({rec.get('mode', '?')})"] = rec["windows_per_s"]
        elif bench == "embed":
            figures["embed km2/s"] = rec["km2_per_s"]
            figures["embed km2 per cpu s"] = rec["km2_per_cpu_s"]
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="the 'before' checkout")
    ap.add_argument("--head", type=Path, default=Path("."), help="the 'after' checkout")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--benches", nargs="+", default=list(BENCHES), choices=list(BENCHES))
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with process CPU time instead of wall time (shared machines)")
    args = ap.parse_args()
    sides = {"base": args.base.resolve(), "head": args.head.resolve()}
    results: dict[str, dict[str, list[float]]] = {"base": {}, "head": {}}
    for r in range(args.rounds):
        for bench in args.benches:
            order = ["base", "head"] if r % 2 == 0 else ["head", "base"]
            for side in order:
                for name, value in run(sides[side], bench, args.cpu_time).items():
                    results[side].setdefault(name, []).append(value)
                    print(f"round {r + 1} {side:4s} {name}: {value:.4g}", flush=True)
    print(f"\nmedians of {args.rounds} interleaved rounds (head / base):")
    for name in results["base"]:
        b, h = statistics.median(results["base"][name]), statistics.median(results["head"][name])
        print(f"  {name:38s} base {b:10.4g}  head {h:10.4g}  ratio {h / b:6.3f}")


if __name__ == "__main__":
    main()
