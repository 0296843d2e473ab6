"""Downstream accuracy per precision with the probe's own noise measured first.

For each chip-classification task of ``configs/evals/realdata.yaml`` the pooled embeddings of
the fixture checkpoint are computed once per precision (the eval suite's own adapters,
hold-out and ``embed_split``), then scored with:

- kNN (the suite's, deterministic);
- the suite's linear probe (AdamW, 50 epochs, learning rate chosen on the hold-out) over
  ``--seeds`` seeds: its noise floor is fp32 against fp32 (seeds 0..n/2-1 vs n/2..n-1, and the
  standard deviation over seeds), and each precision's change is the mean over all seeds;
- a stable probe, the same for every precision: L2 logistic regression fitted by full-batch
  L-BFGS to convergence on standardized features (``geolatent.evals.baselines.
  logistic_regression``) with one fixed penalty, ``STABLE_LAMBDA`` (no selection: a choice
  among penalties on a 33-chip hold-out flips with the smallest feature change). It is convex
  with one optimum, so it has no seed or data-order noise and what moves it is the features.

Besides each metric's change it prints the prediction agreement with fp32 (the share of test
chips whose predicted class is the same), the chip-level analogue of the maps' pixel agreement.

The fixture weights are random (no released weights offline): absolute metrics are those of a
random-weight encoder; the changes between precisions are what is measured.

    PYTHONPATH=. python benchmarks/precision_probe.py [--seeds 10] [--tasks eolearn-lulc-cls]

On a loaded machine run one process per precision and combine (the probes are many tiny
steps; one thread each, in parallel, gets through them much faster than one process):

    for p in fp32 bf16 int8; do python benchmarks/precision_probe.py --precisions $p \\
        --save out & done; wait; python benchmarks/precision_probe.py --combine out
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from geolatent.evals.baselines import logistic_regression
from geolatent.evals.encode import embed_split
from geolatent.evals.protocols.knn import KNNConfig, knn_predict
from geolatent.evals.protocols.linear import LinearProbeConfig, linear_probe
from geolatent.evals.runner import ModelSpec, _at_precision, _holdout
from geolatent.evals.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
NANO = SHARED / "fixtures" / "olmoearth_v1_nano"
STABLE_LAMBDA = 1e-2  # penalty lambda * ||W||^2 / 2 on the mean loss; fixed a priori
ROOTS = {
    "eolearn-lulc-cls": SHARED / "data/real/eolearn",
    "algae-blooms-cls": SHARED / "data/real/presto_eval/algae_blooms",
}


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((np.asarray(pred).reshape(-1) == np.asarray(y).reshape(-1)).mean())


def features(task: str, precision: str) -> tuple[dict, dict, float]:
    t = get_task(task)
    ds = t.build(str(ROOTS[task]))
    train, test = ds.split("train"), ds.split("test")
    net = _at_precision(ModelSpec.from_any(str(NANO)).load("cpu"), precision, False)
    start = time.perf_counter()
    x = {name: np.concatenate(list(embed_split(net, s, t.patch_size, True)))
         for name, s in (("train", train), ("test", test))}  # fmt: skip
    seconds = time.perf_counter() - start
    fit, val = _holdout(train, ds.task_type, 0.2)
    y = {"train": train.labels, "test": test.labels, "fit": fit, "val": val,
         "classes": ds.num_classes}  # fmt: skip
    return x, y, seconds


def scores(x: dict, y: dict, seeds: int) -> dict:
    fit, val, c = y["fit"], y["val"], y["classes"]
    xf, yf = x["train"][fit], y["train"][fit]
    xv, yv = x["train"][val], y["train"][val]
    knn = knn_predict(x["train"], y["train"], x["test"], "classification", c, KNNConfig())
    out = {"knn": accuracy(knn, y["test"]), "knn_pred": np.asarray(knn).tolist()}
    out["linear"] = [
        accuracy(linear_probe(xf, yf, x["test"], "classification", c, LinearProbeConfig(), s,
                              xv, yv)[0], y["test"])  # fmt: skip
        for s in range(seeds)
    ]
    pred, _ = logistic_regression(xf, yf, x["test"], xv, yv, "classification", c,
                                  lambdas=(STABLE_LAMBDA,), max_iter=1000)  # fmt: skip
    out["stable"] = accuracy(pred, y["test"])
    out["stable_pred"] = np.asarray(pred).tolist()
    return out


def report(task: str, res: dict, feats: dict, n_test: int, seeds: int) -> None:
    """The noise floor of the suite's probe and the table of changes vs fp32."""
    precs = list(res)
    lin = res["fp32"]["linear"]
    half = seeds // 2
    floor = abs(statistics.mean(lin[:half]) - statistics.mean(lin[half:]))
    print(f"\n{task}: {n_test} test chips; noise floor of the suite's linear probe "
          f"(fp32 vs fp32): seeds 0-{half - 1} vs {half}-{seeds - 1} differ by {floor:.4f}, "
          f"std over {seeds} seeds {statistics.stdev(lin):.4f}, range "
          f"{min(lin):.4f}-{max(lin):.4f}")  # fmt: skip
    print("| protocol | " + " | ".join(precs) + " |\n|---|" + "---|" * len(precs))
    for proto in ("knn", "linear", "stable"):
        ref = res["fp32"][proto]
        r = statistics.mean(ref) if isinstance(ref, list) else ref
        cells = []
        for prec in precs:
            v = res[prec][proto]
            m = statistics.mean(v) if isinstance(v, list) else v
            extra = f" ± {statistics.stdev(v):.4f}" if isinstance(v, list) else ""
            if prec != "fp32":
                extra += f" ({m - r:+.4f}"
                if f"{proto}_pred" in res[prec]:
                    same = np.equal(res[prec][f"{proto}_pred"], res["fp32"][f"{proto}_pred"])
                    extra += f"; {same.mean():.1%} agree"
                extra += ")"
            cells.append(f"{m:.4f}{extra}")
        print(f"| {proto} | " + " | ".join(cells) + " |")
    ref = feats["fp32"]
    mean, spread = ref.mean(0), ref.std(0)  # per dimension, across the test chips
    print(f"  fp32 pooled embeddings: |mean| / spread across chips, median over dimensions "
          f"{np.median(np.abs(mean) / spread):.1f}")  # fmt: skip
    for prec in precs[1:]:
        a = feats[prec]
        cos = (a * ref).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(ref, axis=1))
        za, zr = (a - mean) / spread, (ref - mean) / spread  # what a probe sees: standardized
        zcos = (za * zr).sum(1) / (np.linalg.norm(za, axis=1) * np.linalg.norm(zr, axis=1))
        print(f"  {prec} vs fp32 (test chips): pooled cosine min {cos.min():.5f}; |difference| / "
              f"spread median {np.median(np.abs(a - ref) / spread):.2f}; cosine of the "
              f"standardized features min {zcos.min():.3f} "
              f"median {np.median(zcos):.3f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--tasks", default="eolearn-lulc-cls,algae-blooms-cls")
    ap.add_argument("--precisions", default="fp32,bf16,int8")
    ap.add_argument("--threads", type=int, default=1, help="1: small probes scale no further")
    ap.add_argument("--save", type=Path, help="folder: write each precision's results there "
                    "(run one process per precision on a shared machine) ...")  # fmt: skip
    ap.add_argument("--combine", type=Path, help="... then print the tables from that folder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for task in args.tasks.split(","):
        res, feats, n_test = {}, {}, 0
        if args.combine:
            for prec in args.precisions.split(","):
                saved = json.loads((args.combine / f"{task}-{prec}.json").read_text())
                res[prec], n_test = saved["scores"], saved["n_test"]
                feats[prec] = np.load(args.combine / f"{task}-{prec}.npy")
            report(task, res, feats, n_test, args.seeds)
            continue
        for prec in args.precisions.split(","):
            x, y, sec = features(task, prec)
            feats[prec], n_test = x["test"], len(y["test"])
            res[prec] = scores(x, y, args.seeds)
            print(f"{task} {prec}: embedded {len(x['train']) + n_test} chips in {sec:.1f} s",
                  flush=True)  # fmt: skip
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                (args.save / f"{task}-{prec}.json").write_text(
                    json.dumps({"scores": res[prec], "n_test": n_test}))
                np.save(args.save / f"{task}-{prec}.npy", x["test"])
        if not args.save:
            report(task, res, feats, n_test, args.seeds)


if __name__ == "__main__":
    main()
