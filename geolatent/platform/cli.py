"""CLI commands ``geolatent finetune`` and ``geolatent predict`` (parsing and progress only)."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from geolatent.yaml_io import read_yaml_mapping

console = Console(stderr=True)

FINETUNE_HELP = """Fine-tune an encoder on labels and write a model folder.

\b
The config (YAML, see configs/finetune/example.yaml) names the task
(classification, regression, segmentation, pixel_regression, embedding), the
encoder checkpoint, the labels (GeoJSON, GeoPackage, Shapefile, CSV or a Studio
export), the imagery sources, windows, split and training settings. Labels are
checked first: every dropped label or window is reported with the reason.
Materialized windows are kept in work_dir, so a rerun resumes.
"""

PREDICT_HELP = """Predict over an area with a fine-tuned model and write a COG.

\b
  geolatent predict --model ft_model --aoi area.geojson \\
      --start 2024-01-01 --end 2024-12-31 -o map.tif [--vector map.geojson]
The imagery sources recorded in the model folder are used unless --sources
names a YAML file with a `sources:` list (a data or fine-tuning config works).
The run is resumable (finished tiles are kept in OUT.parts until the COG is
written). Under torchrun each rank takes a share of the tiles; rank 0 writes.
"""


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _read_sources(path: Path) -> list:
    from geolatent.data.config import SourceConfig
    from geolatent.platform.config import resolve_source_paths

    raw = read_yaml_mapping(path)
    if not raw.get("sources"):
        raise ValueError(f"{path}: expected a mapping with a `sources:` list")
    sources = TypeAdapter(list[SourceConfig]).validate_python(raw["sources"])
    return resolve_source_paths(sources, path.resolve().parent)


def finetune_command(
    config: Path = typer.Option(..., "--config", "-c", exists=True, help="fine-tuning YAML"),
    prepare_only: bool = typer.Option(
        False, "--prepare-only", help="check labels and materialize windows, then stop"
    ),
    device: str = typer.Option(None, help="override train.device (cpu, cuda, cuda:1)"),
) -> None:
    from geolatent.platform.config import load_finetune_config
    from geolatent.platform.dataset import prepare_training_data
    from geolatent.platform.finetune import finetune
    from geolatent.platform.labels import LabelError
    from geolatent.runtime import DeviceError, resolve_device

    try:
        cfg = load_finetune_config(config)
    except (ValueError, ValidationError, OSError) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from e
    if device:
        cfg.train.device = device
    try:
        resolve_device(cfg.train.device, "--device" if device else "train.device")
    except DeviceError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from e
    try:
        with _progress() as bar:
            task = bar.add_task("materializing windows", total=None)
            data = prepare_training_data(
                cfg, progress=lambda done, total: bar.update(task, completed=done, total=total)
            )
        console.print(escape(data.report()))
        if prepare_only:
            console.print(f"windows in {data.root}")
            return
        result = finetune(cfg, data=data, log=lambda msg: console.print(escape(msg)))
    except (LabelError, ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(1) from e
    console.print(
        f"model folder: {result.bundle_path}  (best epoch {result.best_epoch + 1}, "
        f"val {result.metric} {result.best_metric:.4f}, {result.seconds:.0f} s)"
    )


def _init_distributed() -> None:
    """Join the torchrun process group when launched by torchrun (no-op otherwise)."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.distributed.is_available() and \
            not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)


def predict_command(
    model: Path = typer.Option(..., "--model", "-m", exists=True, help="fine-tuned model folder"),
    aoi: Path = typer.Option(..., "--aoi", exists=True, help="area: GeoJSON / GeoPackage / .shp"),
    start: str = typer.Option(..., help="start date (ISO), inclusive"),
    end: str = typer.Option(..., help="end date (ISO), inclusive"),
    out: Path = typer.Option(..., "--out", "-o", help="output COG (.tif)"),
    sources: Path = typer.Option(None, exists=True, help="YAML with a `sources:` list"),
    vector: Path = typer.Option(None, help="also write class polygons to this GeoJSON"),
    crs: str = typer.Option(None, help="output CRS (default: UTM zone of the area)"),
    crop: int = typer.Option(None, help="crop size in pixels (default: the training crop)"),
    stride: int = typer.Option(None, help="crop spacing in pixels (default: crop / 2)"),
    tile: int = typer.Option(256, help="tile size in pixels (memory per work item)"),
    blend: str = typer.Option("linear", help="linear | trim"),
    batch_size: int = typer.Option(16, help="crops per model call"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    precision: str = typer.Option("fp32", help="encoder: fp32 (exact) | bf16 | int8 | auto"),
    executor: str = typer.Option("serial", help="serial | process | dask (materialization)"),
    workers: int = typer.Option(None, help="materialization workers"),
    scheduler: str = typer.Option(None, help="dask scheduler address"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="skip finished tiles"),
    keep_parts: bool = typer.Option(False, help="keep per-tile part files"),
) -> None:
    from geolatent.model.precision import resolve_precision
    from geolatent.platform.predict import predict_area
    from geolatent.runtime import resolve_device

    try:  # before any work: errors name the flags
        resolve_precision(precision, resolve_device(device, "--device"), "--precision")
    except ValueError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from e
    _init_distributed()
    rank = int(os.environ.get("RANK", "0"))
    try:
        srcs = _read_sources(sources) if sources else None
        with _progress() as bar:
            task = bar.add_task("predicting tiles", total=None, visible=rank == 0)
            result = predict_area(
                model, aoi, start, end, out, sources=srcs, crs=crs, crop=crop, stride=stride,
                tile=tile, blend=blend, batch_size=batch_size, device=device,  # type: ignore[arg-type]
                precision=precision, executor=executor, workers=workers, scheduler=scheduler,
                resume=resume, keep_parts=keep_parts, vector_path=vector,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except (ValueError, ValidationError, FileNotFoundError, RuntimeError) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(1) from e
    if rank == 0:
        console.print(
            f"{result.path}: {result.width}x{result.height} {result.kind} map, {result.crs}, "
            f"{result.tiles_total} tiles ({result.tiles_resumed} resumed), "
            f"{result.area_km2:.2f} km² in {result.seconds:.1f} s "
            f"({result.km2_per_s:.3f} km²/s)"
        )
        if result.vector_path:
            console.print(f"polygons: {result.vector_path}")


def register(app: typer.Typer) -> None:
    """Mount ``finetune`` and ``predict`` on the main app."""
    app.command("finetune", help=FINETUNE_HELP)(finetune_command)
    app.command("predict", help=PREDICT_HELP)(predict_command)
