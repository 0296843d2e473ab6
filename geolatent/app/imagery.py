"""Imagery of a project: where it is, fetching it from STAC, and map tiles and pixel values
rendered from COGs with rio-tiler.

A project's imagery folder holds one cloud-optimized GeoTIFF per modality and date,
``<modality>_<YYYY-MM-DD>.tif`` (the built-in sample, uploads) or per month,
``<modality>_<YYYY-MM>.tif`` (the monthly composites of ``geolatent imagery fetch``, which a
``preset`` or ``stac`` project fetches with :func:`fetch_project_imagery`); band descriptions
are the band names. Each date is one step of the time slider. Presets choose three bands and a
display range.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

_FILE = re.compile(r"^(?P<modality>[a-z0-9_]+)_(?P<date>\d{4}-\d{2}(?:-\d{2})?)\.tif$")
IMAGERY_DIR = "imagery"  # inside the project folder: uploads, the sample, fetched composites
FETCHED = ("preset", "stac")  # imagery types fetched by an ``imagery`` job


@dataclass(frozen=True)
class Preset:
    """Three bands of one modality shown as RGB, linearly stretched from ``lo`` to ``hi``."""

    modality: str
    bands: tuple[str, str, str]
    lo: float
    hi: float
    label: str


PRESETS: dict[str, Preset] = {
    "true_color": Preset("sentinel2_l2a", ("B04", "B03", "B02"), 0, 2500,
                         "True colour (B04, B03, B02)"),
    "false_color": Preset("sentinel2_l2a", ("B08", "B04", "B03"), 0, 5000,
                          "False colour (B08, B04, B03)"),
    "sar": Preset("sentinel1", ("vv", "vh", "vv"), -25, 0, "SAR (VV, VH, VV dB)"),
    "sar_vv": Preset("sentinel1", ("vv", "vv", "vv"), -25, 0, "SAR VV (grey, dB)"),
}
IMAGERY_MODALITIES = tuple(sorted({p.modality for p in PRESETS.values()}))


def imagery_dir(project_folder: Path, imagery: dict) -> Path:
    """The folder holding the project's COGs: ``imagery.path`` of a ``local`` project (inside
    the project folder), else ``<project folder>/imagery``."""
    from geolatent.app.uploads import inside

    if imagery.get("type") == "local" and imagery.get("path"):
        return inside(project_folder, project_folder / imagery["path"])
    return project_folder / IMAGERY_DIR


def fetch_sources(project_folder: Path, imagery: dict) -> list:
    """The data-layer source configs of a ``preset`` or ``stac`` project.

    Presets go through :func:`geolatent.data.imagery.imagery_source` (what ``geolatent imagery
    fetch --source`` uses), one source per collection, with the window cache inside the project
    folder; a ``stac`` catalog becomes the data layer's ``stac`` source.

    Raises:
        ValueError: the project's imagery is not fetched from STAC, or its settings are wrong
            (the message names the ``imagery.*`` field).
    """
    from pydantic import TypeAdapter, ValidationError

    from geolatent.app.uploads import inside
    from geolatent.data.config import SourceConfig
    from geolatent.data.imagery import imagery_source

    kind = imagery.get("type")
    if kind == "preset":
        return [imagery_source(imagery["preset"], collection=c, max_cloud=imagery.get("max_cloud"),
                               cache_dir=project_folder / "cache" / "stac",
                               url=imagery.get("url"))
                for c in imagery.get("collections") or [None]]
    if kind != "stac":
        raise ValueError(f"imagery.type {kind!r} is not fetched: only 'preset' and 'stac' are")
    catalog = inside(project_folder, project_folder / imagery["path"])
    if not catalog.is_file():
        raise ValueError(f"imagery.path: no STAC catalog at {imagery['path']} in the project "
                         f"folder ({project_folder}); put the catalog JSON there")
    assets = imagery.get("assets") or None
    spec = {"type": "stac", "name": "catalog", "catalog": str(catalog),
            "modality": imagery.get("modality") or "sentinel2_l2a",
            "collections": imagery.get("collections"), "assets": assets}
    if assets and "scl" in assets:
        spec["cloud_mask"] = {"band": "scl", "kind": "scl"}
    try:
        return [TypeAdapter(SourceConfig).validate_python(spec)]
    except ValidationError as exc:
        detail = "; ".join(e["msg"] for e in exc.errors())
        raise ValueError(f"imagery (stac catalog): {detail}") from None


def fetch_project_imagery(project_folder: Path, imagery: dict, aoi: dict, start: str, end: str,
                          log: Callable[[str], None],
                          progress: Callable[[float], None]) -> dict:
    """Fetch the monthly composites of the project's area and dates into its imagery folder
    with :func:`geolatent.data.imagery.fetch_composites` (the library of ``geolatent imagery
    fetch``: resumable through its work store, a rerun fetches nothing twice).

    Args:
        start, end: the project's date range, both inclusive (``YYYY-MM-DD``).

    Returns:
        The job result: files written, months without data and the per-tile problems.

    Raises:
        JobError: the project's imagery settings cannot be used (the message says which).
    """
    from datetime import date, timedelta

    from geolatent.app.runs import JobError
    from geolatent.data.imagery import fetch_composites
    from geolatent.data.run import OutputConflictError

    try:
        sources = fetch_sources(project_folder, imagery)
    except ValueError as exc:  # the project's settings: the job fails with the message only
        raise JobError(str(exc)) from exc
    stop = (date.fromisoformat(end) + timedelta(days=1)).isoformat()  # fetch's end is exclusive
    log(f"[imagery] fetching {', '.join(getattr(s, 'name', '?') for s in sources)} "
        f"{start} .. {end}")

    def on_progress(p: dict) -> None:  # once per tile; a cancelled job stops here
        progress(p["windows_done"] / max(p["windows"], 1))
        log(f"[imagery] tile {p['windows_done']}/{p['windows']}: {p['scenes']} scene reads, "
            f"{p['bytes'] / 1e6:.1f} MB fetched")

    try:
        res = fetch_composites(sources, aoi, start, stop, project_folder / IMAGERY_DIR,
                               progress=on_progress)
    except OutputConflictError as exc:  # uploads or the sample: never mixed with a fetch
        raise JobError(f"the project's imagery folder holds images that were not fetched "
                       f"(uploads or the sample), which a fetch never touches: create a new "
                       f"project for STAC imagery ({exc})") from exc
    problems = {w: p for w, p in res.report.items() if p}
    for w, lines in problems.items():
        for line in lines:
            log(f"[imagery] {w}: {line}")
    log(f"[imagery] wrote {len(res.files)} composites; no data: "
        f"{', '.join(res.missing_months) or 'none'}; {res.fetched_windows} asset windows "
        f"fetched, {res.cached_windows} from the cache")
    return {"files": [Path(f).name for f in res.files], "missing": res.missing_months,
            "problems": problems, "scenes_read": res.scenes_read,
            "fetched_bytes": res.fetched_bytes}


def list_scenes(folder: Path) -> dict[str, list[str]]:
    """``{modality: [dates, sorted]}`` of the COGs in ``folder``."""
    scenes: dict[str, list[str]] = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = _FILE.match(p.name)
            if m:
                scenes.setdefault(m["modality"], []).append(m["date"])
    return {k: sorted(v) for k, v in scenes.items()}


def band_names(path: Path) -> list[str]:
    import rasterio

    with rasterio.open(path) as src:
        return [(d or "").lower() for d in src.descriptions]


def available_presets(folder: Path, scenes: dict[str, list[str]]) -> dict[str, str]:
    """The presets whose bands all exist in the modality's first image."""
    out = {}
    for key, p in PRESETS.items():
        dates = scenes.get(p.modality)
        if dates and all(b.lower() in band_names(scene_path(folder, p.modality, dates[0]))
                         for b in p.bands):
            out[key] = p.label
    return out


def add_image(source: Path, dest: Path, bands: list[str] | None, modality: str) -> None:
    """Write an uploaded GeoTIFF as a COG at ``dest`` (atomically, never over an existing
    file), with band descriptions = band names (from the file, ``bands``, or the registry
    order for a file with the modality's full band count).

    Raises ValueError saying what to change; FileExistsError if ``dest`` appeared meanwhile."""
    import os
    import tempfile

    import rasterio
    import rasterio.shutil
    from rasterio.errors import RasterioIOError

    from geolatent.modalities import MODALITIES

    try:
        src = rasterio.open(source)
    except RasterioIOError as exc:
        raise ValueError(f"{source.name} is not a GeoTIFF: {exc}") from exc
    with src:
        if src.crs is None or src.transform.is_identity:
            raise ValueError(f"{source.name} has no CRS or geotransform: georeference it first")
        names = list(src.descriptions)
        if bands:
            if len(bands) != src.count:
                raise ValueError(f"bands names {len(bands)} band(s); the file has {src.count}")
            names = bands
        elif not all(names):
            registry = MODALITIES[modality].bands
            if src.count != len(registry):
                raise ValueError(f"{source.name} has {src.count} unnamed band(s): name them "
                                 f"with the form field 'bands' (e.g. {','.join(registry[:2])})")
            names = list(registry)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".image-", suffix=".tif")
        os.close(fd)
        named = Path(tmp_name + ".named.tif")
        try:
            with rasterio.open(named, "w", **(src.profile | {"driver": "GTiff"})) as dst:
                dst.write(src.read())
                for i, n in enumerate(names, start=1):
                    dst.set_band_description(i, n)
                dst.update_tags(**src.tags())
            rasterio.shutil.copy(named, tmp_name, driver="COG", compress="DEFLATE",
                                 blocksize=256, overview_resampling="average")
            if dest.exists():
                raise FileExistsError(dest.name)
            os.replace(tmp_name, dest)
        finally:
            named.unlink(missing_ok=True)
            Path(tmp_name).unlink(missing_ok=True)


def scene_path(folder: Path, modality: str, date: str) -> Path:
    path = folder / f"{modality}_{date}.tif"
    if not _FILE.match(path.name) or not path.exists():
        raise FileNotFoundError(f"no {modality} image for {date}")
    return path


@lru_cache(maxsize=256)
def _band_indexes(path: str, mtime: float, names: tuple[str, ...]) -> tuple[int, ...]:
    import rasterio

    with rasterio.open(path) as src:
        desc = [(d or "").lower() for d in src.descriptions]
    try:
        return tuple(desc.index(n.lower()) + 1 for n in names)
    except ValueError as exc:
        raise KeyError(f"{Path(path).name} lacks one of the bands {names}") from exc


def render_tile(path: Path, preset: Preset, z: int, x: int, y: int, size: int = 256) -> bytes:
    """A PNG tile (``size`` px, Web Mercator XYZ); pixels outside the image are transparent.

    Raises rio_tiler's ``TileOutsideBounds`` when the tile does not touch the image."""
    from rio_tiler.io import Reader

    idx = _band_indexes(str(path), path.stat().st_mtime, preset.bands)
    with Reader(str(path)) as src:
        img = src.tile(x, y, z, tilesize=size, indexes=idx)
    img.rescale(in_range=((preset.lo, preset.hi),) * 3)
    return img.render(img_format="PNG")


def point_values(path: Path, lon: float, lat: float) -> dict[str, float | None]:
    """Every band's value at a lon/lat point (None where nodata)."""
    from rio_tiler.io import Reader

    with Reader(str(path)) as src:
        pt = src.point(lon, lat)
        names = [d or f"b{i + 1}" for i, d in enumerate(src.dataset.descriptions)]
    values = np.ma.masked_invalid(np.ma.asarray(pt.array, dtype="float64"))
    return {n: (None if values.mask.flat[i] else float(values.flat[i]))
            for i, n in enumerate(names)}
