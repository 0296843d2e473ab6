"""``geolatent data ...``: build pretraining samples from declared sources (thin wrapper)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from geolatent.data.build import BuildPlan, build_dataset, plan_build
from geolatent.data.config import load_data_config
from geolatent.data.h5samples import read_sample
from geolatent.units import check_bandsets

app = typer.Typer(
    help="Build pretraining samples and windows from rasters and STAC catalogs.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _data() -> None:
    """Data commands (keeps ``build`` a subcommand)."""


def _print_plan(plan: BuildPlan, console: Console) -> None:
    done = sum(wp.done for wp in plan.windows)
    console.print(
        f"{len(plan.windows)} windows ({done} already done), sources: "
        + ", ".join(f"{s.name} ({s.modality}, {len(s.scenes)} scenes)" for s in plan.sources),
        markup=False,
    )
    for wp in plan.windows:
        console.print(
            wp.window.name + ("  (done, will be skipped)" if wp.done else ""), markup=False
        )
        for name, ids in wp.scene_ids().items():
            listed = ", ".join(ids) if ids else "-"
            console.print(f"  {name}: {len(ids)} scenes: {listed}", soft_wrap=True, markup=False)
    for p in plan.problems:
        console.print(f"[yellow]unusable scene[/yellow] {escape(str(p))}", soft_wrap=True)


@app.command()
def build(
    config: Path = typer.Option(..., "--config", "-c", exists=True, help="data config YAML"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list windows and their scenes only"),
    executor: str = typer.Option("process", help="process | dask | serial"),
    workers: int = typer.Option(None, help="worker processes (default: CPUs - 1)"),
    scheduler: str = typer.Option(None, help="dask scheduler address (default: LocalCluster)"),
    overwrite: bool = typer.Option(False, help="rebuild windows that are already done"),
    set_: list[str] = typer.Option(
        None, "--set", help="Config override, e.g. tile_size=512 (repeatable; YAML values)."
    ),
) -> None:
    """Materialize every window of the configured area and year into HDF5 samples."""
    console = Console(soft_wrap=True)
    try:
        cfg = load_data_config(config, set_ or [], flag="--set")
        if Path(cfg.output_dir).exists() and not Path(cfg.output_dir).is_dir():
            raise ValueError(f"output_dir {cfg.output_dir} is an existing file; give the path "
                             "of a folder (new, or one of an earlier build)")
        plan = plan_build(cfg)
    except (ValueError, OSError) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from e
    try:
        notes = check_bandsets(plan.sources)  # a source feeding no band is a config error
    except ValueError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from e
    for message in notes:
        console.print(f"note: {escape(message)}", soft_wrap=True)
    if dry_run:
        _print_plan(plan, console)
        return
    if executor not in ("process", "dask", "serial"):
        console.print(f"[red]error:[/red] unknown executor {executor!r}")
        raise typer.Exit(2)
    try:
        summary = build_dataset(
            cfg,
            executor=executor,  # type: ignore[arg-type]
            workers=workers,
            dask_address=scheduler,
            overwrite=overwrite,
            show_progress=True,
            plan=plan,
        )
    except (ValueError, RuntimeError) as e:  # bad scenes, a build already running, disk full
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from e
    console.print(
        f"built {len(summary.built)} · skipped {len(summary.skipped)} (done) · "
        f"empty {len(summary.empty)} · failed {len(summary.failed)} · "
        f"{summary.samples_written} samples in {summary.elapsed_s:.1f} s"
    )
    for name, reason in summary.failed.items():
        console.print(f"[red]failed[/red] {name}: {escape(reason)}", soft_wrap=True)
    for p in summary.scene_problems:
        console.print(f"[yellow]unusable scene[/yellow] {escape(p)}", soft_wrap=True)
    console.print(f"manifest: {summary.manifest}")
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def inspect(path: Path = typer.Argument(..., exists=True, help="a sample .h5 file")) -> None:
    """Print the datasets of a sample file (shapes, timestamps, missing timesteps)."""
    s = read_sample(path)
    console = Console(soft_wrap=True)
    console.print(f"latlon {s['latlon'].tolist()}  timestamps {s['timestamps'].tolist()}")
    for name, arr in s["arrays"].items():
        miss = s["missing_timesteps"][name].astype(int).tolist()
        console.print(f"{name}: {list(arr.shape)} missing timesteps {miss}")
