"""``geolatent eval``: a thin wrapper over :func:`run_eval` / :func:`run_suite`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console


def _settings(set_: list[str] | None, precision: str | None):
    """``--set`` overrides plus ``--precision`` as :class:`EvalSettings`, checked here so errors
    name the flags."""
    from geolatent.config import ConfigError
    from geolatent.evals.settings import EvalSettings
    from geolatent.model.precision import resolve_precision
    from geolatent.runtime import resolve_device

    try:
        s = EvalSettings.from_dict(None, set_ or [], flag="--set")
        if precision is not None:
            s.precision = precision
        dev = resolve_device(s.device, "--set device=")
        resolve_precision(s.precision, dev, "--precision")
    except (ConfigError, ValueError) as e:
        raise typer.BadParameter(str(e)) from None
    return s


def eval_command(
    task: str = typer.Option(
        None, "--task", help="Task name (see --list), or your dataset file (.yaml, docs/evals.md)."
    ),
    model: str = typer.Option(
        None, "--model", help="Checkpoint folder (any path load_model takes)."
    ),
    random_init: str = typer.Option(
        None, "--random-init", help="Evaluate a randomly initialized encoder of this size (nano)."
    ),
    baseline: str = typer.Option(None, "--baseline", help="Evaluate a baseline (band-stats)."),
    protocol: str = typer.Option("linear", "--protocol", help="knn | linear | finetune"),
    seeds: int = typer.Option(3, "--seeds", help="Number of seeds."),
    label_fraction: list[float] = typer.Option(
        None, "--label-fraction", help="Fraction of training labels (repeatable)."
    ),
    data_root: Path = typer.Option(
        None, "--data-root", help="Benchmark folder (default $GEOLATENT_DATA_DIR/<dataset>)."
    ),
    patch_size: int = typer.Option(None, "--patch-size", help="Override the task's patch size."),
    set_: list[str] = typer.Option(
        None, "--set", help="Setting override, e.g. linear.epochs=10 (repeatable)."
    ),
    suite: Path = typer.Option(None, "--suite", help="Run the sweep described in this YAML file."),
    out: Path = typer.Option(None, "--out", help="Output folder for JSON / Markdown / PNG."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Embedding cache folder."),
    list_tasks: bool = typer.Option(False, "--list", help="List the tasks and exit."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
    precision: str = typer.Option(
        None, "--precision", help="Encoder precision: fp32 (default) | bf16 | int8 | auto."
    ),
) -> None:
    """Evaluate a model on a benchmark (kNN, linear probe or fine-tuning), or run a suite."""
    from geolatent.evals.report import markdown_table, write_report
    from geolatent.evals.runner import ModelSpec, run_eval, run_suite
    from geolatent.evals.tasks import TASKS

    console = Console()
    if list_tasks:
        for name, t in TASKS.items():
            console.print(f"[bold]{name}[/bold] (patch {t.patch_size}): {t.description}")
        return
    if suite is not None:
        if precision is not None:
            raise typer.BadParameter("--precision does not apply to --suite: set "
                                     "`settings: {precision: bf16}` in the suite YAML")  # fmt: skip
        from geolatent.config import ConfigError
        from geolatent.evals.settings import load_suite

        try:
            load_suite(suite)  # a bad suite file is a usage error naming the key, before any work
        except ConfigError as e:
            raise typer.BadParameter(str(e), param_hint="--suite") from None
        res = run_suite(suite, out_dir=out, cache=cache_dir and str(cache_dir),
                        progress=not no_progress)  # fmt: skip
        console.print(markdown_table(res.results))
        for kind, path in res.files.items():
            console.print(f"{kind}: {path}")
        return
    given = [v for v in (model, random_init, baseline) if v]
    if task is None or len(given) != 1:
        raise typer.BadParameter(
            "give --task and exactly one of --model PATH, --random-init SIZE, --baseline NAME "
            "(or --suite FILE)"
        )
    if model:
        spec = ModelSpec.from_any(model)
    elif random_init:
        spec = ModelSpec(f"random-{random_init}", random_init=random_init)
    else:
        spec = ModelSpec(baseline, baseline=baseline)
    results = run_eval(
        task, spec, protocol, seeds=seeds, label_fractions=label_fraction or None,
        data_root=data_root, settings=_settings(set_, precision), patch_size=patch_size,
        cache=cache_dir and str(cache_dir), progress=not no_progress,
    )  # fmt: skip
    console.print(markdown_table(results))
    if out is not None:
        name = results[0].task if results else Path(task).stem
        files = write_report(f"{name}-{spec.label}-{protocol}", results, [], out)
        console.print(json.dumps({k: str(v) for k, v in files.items()}))


def register(app: typer.Typer) -> None:
    """Mount ``geolatent eval`` on the main CLI."""
    app.command("eval")(eval_command)
