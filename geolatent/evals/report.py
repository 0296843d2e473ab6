"""Suite reports: JSON (everything), a Markdown table (the headline numbers) and a PNG plot
(primary metric with its bootstrap interval per task, model and protocol)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geolatent.evals.results import EvalResult


def _fmt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def markdown_table(results: Sequence[EvalResult], extra_metrics: bool = True) -> str:
    """One row per result: primary metric mean +- std over seeds and its 95% bootstrap CI."""
    lines = [
        "| task | model | protocol | labels | metric | mean ± std | 95% CI | other metrics | "
        "n train / test |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r.primary
        others = ", ".join(f"{k} {_fmt(v.mean)}" for k, v in r.metrics.items()
                           if k != r.primary_metric) if extra_metrics else ""  # fmt: skip
        lines.append(
            f"| {r.task} | {r.model['label']} | {r.protocol} | {r.label_fraction:g} | "
            f"{r.primary_metric} | {_fmt(m.mean)} ± {_fmt(m.std)} | "
            f"[{_fmt(m.ci_low)}, {_fmt(m.ci_high)}] | {others} | {r.n_train} / {r.n_test} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: Sequence[EvalResult], path: Path, title: str = "") -> Path:
    """Bar chart per task (primary metric; error bars = 95% bootstrap CI). With several label
    fractions, one line per model / protocol against the fraction instead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r.task for r in results))
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.5 * max(1, len(tasks)), 3.8),
                             squeeze=False)  # fmt: skip
    for ax, task in zip(axes[0], tasks, strict=False):
        rs = [r for r in results if r.task == task]
        fractions = sorted({r.label_fraction for r in rs})
        groups = list(dict.fromkeys((r.model["label"], r.protocol) for r in rs))
        if len(fractions) > 1:
            for g in groups:
                pts = sorted((r.label_fraction, r.primary) for r in rs
                             if (r.model["label"], r.protocol) == g)  # fmt: skip
                x = [f for f, _ in pts]
                y = np.array([m.mean for _, m in pts])
                lo = y - np.array([m.ci_low for _, m in pts])
                hi = np.array([m.ci_high for _, m in pts]) - y
                ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=" / ".join(g))
            ax.set_xscale("log")
            ax.set_xlabel("fraction of training labels")
        else:
            y = np.array([next(r.primary.mean for r in rs if (r.model["label"], r.protocol) == g)
                          for g in groups])  # fmt: skip
            first = [next(r for r in rs if (r.model["label"], r.protocol) == g) for g in groups]
            lo = np.array([r.primary.ci_low for r in first])
            hi = np.array([r.primary.ci_high for r in first])
            pos = np.arange(len(groups))
            ax.bar(pos, y, yerr=[np.nan_to_num(y - lo), np.nan_to_num(hi - y)], capsize=3,
                   color=[f"C{i}" for i in range(len(groups))])  # fmt: skip
            ax.set_xticks(pos, [f"{m}\n{p}" for m, p in groups], rotation=45, ha="right",
                          fontsize=7)  # fmt: skip
        ax.set_title(task, fontsize=9)
        metric = rs[0].primary_metric
        ax.set_ylabel(metric + (" (lower is better)" if metric == "rmse" else ""))
        ax.grid(axis="y", alpha=0.3)
        if len(fractions) > 1:
            ax.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(name: str, results: Sequence[EvalResult], skipped: Sequence[dict],
                 out_dir: Path) -> dict[str, Path]:  # fmt: skip
    """Write ``results.json``, ``results.md`` and ``results.png`` under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "results.json", "markdown": out_dir / "results.md",
             "plot": out_dir / "results.png"}  # fmt: skip
    payload = {"suite": name, "results": [r.to_dict() for r in results], "skipped": list(skipped)}
    files["json"].write_text(json.dumps(payload, indent=1, default=str))
    md = (f"# {name}\n\nPrimary metric mean ± std over seeds; 95% CI: bootstrap over test "
          "samples.\n\n")  # fmt: skip
    md += markdown_table(results)
    if skipped:
        md += "\nSkipped: " + "; ".join(f"{s['task']} / {s['model']} / {s['protocol']} "
                                        f"({s['reason']})" for s in skipped) + "\n"  # fmt: skip
    files["markdown"].write_text(md)
    if results:
        plot(results, files["plot"], name)
    else:
        files.pop("plot")
    return files
