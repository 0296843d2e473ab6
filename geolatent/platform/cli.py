"""CLI commands ``geolatent finetune`` and ``geolatent predict`` (parsing and progress only)."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from pydantic import ValidationError
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

console = Console(stderr=True, soft_wrap=True)  # never split a message mid-sentence

FINETUNE_HELP = """Fine-tune an encoder on labels and write a model folder.

\b
The config (YAML, see configs/finetune/example.yaml) names the task
(classification, regression, segmentation, pixel_regression), the
encoder checkpoint, the labels (GeoJSON, GeoPackage, Shapefile, CSV or a Studio
export), the imagery sources, windows, split and training settings. Labels are
checked first: every dropped label or window is reported with the reason.
Materialized windows are kept in work_dir, and every finished epoch is
checkpointed in OUTPUT/.work, so a rerun with the same config resumes from the
last finished epoch (same result as an uninterrupted run); --restart starts over.
"""

PREDICT_HELP = """Predict over an area with a fine-tuned model and write a COG.

\b
  geolatent predict --model ft_model --aoi area.geojson \\
      --start 2024-01-01 --end 2024-12-31 -o map.tif [--vector map.geojson]
The imagery sources recorded in the model folder are used unless --sources
names a YAML file with a `sources:` list (a data or fine-tuning config works).
The run is resumable (finished tiles are kept in OUT.work until the COG is
written; one run per output at a time). The area, tiles, disk needed and a
rough time are printed first; an area above --max-area-km2 needs --yes.
The map is on the imagery's grid when the sources are files on one 10 m grid,
on the grid of --align-to FILE when given, else on the global grid of --crs
(default: the UTM zone of the area).
Under torchrun each rank takes a share of the tiles; rank 0 writes.
"""


def progress_bar() -> Progress:
    """The progress bar of the long commands (fine-tuning windows, predict and embed tiles)."""
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
    from geolatent.config import load_config
    from geolatent.platform.config import SourcesFile, resolve_source_paths

    sources = load_config(path, SourcesFile, what="--sources").sources
    return resolve_source_paths(sources, path.resolve().parent)


def finetune_command(
    config: Path = typer.Option(..., "--config", "-c", exists=True, help="fine-tuning YAML"),
    prepare_only: bool = typer.Option(
        False, "--prepare-only", help="check labels and materialize windows, then stop"
    ),
    device: str = typer.Option(None, help="override train.device (cpu, cuda, cuda:1)"),
    set_: list[str] = typer.Option(
        None, "--set", help="Config override, e.g. train.epochs=5 (repeatable; YAML values)."
    ),
    restart: bool = typer.Option(
        False, "--restart", help="discard an interrupted run's checkpoint and start from epoch 1"
    ),
) -> None:
    from contextlib import nullcontext

    from geolatent.data.run import OutputLock
    from geolatent.modalities import get_modality
    from geolatent.platform.bundle import check_model_output
    from geolatent.platform.config import load_finetune_config
    from geolatent.platform.finetune import (
        config_source_names,
        finetune,
        inspect_windows,
        prepare_checked,
    )
    from geolatent.platform.labels import LabelError
    from geolatent.platform.training_state import ResumeError
    from geolatent.runtime import DeviceError, resolve_device

    try:
        cfg = load_finetune_config(config, set_ or [], flag="--set")
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
        if not prepare_only:  # before hours of work: never over the user's files
            check_model_output(cfg.output, "output:")
        # one fine-tuning per model folder (the window preparation locks its own work folder)
        lock = (OutputLock(cfg.output, "finetune", option="output:") if not prepare_only
                else nullcontext())
        with lock:
            with progress_bar() as bar:
                task = bar.add_task("materializing windows", total=None)
                data = prepare_checked(
                    cfg, progress=lambda done, total: bar.update(task, completed=done, total=total),
                    log=lambda msg: console.print(escape(msg)),
                )
            console.print(escape(data.report()))
            if prepare_only:
                mods = sorted({m for r in data.records for m in r.bands
                               if get_modality(m).encoder_input})
                coverage = inspect_windows(data, mods, task=cfg.task,
                                           min_imagery_fraction=cfg.windows.min_imagery_fraction,
                                           source_names=config_source_names(cfg))
                console.print(escape(coverage.summary()))
                console.print(f"windows in {data.root}")
                return
            result = finetune(cfg, data=data, log=lambda msg: console.print(escape(msg)),
                              restart=restart)
    except ResumeError as e:
        console.print(f"[red]error:[/red] {escape(e.describe('--restart'))}")
        raise typer.Exit(2) from e
    except (LabelError, ValueError, FileNotFoundError, RuntimeError) as e:
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
    model: Path = typer.Option(..., "--model", "-m", exists=True,
                               help="fine-tuned model folder; a plain model (release or "
                               "geolatent checkpoint folder) writes the embedding map"),
    aoi: Path = typer.Option(..., "--aoi", exists=True, help="area: GeoJSON / GeoPackage / .shp"),
    aoi_crs: str = typer.Option(None, "--aoi-crs", help="CRS of the area's coordinates when the "
                                "file does not store one (default: lon/lat)"),
    start: str = typer.Option(..., help="start date (ISO), inclusive"),
    end: str = typer.Option(..., help="end date (ISO), inclusive"),
    out: Path = typer.Option(..., "--out", "-o", help="output COG (.tif)"),
    sources: Path = typer.Option(None, exists=True, help="YAML with a `sources:` list"),
    imagery: str = typer.Option(None, "--imagery", help="STAC preset (earth-search, "
                                "planetary-computer) or STAC API URL instead of --sources"),
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
    keep_parts: bool = typer.Option(False, help="keep the per-tile work store OUT.work"),
    yes: bool = typer.Option(False, "--yes", help="confirm an area above --max-area-km2"),
    align_to: Path = typer.Option(None, "--align-to", exists=True,
                                  help="put the map on this raster's grid"),
    max_area_km2: float = typer.Option(2500.0, help="areas above this need --yes"),
) -> None:
    from geolatent.model.precision import resolve_precision
    from geolatent.platform.area import read_area
    from geolatent.platform.predict import predict_area
    from geolatent.platform.predict.plan import imagery_for_model
    from geolatent.runtime import resolve_device

    _check_predict_options(start=start, end=end, batch_size=batch_size, out=out, tile=tile)
    try:  # before any work: errors name the flags
        resolve_precision(precision, resolve_device(device, "--device"), "--precision")
    except ValueError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from e
    _init_distributed()
    rank = int(os.environ.get("RANK", "0"))
    try:
        area = read_area(aoi, crs=aoi_crs)
        srcs = _read_sources(sources) if sources else None
        if imagery:
            if sources:
                raise ValueError("give either --sources or --imagery, not both")
            srcs = imagery_for_model(imagery, model, area, start, end)
        with progress_bar() as bar:
            task = bar.add_task("predicting tiles", total=None, visible=rank == 0)
            result = predict_area(
                model, area, start, end, out, sources=srcs, crs=crs, crop=crop, stride=stride,
                tile=tile, blend=blend, batch_size=batch_size, device=device,  # type: ignore[arg-type]
                precision=precision, executor=executor, workers=workers, scheduler=scheduler,
                resume=resume, keep_parts=keep_parts, vector_path=vector,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                max_area_km2=max_area_km2, confirm=yes, align_to=align_to,
                report=lambda line: console.print(f"predict: {escape(line)}"),
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


def _fail(message: str) -> None:
    """Print a usage error naming the option and exit 2 (bad command line)."""
    console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2)


def _check_predict_options(*, start: str, end: str, batch_size: int, out: Path,
                           tile: int) -> None:
    """Refuse option values that would fail later with an unclear message or a traceback."""
    from geolatent.data.run import OutputNotWritableError, check_writable
    from geolatent.data.window import to_utc_naive

    for flag, value in (("--start", start), ("--end", end)):
        try:
            to_utc_naive(value)
        except (ValueError, TypeError) as e:
            _fail(f"{flag} {value!r} is not a date: give an ISO date such as 2024-01-31 ({e})")
    if to_utc_naive(end) < to_utc_naive(start):
        _fail(f"--end {end} is before --start {start}")
    if batch_size < 1:
        _fail(f"--batch-size must be at least 1 (got {batch_size})")
    if tile < 1:
        _fail(f"--tile must be at least 1 pixel (got {tile})")
    if out.is_dir():
        _fail(f"--out {out} is a folder; give the path of the .tif file to write")
    try:
        check_writable(out, "--out")  # before the model is read: one line, not EROFS later
    except OutputNotWritableError as e:
        _fail(str(e))


def register(app: typer.Typer) -> None:
    """Mount ``finetune`` and ``predict`` on the main app."""
    app.command("finetune", help=FINETUNE_HELP)(finetune_command)
    app.command("predict", help=PREDICT_HELP)(predict_command)
