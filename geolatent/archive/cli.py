"""``geolatent archive build`` / ``geolatent archive search`` (thin wrappers over the library)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

# Two commands, so no callback is needed to keep them subcommands; the group's help is given
# where the group is added (geolatent.cli).
app = typer.Typer(no_args_is_help=True, add_completion=False)


def _fail(e: Exception) -> None:
    msg = str(e).replace("positive point", "--positive point").replace(
        "negative point", "--negative point")
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


@app.command("build")
def build_command(
    model: str = typer.Option(..., "--model", help="model folder or release id (a v1.3 "
                              "model gives a per-pixel archive)"),
    aoi: Path = typer.Option(..., "--aoi", help="area: GeoJSON / GeoPackage / Shapefile"),
    start: str = typer.Option(..., "--start", help="first date (ISO), inclusive"),
    end: str = typer.Option(..., "--end", help="last date (ISO), inclusive"),
    out: Path = typer.Option(..., "--out", help="the Zarr v3 store to write (region.zarr)"),
    imagery: str = typer.Option(None, "--imagery", help="STAC imagery: a preset "
                                "(earth-search, planetary-computer) or a STAC API URL; "
                                "Sentinel-2 L2A unless --collection"),
    collection: str = typer.Option(None, "--collection", help="collection of --imagery (needed "
                                   "for a URL), e.g. sentinel-1-rtc"),
    config: Path = typer.Option(None, "--config", help="YAML with a `sources:` list"),
    patch_size: int = typer.Option(4, "--patch-size", help="the model's patch: one vector per "
                                   "p x p pixels (models without location tokens)"),
    dims: int = typer.Option(128, "--dims", help="128 | 64 (PCA prefix; for v1.3 the distilled "
                             "embedding's Matryoshka width)"),
    location_patch_size: int = typer.Option(None, "--location-patch-size", help="models with "
                                            "location tokens (v1.3): one vector per s x s "
                                            "pixels; default 1 (per 10 m pixel)"),
    dtype: str = typer.Option("int8", "--dtype", help="int8 | float16 | float32"),
    executor: str = typer.Option("serial", "--executor",
                                 help="serial | process | dask (materialization)"),
    workers: int = typer.Option(None, "--workers", help="materialization workers"),
    scheduler: str = typer.Option(None, "--scheduler", help="dask scheduler address"),
) -> None:
    """Embed every location of the area into a resumable Zarr v3 archive."""
    from geolatent.archive.build import archive_imagery, build
    from geolatent.data.run import DiskFullError, RunLockedError
    from geolatent.data.stac_api import StacSearchError
    from geolatent.model.hub import ModelNotAvailable

    if imagery is not None and config is not None:
        _fail(ValueError("give either --config or --imagery, not both"))
    if imagery is None and config is None:
        _fail(ValueError("give --config data.yaml (a YAML with a `sources:` list) or --imagery "
                         "PRESET (earth-search, planetary-computer or a STAC API URL)"))
    if collection is not None and imagery is None:
        _fail(ValueError("--collection goes with --imagery; with --config the YAML names the "
                         "collections"))
    if not aoi.exists():
        _fail(FileNotFoundError(f"--aoi {aoi} does not exist"))
    if dtype not in ("int8", "float16", "float32"):
        _fail(ValueError(f"--dtype must be int8, float16 or float32, got {dtype!r}"))
    if executor not in ("serial", "process", "dask"):
        _fail(ValueError(f"--executor must be serial, process or dask, got {executor!r}"))

    def progress(done: int, total: int) -> None:
        typer.echo(f"tiles {done}/{total}", err=True)

    try:
        sources = None
        if imagery is not None:  # opened sources, searched over the AOI
            sources = archive_imagery(imagery, aoi, start, end, collection=collection)
        # torchrun ranks share the build (RANK / WORLD_SIZE); rank 0 publishes the archive
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        r = build(model, aoi, start, end, out, sources=sources, config=config,
                  patch_size=patch_size, dims=dims, dtype=dtype, executor=executor,
                  workers=workers, scheduler=scheduler, progress=progress, rank=rank,
                  world=world, location_patch_size=location_patch_size)  # fmt: skip
    except (ValueError, FileNotFoundError, RunLockedError, DiskFullError, StacSearchError,
            TimeoutError, ModelNotAvailable) as e:
        _fail(e)
        return
    if rank != 0:
        typer.echo(f"rank {rank}: {r.tiles_run} tiles run, {r.tiles_resumed} resumed; rank 0 "
                   f"writes {r.path}")
        return
    typer.echo(
        f"{r.path}: {r.vectors} vectors in {', '.join(r.zones)}, {r.tiles_run} tiles run, "
        f"{r.tiles_resumed} resumed, {r.area_km2:.2f} km2 in {r.seconds:.1f} s "
        f"({r.km2_per_s:.3f} km2/s); dequantized vs float cosine {r.dequantization_cosine:.5f}"
    )


@app.command("search")
def search_command(
    archive: Path = typer.Option(..., "--archive", help="region.zarr or a folder of AlphaEarth "
                                 "(Satellite Embedding) COGs"),
    positive: Path = typer.Option(..., "--positive", help="GeoJSON points of example places"),
    negative: Path = typer.Option(None, "--negative", help="GeoJSON points of counter-examples"),
    top: int = typer.Option(200, "--top", help="number of matches"),
    out: Path = typer.Option(..., "-o", "--out", help="matches GeoJSON"),
    heatmap: Path = typer.Option(None, "--heatmap", help="also write a similarity COG"),
) -> None:
    """Find places like the examples: cosine by example, or a linear classifier with negatives."""
    import geolatent.archive as ga

    try:
        arch = ga.open(archive)
        res = arch.search(positive, negative, top=top, heatmap=heatmap)
        res.write_geojson(out)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
        return
    best = f", best score {res.matches[0].score:.4f}" if res.matches else ""
    maps = f"; heatmap {', '.join(map(str, res.heatmaps))}" if res.heatmaps else ""
    typer.echo(f"{out}: {len(res.matches)} matches ({res.method} search{best}){maps}")
