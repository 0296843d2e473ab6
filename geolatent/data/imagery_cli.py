"""``geolatent imagery search|fetch``: imagery for any area from STAC APIs (thin wrapper over
:mod:`geolatent.data.imagery`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from geolatent.data.imagery import fetch_composites, imagery_source, search_scenes, write_footprints
from geolatent.data.remote import AssetReadError
from geolatent.data.run import RunLockedError
from geolatent.data.stac_api import StacSearchError

app = typer.Typer(
    help="Find and fetch Sentinel-2 / Sentinel-1 imagery for an area from public STAC APIs.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

SOURCE_HELP = "preset (earth-search, planetary-computer) or the URL of any STAC API"


@app.callback()
def _imagery() -> None:
    """Imagery commands."""


def _source(source: str, collection: str | None, modality: str | None, max_cloud: float | None,
            cache: Path | None, cache_max_mb: float | None, offline: bool):
    return imagery_source(source, collection=collection, modality=modality,
                          max_cloud=max_cloud, cache_dir=cache, offline=offline,
                          cache_max_mb=cache_max_mb)


def _fail(e: Exception) -> None:
    msg = str(e)
    for field, flag in (("max_cloud", "--max-cloud"), ("cache_max_mb", "--cache-max-mb")):
        msg = msg.replace(field, flag)
    console.print(f"[red]error:[/red] {escape(msg)}")
    raise typer.Exit(1) from e


@app.command("search")
def search_command(
    aoi: Path = typer.Option(..., "--aoi", exists=True, help="area: GeoJSON (lon/lat)"),
    start: str = typer.Option(..., "--start", help="start date (ISO), inclusive"),
    end: str = typer.Option(..., "--end", help="end date (ISO), exclusive"),
    source: str = typer.Option("earth-search", "--source", help=SOURCE_HELP),
    collection: str = typer.Option(None, "--collection", help="collection (default: S2 L2A)"),
    modality: str = typer.Option(None, "--modality", help="modality for a URL source"),
    max_cloud: float = typer.Option(None, "--max-cloud", help="max scene cloud cover, percent"),
    footprints: Path = typer.Option(None, "--footprints", help="write footprints GeoJSON here"),
    cache: Path = typer.Option(None, "--cache", help="cache folder (default ~/.cache/geolatent)"),
    offline: bool = typer.Option(False, "--offline", help="use only cached searches"),
) -> None:
    """List the scenes over an area: id, date, cloud %, coverage of the AOI."""
    try:
        cfg = _source(source, collection, modality, max_cloud, cache, None, offline)
        scenes = search_scenes(cfg, aoi, start, end)
    except (ValueError, StacSearchError) as e:
        _fail(e)
        return
    table = Table(title=f"{len(scenes)} scenes of {', '.join(cfg.collections)} ({cfg.url})")
    for col in ("id", "date", "cloud %", "AOI coverage %"):
        table.add_column(col)
    for s in scenes:
        cloud = "-" if s.cloud_cover is None else f"{s.cloud_cover:.1f}"
        table.add_row(s.id, s.datetime[:19], cloud, f"{100 * s.aoi_coverage:.1f}")
    console.print(table)
    if footprints:
        console.print(f"footprints: {write_footprints(scenes, footprints)}")


def fetch_with_progress(sources, aoi: Path, start: str, end: str, out: Path, *, crs: str | None,
                        resolution: float, console: Console):
    """:func:`~geolatent.data.imagery.fetch_composites` with a progress bar on ``console``
    (tiles done, scenes read, MB fetched); ``imagery fetch`` and ``embed --imagery`` use it."""
    with Progress(
        TextColumn("[bold]fetching imagery"), BarColumn(), MofNCompleteColumn(),
        TextColumn("tiles, {task.fields[scenes]} scenes, {task.fields[mb]:.1f} MB fetched"),
        TimeElapsedColumn(), console=console,
    ) as bar:
        task = bar.add_task("fetch", total=None, scenes=0, mb=0.0)
        return fetch_composites(
            sources, aoi, start, end, out, crs=crs, resolution=resolution,
            progress=lambda p: bar.update(task, completed=p["windows_done"], total=p["windows"],
                                          scenes=p["scenes"], mb=p["bytes"] / 1e6),
        )


@app.command("fetch")
def fetch_command(
    aoi: Path = typer.Option(..., "--aoi", exists=True, help="area: GeoJSON (lon/lat)"),
    start: str = typer.Option(..., "--start", help="start date (ISO), inclusive"),
    end: str = typer.Option(..., "--end", help="end date (ISO), exclusive"),
    out: Path = typer.Option(..., "--out", help="output folder for the monthly COGs"),
    source: str = typer.Option("earth-search", "--source", help=SOURCE_HELP),
    collection: list[str] = typer.Option(None, "--collection", help="collection(s)"),
    modality: str = typer.Option(None, "--modality", help="modality for a URL source"),
    max_cloud: float = typer.Option(None, "--max-cloud", help="max scene cloud cover, percent"),
    crs: str = typer.Option(None, "--crs", help="output CRS (default: UTM zone of the AOI)"),
    resolution: float = typer.Option(10.0, "--resolution", help="pixel size, metres"),
    cache: Path = typer.Option(None, "--cache", help="cache folder (default ~/.cache/geolatent)"),
    cache_max_mb: float = typer.Option(None, "--cache-max-mb", help="cache size limit, MB"),
    offline: bool = typer.Option(False, "--offline", help="use only the cache"),
) -> None:
    """Write monthly cloud-masked median composites of an area as COGs."""
    if resolution <= 0:
        _fail(ValueError(f"--resolution must be positive, got {resolution}"))
    try:
        sources = [
            _source(source, c, modality, max_cloud, cache, cache_max_mb, offline)
            for c in (collection or [None])
        ]
        result = fetch_with_progress(sources, aoi, start, end, out, crs=crs,
                                     resolution=resolution, console=console)
    except (ValueError, StacSearchError, AssetReadError, RunLockedError, OSError) as e:
        _fail(e)
        return
    for f in result.files:
        console.print(f"wrote {f}")
    if result.missing_months:
        console.print(f"no data (missing): {', '.join(result.missing_months)}")
    problems = {w: p for w, p in result.report.items() if p}
    for w, p in problems.items():
        for line in p:
            console.print(f"[yellow]{escape(w)}[/yellow]: {escape(line)}")
    console.print(
        f"{result.windows} tiles, {result.scenes_read} scene reads, {result.fetched_windows} "
        f"asset windows fetched ({result.fetched_bytes / 1e6:.1f} MB), {result.cached_windows} "
        f"from the cache; report: {out / 'report.json'}"
    )


def register(root: typer.Typer) -> None:
    """Mount ``imagery`` on the main app."""
    root.add_typer(app, name="imagery", help="Find and fetch imagery from public STAC APIs.")
