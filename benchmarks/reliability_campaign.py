"""The reliability campaign's figures: run the probe table and count the outcomes.

Runs every row of ``tests/reliability/test_probes.py`` (bad inputs, bad configs, read-only
outputs, held locks, a killed run's leftovers; each tagged with the findings of issue #12 it
reproduces) through pytest, slow probes included, and prints how many probes ended in each
outcome: clear error, clear warning (the run goes on), silent wrong result, raw traceback,
unclear error, data loss, hang. Probes that are not the wanted outcome are listed by name.

    python benchmarks/reliability_campaign.py            # the whole table
    python benchmarks/reliability_campaign.py -k predict # a part of it (pytest -k)
    python benchmarks/reliability_campaign.py --against ../main   # probe another source tree
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "tests" / "reliability" / "test_probes.py"
OUTCOMES = ("clear error", "clear warning (the run goes on)", "silent wrong result",
            "raw traceback", "unclear error", "data loss", "hang")


class Collect:
    """A pytest plugin keeping each probe's recorded outcome and #12 findings."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, list[int]]] = []
        self.skipped: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report) -> None:
        if "test_probe[" not in report.nodeid:
            return
        name = report.nodeid.split("[", 1)[1][:-1]
        if report.skipped:
            self.skipped.append((name, str(report.longrepr[-1]) if report.longrepr else ""))
        elif report.when == "call":
            props = dict(report.user_properties)
            self.rows.append((name, props.get("outcome", "raw traceback"),
                              props.get("items", [])))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default=None, help="only probes matching this pytest -k expression")
    ap.add_argument("--against", type=Path, default=ROOT,
                    help="the geolatent source tree to probe (default: this one), e.g. the "
                         "base branch for a before / after comparison")
    args = ap.parse_args()
    sys.path.insert(0, str(args.against.resolve()))
    collect = Collect()
    t0 = time.perf_counter()
    argv = [str(TABLE), "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-m", "",
            "--rootdir", str(ROOT), "-k", f"test_probe and ({args.k})" if args.k else "test_probe"]
    pytest.main(argv, plugins=[collect])
    seconds = time.perf_counter() - t0
    counts = collections.Counter(kind for _, kind, _ in collect.rows)
    import geolatent

    print(f"\nreliability campaign against {Path(geolatent.__file__).parent.parent}: "
          f"{len(collect.rows)} probes run in {seconds:.0f} s "
          f"({len(collect.skipped)} skipped)")
    for kind in OUTCOMES:
        print(f"  {kind:<34} {counts.get(kind, 0):>4}")
    per_item = collections.Counter(i for _, _, items in collect.rows for i in items)
    print("  probes per #12 finding: " + ", ".join(f"{i}: {per_item.get(i, 0)}"
                                                   for i in range(1, 13)))
    wanted = {"clear error", "clear warning (the run goes on)"}
    bad = [(n, k) for n, k, _ in collect.rows if k not in wanted]
    for name, kind in bad:
        print(f"  NOT CLEAR: {name}: {kind}")
    for name, why in collect.skipped:
        print(f"  skipped: {name}: {why}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
