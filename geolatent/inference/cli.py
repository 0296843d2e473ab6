"""CLI commands ``geolatent embed`` and ``geolatent demo`` (parsing and progress only)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from geolatent.inference.file_inputs import (
    RasterInput,
    RasterInputError,
    date_from_filename,
    parse_date,
)
from geolatent.modalities import cli_modalities
from geolatent.platform.cli import progress_bar

console = Console(stderr=True, soft_wrap=True)  # never split a message mid-sentence

EMBED_HELP = """Embed co-registered GeoTIFFs into a cloud-optimized embedding GeoTIFF.

\b
Inputs, per modality ({flags}):
  * one multi-band file per timestep: repeat the option, e.g.
      --s2 jan.tif --s2 feb.tif --s2-dates 2024-01-15,2024-02-14
    (one date per file, in the same order);
  * or one stack file holding T timesteps, bands time-major (all bands of the
    first date, then the second, ...): --s2 stack.tif --s2-dates D1,D2,...,DT;
  * several stacks: group dates per file with ';': --s2-dates "D1,D2;D3,D4".
  Without --*-dates, each file's date is read from its name (YYYY-MM-DD or
  YYYYMMDD) and printed.
Band names come from the files' band descriptions (B2 == B02, VV == vv); bands
the model does not use (e.g. S2 B10) are dropped by name. Files without
descriptions need --s2-bands B02,B03,... (one timestep's bands in file order).
Values must be raw: Sentinel-2 L2A DN (0-10000), Sentinel-1 dB, Landsat L1 DN;
nothing is rescaled, and reflectance (0-1) is rejected.
Multi-sensor stack (Earth Engine export convention, e.g. CropHarvest):
  --stack stack.tif --dates D1,D2,...  band descriptions NAME for the first
  timestep, NAME_1, NAME_2, ... for the next; bands are assigned to modalities
  by name (B2 -> Sentinel-2, VV -> Sentinel-1, ...), other bands (weather,
  elevation, ...) are listed once and ignored.
Imagery from a STAC API instead of files:
  --imagery earth-search --aoi area.geojson --start 2024-05-01 --end 2024-09-01
  fetches monthly cloud-masked median composites of the area (preset
  earth-search or planetary-computer, or a STAC API URL with --collection;
  repeat --collection for several, e.g. sentinel-2-l2a and sentinel-1-rtc)
  into OUT.work/imagery and embeds them, one timestep per month; a rerun
  after a kill resumes both the fetch and the embedding.
Grid: files on one 10 m grid are read as they are (the map is on their grid);
otherwise every file (any CRS, 20/30/60 m bands) is warped by the data layer to
the 10 m UTM grid covering them, or to --crs / --resolution, or to the grid of
--align-to FILE. --align month puts dates of one calendar month (e.g. S1 and
S2 of a month) on one timestep.

\b
Output: D float32 bands at 10*p m, the grid's CRS, transform = grid transform
scaled by p, NaN nodata where no input was valid. Sizes not divisible by p lose the
last H mod p rows / W mod p columns (incomplete patches are not embedded).
"""

DEMO_HELP = """Run the whole pipeline on the built-in generated sample scene.

Writes OUT/scene/*.tif (Sentinel-2 L2A + Sentinel-1, 12 monthly timesteps, and
labels.tif), OUT/embedding.tif (COG), OUT/embedding_pca.png (first three principal
components of the feature map as RGB) and OUT/labels.png. Without --model it uses
a random-weight Nano model, and says so.
"""


def _file_flags() -> str:
    """``--s2, --s1, --landsat, ...``: the registry's file options, for messages."""
    return ", ".join(f"--{m.cli_flag}" for m in cli_modalities())


def _embed_help() -> str:
    """EMBED_HELP with the file options of the modalities registered now."""
    flags = ", ".join(f"--{m.cli_flag} = {m.name}" for m in cli_modalities())
    # Only the {flags} field is formatted: the rest of the text holds no braces.
    return EMBED_HELP.replace("{flags}", flags)


def _with_modality_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` ``--FLAG FILE``, ``--FLAG-dates`` and ``--FLAG-bands`` for every
    registry modality with a ``cli_flag`` (``--s2``, ``--s1``, ``--landsat``, then registered
    ones), passed on as ``modality_files={modality: (flag, files, dates, bands)}``.

    Typer reads a command's options from its signature, so the wrapper gets one built from the
    registry when the command is registered (a modality registered later needs a new app).
    """
    sig = inspect.signature(command, eval_str=True)
    fixed = [p for p in sig.parameters.values() if p.name != "modality_files"]
    keys: dict[str, tuple[str, str, str, str]] = {}  # modality -> (flag, files, dates, bands)
    added = []
    for m in cli_modalities():
        key = m.cli_flag.replace("-", "_")  # type: ignore[union-attr]
        flag = m.cli_flag
        keys[m.name] = (flag, key, f"{key}_dates", f"{key}_bands")  # type: ignore[assignment]
        for name, annotation in (
            (key, Annotated[list[Path] | None, typer.Option(f"--{flag}", help=m.cli_help
                                                            or f"{m.name} GeoTIFF(s).")]),
            (f"{key}_dates", Annotated[str | None, typer.Option(
                f"--{flag}-dates", help=f"Comma-separated dates for --{flag}.")]),
            (f"{key}_bands", Annotated[str | None, typer.Option(
                f"--{flag}-bands", help=f"Band names of one --{flag} timestep.")]),
        ):
            added.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                           annotation=annotation))
    # The file options come right after the model options, where --help always listed them.
    at = next(i for i, p in enumerate(fixed) if p.name == "random_weights") + 1
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in fixed]
    params = params[:at] + added + params[at:]

    @functools.wraps(command)
    def wrapper(**kwargs):
        files = {name: (flag, kwargs.pop(k), kwargs.pop(kd), kwargs.pop(kb))
                 for name, (flag, k, kd, kb) in keys.items()}
        return command(**kwargs, modality_files=files)

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # typer must see the registry-built signature, not the original
    return wrapper


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _raster_inputs(
    option: str, files: list[Path] | None, dates: str | None, bands: str | None
) -> list[RasterInput]:
    """Turn ``--X file... --X-dates ... --X-bands ...`` into :class:`RasterInput` objects."""
    files = list(files or [])
    if not files:
        if dates or bands:
            raise RasterInputError(f"--{option}-dates / --{option}-bands given without --{option}")
        return []
    band_list = _split(bands) or None
    if dates is None:
        out = []
        for f in files:
            d = date_from_filename(f)
            if d is None:
                raise RasterInputError(
                    f"{f}: no date given and none found in the file name; use --{option}-dates"
                )
            console.print(f"[dim]{f.name}: date {d.isoformat()} (from the file name)[/dim]")
            out.append(RasterInput(f, d, band_list))
        return out
    if ";" in dates:
        groups = [_split(g) for g in dates.split(";")]
        if len(groups) != len(files):
            raise RasterInputError(
                f"--{option}-dates has {len(groups)} ';'-separated groups for {len(files)} files"
            )
        return [
            RasterInput(f, [parse_date(d) for d in g], band_list)
            for f, g in zip(files, groups, strict=True)
        ]
    items = [parse_date(d) for d in _split(dates)]
    if len(items) == len(files):
        return [RasterInput(f, d, band_list) for f, d in zip(files, items, strict=True)]
    if len(files) == 1:
        return [RasterInput(files[0], items, band_list)]
    raise RasterInputError(
        f"--{option}-dates has {len(items)} dates for {len(files)} files: give one date per file, "
        "or all dates of a single stack file, or ';'-separated groups per file"
    )


def _check_device_precision(device: str | None, precision: str = "fp32"):
    """``--device`` and ``--precision`` checked before any work; errors name the flags."""
    from geolatent.model.precision import resolve_precision
    from geolatent.runtime import resolve_device

    try:
        return resolve_precision(precision, resolve_device(device or "cpu", "--device"),
                                 "--precision")  # fmt: skip
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def _input_flags(stack: Path | None, imagery: str | None) -> dict[str, str]:
    """modality -> the flag that gave it, for unit errors that name what to change."""
    flags = {"sentinel2_l2a": "--s2", "sentinel1": "--s1", "landsat": "--landsat"}
    if stack is not None or imagery is not None:  # one of them gave (some of) the inputs
        other = "--stack" if stack is not None else "--imagery"
        flags = {m: f"{f} / {other}" for m, f in flags.items()}
    return flags


def _load_model(
    model_path: Path | None, random_weights: str | None, device: str | None,
    precision: str = "fp32",
):  # fmt: skip
    """The model and a description of its weights; never random unless asked for."""
    from geolatent.model.precision import set_precision

    resolved = _check_device_precision(device, precision)
    if resolved.name != "fp32":
        console.print(f"encoder precision: {resolved}")
    model, weights = _load_weights(model_path, random_weights, device)
    set_precision(model, precision, "--precision")
    return model, weights


def _load_weights(model_path: Path | None, random_weights: str | None, device: str | None):
    import geolatent
    from geolatent.inference.demo import RANDOM_WEIGHTS_NOTE, random_model

    if model_path is not None and random_weights is not None:
        raise typer.BadParameter("give either --model or --random-weights, not both")
    if model_path is not None:
        try:
            model = geolatent.load_model(model_path, device=device or "cpu")
        except (OSError, ValueError) as e:
            console.print(f"[bold red]error:[/bold red] cannot load --model {model_path}: {e}")
            raise typer.Exit(code=2) from None
        return model, f"checkpoint {model_path}"
    if random_weights is not None:
        from geolatent.model.config import SIZES

        if random_weights not in SIZES:
            raise typer.BadParameter(f"--random-weights must be one of {list(SIZES)}")
        console.print(
            f"[bold yellow]Using {RANDOM_WEIGHTS_NOTE}: a {random_weights} model with random "
            "weights; its embeddings carry no learned meaning.[/bold yellow]"
        )
        return random_model(random_weights), f"{RANDOM_WEIGHTS_NOTE}, {random_weights}, seed 0"
    raise typer.BadParameter(
        "no model given: pass --model PATH or ID (a release folder of any version, a release id "
        "such as allenai/OlmoEarth-v1_2-Nano, or a geolatent "
        "checkpoint), or --random-weights nano for a demo with random weights"
    )


def register(app: typer.Typer) -> None:
    """Mount ``embed`` and ``demo`` on the top-level CLI."""

    @app.command("embed", help=_embed_help())
    @_with_modality_options
    def embed_cmd(
        out: Annotated[Path, typer.Option("--out", "-o", help="Output embedding GeoTIFF (COG).")],
        model: Annotated[
            Path | None, typer.Option(help="Checkpoint folder (v1 release or geolatent).")
        ] = None,
        random_weights: Annotated[
            str | None,
            typer.Option(
                help="Use a random-weight model of this size (nano, tiny, ...); demos only."
            ),
        ] = None,
        patch_size: Annotated[int, typer.Option(min=1, max=8, help="Patch size p (1-8).")] = 4,
        tile_size: Annotated[
            int | None, typer.Option(help="Tile core size in input px (multiple of p).")
        ] = None,
        overlap: Annotated[
            int | None, typer.Option(help="Context margin in input px per side (multiple of p).")
        ] = None,
        batch_size: Annotated[int, typer.Option(min=1, help="Tiles per model call.")] = 4,
        device: Annotated[str | None, typer.Option(help="torch device, e.g. cpu or cuda.")] = None,
        precision: Annotated[
            str, typer.Option(help="Encoder precision: fp32 (exact) | bf16 | int8 | auto.")
        ] = "fp32",
        align: Annotated[
            str, typer.Option(help="Timesteps from distinct 'date's or calendar 'month's.")
        ] = "date",
        stack: Annotated[
            Path | None, typer.Option(help="One multi-sensor stack (NAME, NAME_1, ... bands).")
        ] = None,
        dates: Annotated[str | None, typer.Option(help="Dates of the --stack timesteps.")] = None,
        crs: Annotated[str | None, typer.Option(help="Output grid CRS, e.g. EPSG:32633.")] = None,
        resolution: Annotated[float | None, typer.Option(
            help="Output grid pixel size in CRS units (10 m).")] = None,
        align_to: Annotated[Path | None, typer.Option(
            help="Put the embedding on the grid of this raster.")] = None,
        imagery: Annotated[str | None, typer.Option(
            help="Inputs from a STAC API over --aoi: earth-search, planetary-computer or a URL."
        )] = None,
        aoi: Annotated[Path | None, typer.Option(help="--imagery area (GeoJSON, GPKG).")] = None,
        start: Annotated[str | None, typer.Option(help="--imagery first day (ISO).")] = None,
        end: Annotated[str | None, typer.Option(help="--imagery end day (ISO, excluded).")] = None,
        collection: Annotated[list[str] | None, typer.Option(
            help="--imagery collection(s); default the preset's Sentinel-2 L2A."
        )] = None,
        max_area_km2: Annotated[float, typer.Option(
            help="Areas above this (km²) need --yes.")] = 2500.0,
        yes: Annotated[bool, typer.Option("--yes", help="Confirm an area above --max-area-km2.")
                       ] = False,
        modality_files: dict[str, tuple] | None = None,
    ) -> None:
        from geolatent.data.io.grid import OutputGrid
        from geolatent.data.run import check_writable
        from geolatent.inference.embed_rasters import embed_geotiffs

        _check_device_precision(device, precision)
        try:
            check_writable(out, "--out")  # before any model or input is read
            inputs = {
                name: files
                for name, (flag, paths, dates_, bands) in (modality_files or {}).items()
                if (files := _raster_inputs(flag, paths, dates_, bands))
            }
            if dates is not None and stack is None:
                raise RasterInputError("--dates is for --stack; give --stack FILE")
            if stack is not None:
                if not dates:
                    raise RasterInputError("--stack needs --dates D1,D2,... (one per timestep)")
                from geolatent.inference.file_inputs import stack_inputs

                found, ignored = stack_inputs(stack, [parse_date(d) for d in _split(dates)])
                for name, files in found.items():
                    if name in inputs:
                        raise RasterInputError(f"--stack and another option both give {name}")
                    inputs[name] = files
                if ignored:
                    console.print(f"[dim]{stack.name}: ignored bands (not model inputs): "
                                  f"{', '.join(ignored)}[/dim]")
            if imagery is not None:
                inputs = _imagery_inputs(imagery, aoi, start, end, collection, out, inputs, crs,
                                         resolution)
            elif aoi or start or end or collection:
                raise RasterInputError("--aoi / --start / --end / --collection are for --imagery")
            if not inputs:
                raise RasterInputError(
                    f"no inputs: give at least one of {_file_flags()}, --stack, --imagery")
            if align_to is not None and (crs is not None or resolution is not None):
                raise RasterInputError("give either --align-to or --crs / --resolution")
            grid = OutputGrid.of_raster(align_to) if align_to is not None else None
        except (RasterInputError, ValueError, OSError) as e:
            raise typer.BadParameter(str(e)) from None
        except RuntimeError as e:  # a STAC API / asset server failing, a locked fetch
            console.print(f"[bold red]error:[/bold red] {e}")
            raise typer.Exit(code=2) from None
        net, weights = _load_model(model, random_weights, device, precision)
        try:
            with progress_bar() as bar:
                task = bar.add_task("embedding", total=None)
                result = embed_geotiffs(
                    net, inputs, out, patch_size=patch_size, tile_size=tile_size,
                    overlap=overlap, batch_size=batch_size, device=device, align=align,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                    tags={"weights": weights}, grid=grid, crs=crs, resolution=resolution,
                    input_flags=_input_flags(stack, imagery), max_area_km2=max_area_km2,
                    confirm=yes, report=lambda line: console.print(f"embed: {escape(line)}"),
                )  # fmt: skip
        except (RasterInputError, ValueError, RuntimeError) as e:  # incl. locked, disk full
            console.print(f"[bold red]error:[/bold red] {e}")
            raise typer.Exit(code=2) from None
        _print_embed_summary(result, weights)

    @app.command("demo", help=DEMO_HELP)
    def demo_cmd(
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
        model: Annotated[
            Path | None, typer.Option(help="Checkpoint folder; default random Nano.")
        ] = None,
        size: Annotated[int, typer.Option(min=8, help="Scene side in 10 m pixels.")] = 64,
        timesteps: Annotated[int, typer.Option(min=1, max=12, help="Monthly timesteps.")] = 12,
        seed: Annotated[int, typer.Option(help="Scene seed.")] = 0,
        patch_size: Annotated[int, typer.Option(min=1, max=8, help="Patch size p.")] = 4,
        device: Annotated[str | None, typer.Option(help="torch device.")] = None,
    ) -> None:
        from geolatent.inference.demo import RANDOM_WEIGHTS_NOTE, released_demo_model, run_demo

        _check_device_precision(device)
        if model is None:
            net, weights, why_not = released_demo_model()
            if net is None:
                console.print(
                    f"[bold yellow]No --model given and {why_not}: using {RANDOM_WEIGHTS_NOTE}. "
                    "The pipeline is real; the embeddings of an untrained model carry no learned "
                    "meaning.[/bold yellow]"
                )
        else:
            net, weights = _load_model(model, None, device)
        with progress_bar() as bar:
            task = bar.add_task("embedding", total=None)
            res = run_demo(
                out, net, weights, size=size, timesteps=timesteps, seed=seed,
                patch_size=patch_size, device=device,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
        h, w, t = res.scene_shape
        typer.echo(f"weights:   {res.weights}")
        typer.echo(
            f"scene:     {h} x {w} px at 10 m, {t} monthly timesteps, S2 L2A + S1 "
            f"-> {res.scene_dir}"
        )
        _print_embed_summary(res.embedding, None)
        typer.echo(
            f"preview:   {res.preview_path} (PCA 1-3 as RGB), {res.labels_preview_path} (classes)"
        )
        typer.echo(f"overview:  {res.overview_path} (input true colour | embedding | classes)")
        typer.echo(f"note:      {res.note}")
        typer.echo(f"total:     {res.seconds:.1f} s")


def _imagery_inputs(imagery: str, aoi: Path | None, start: str | None, end: str | None,
                    collections: list[str] | None, out: Path, inputs: dict, crs: str | None,
                    resolution: float | None) -> dict[str, list[RasterInput]]:
    """``--imagery``: fetch the area's monthly composites into ``OUT.work/imagery`` (resumable,
    see ``fetch_composites``) and return them as embed inputs."""
    from geolatent.data.imagery import composite_inputs, imagery_sources
    from geolatent.data.imagery_cli import fetch_with_progress
    from geolatent.data.run import work_dir_for

    if inputs:
        raise RasterInputError(f"give either --imagery or input files ({_file_flags()}, "
                               "--stack), not both")
    if aoi is None or start is None or end is None:
        raise RasterInputError("--imagery needs --aoi FILE, --start DATE and --end DATE")
    srcs = [s for c in (collections or [None])
            for s in imagery_sources(imagery, aoi, start, end, collection=c)]
    result = fetch_with_progress(srcs, aoi, start, end, work_dir_for(out) / "imagery", crs=crs,
                                 resolution=resolution or 10.0, console=console)
    for window, problems in result.report.items():
        for line in problems:
            console.print(f"[yellow]{escape(window)}[/yellow]: {escape(line)}")
    if result.missing_months:
        console.print(f"[dim]no valid pixel (left out): {', '.join(result.missing_months)}[/dim]")
    found = composite_inputs(result)
    if not found:
        raise RasterInputError(f"--imagery {imagery}: no valid pixel over --aoi {aoi} between "
                               f"{start} and {end}")
    return {m: [RasterInput(p, d) for p, d in files] for m, files in found.items()}


def _print_embed_summary(result, weights: str | None) -> None:
    if weights is not None:
        typer.echo(f"weights:   {weights}")
    for name, s in result.inputs.items():
        extra = f", dropped {', '.join(s.bands_dropped)}" if s.bands_dropped else ""
        if s.bandsets_absent:
            extra += f", absent (masked) {' '.join('/'.join(b) for b in s.bandsets_absent)}"
        typer.echo(
            f"input:     {name}: {s.files} file(s), {s.timesteps} timestep(s), "
            f"{len(s.bands_used)} bands{extra}"
        )
    dates = [f"{y:04d}-{m + 1:02d}-{d:02d}" for d, m, y in result.timestamps.tolist()]
    typer.echo(f"dates:     {', '.join(dates)}")
    t = result.transform
    typer.echo(
        f"embedding: {result.height} x {result.width} px x {result.count} bands at "
        f"{abs(t.a):g} m, {result.crs.to_string()}, origin ({t.c:.1f}, {t.f:.1f}) -> {result.path}"
    )
    typer.echo(
        f"tiles:     {result.tiles_embedded}/{result.tiles_total} embedded "
        f"(tile {result.tile_size} px, "
        f"overlap {result.overlap} px, p={result.patch_size}), {len(result.timestamps)} timesteps, "
        f"{', '.join(result.modalities)}, {result.seconds:.1f} s"
    )
