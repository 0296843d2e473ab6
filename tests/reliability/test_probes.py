"""The reliability campaign, compact: bad inputs and bad configs as a user gives them, each
with the outcome it must keep (a clear error naming what to change, the exit code, no file of
the user's lost). One row per probe in ``PROBES``, each tagged with the numbered findings of
issue #12 it reproduces; ``test_probe`` runs each row and records its outcome, which
``benchmarks/reliability_campaign.py`` counts (the campaign's figures).

Every input is real: GeoTIFFs with CRS and transform, GeoJSON / YAML files, the real CLI, a
real read-only file system (the ``read_only_dir`` fixture), real file locks.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import yaml
from typer.testing import CliRunner

from geolatent.cli import app
from geolatent.data.run import OutputLock
from geolatent.data.synthetic import make_sample_scene
from geolatent.data.window import WGS84, reproject_geometry
from geolatent.modalities import MODALITIES

S2 = "sentinel2_l2a"
S2_BANDS = list(MODALITIES[S2].bands)
runner = CliRunner()

# The outcomes the campaign counts (the table); the first two are the wanted ones.
CLEAR_ERROR, CLEAR_WARNING = "clear error", "clear warning (the run goes on)"
SILENT, TRACEBACK, UNCLEAR = "silent wrong result", "raw traceback", "unclear error"
DATA_LOSS, HANG = "data loss", "hang"
OUTCOMES = (CLEAR_ERROR, CLEAR_WARNING, SILENT, TRACEBACK, UNCLEAR, DATA_LOSS, HANG)
HANG_S = 120  # a probe still running after this long counts as a hang (a user gives up)


@dataclass
class Probe:
    """One probe: ``make(tmp)`` builds the inputs and returns the command line (a list of
    ``geolatent`` arguments) or, for the Python API, a call taking no argument.

    Attributes:
        name: what is wrong, as a user would say it.
        items: the numbered findings of issue #12 (1-12) the probe reproduces.
        make: writes the inputs under ``tmp`` and returns the command line or the call.
        exit_code: the expected exit status (2: bad command line / config, 1: bad data; 0
            where the run goes on after a warning). A Python call: 1 = raises a ``ValueError``
            (or subclass), 0 = returns.
        says: substrings the output (or the error's message) must contain: the option, file or
            value to change.
        keeps: files (relative to ``tmp``) that must be unchanged afterwards.
        then: checks the result afterwards (an output that must be finite, temporaries that
            must be gone); an ``AssertionError`` makes the outcome a silent wrong result.
        disk: ``"read_only"``: ``tmp / "read_only"`` is a real read-only file system during the
            probe; ``"full"``: ``tmp / "small_disk"`` is a real 16 MiB file system, full.
        slow: takes 5 s or more (a real training step): marked ``slow``.
    """

    name: str
    items: tuple[int, ...]
    make: Callable[[Path], list[str] | Callable[[], object]]
    exit_code: int
    says: tuple[str, ...]
    keeps: tuple[str, ...] = field(default=())
    then: Callable[[Path], None] | None = None
    disk: str = ""
    slow: bool = False


@dataclass
class Outcome:
    """What a probe did: one of :data:`OUTCOMES` and the evidence (output or exception)."""

    kind: str
    detail: str


class ProbeHang(BaseException):
    """Raised by the alarm in a probe that runs past :data:`HANG_S` (a ``BaseException``, so the
    CLI runner does not swallow it)."""


_HELD: list[OutputLock] = []  # locks a probe holds as "another run" until the probe ends


# -- inputs -------------------------------------------------------------------------------------
def _scene_files(folder: Path, *, transform_values: Callable[[np.ndarray], np.ndarray] | None
                 = None, tags: dict | None = None, descriptions: list[str] | None = None) -> dict:
    """Two monthly Sentinel-2 GeoTIFFs (float32 DN) of a generated 48 x 48 px scene; returns
    the file source declaring them and the scene's lon/lat box."""
    scene = make_sample_scene(48, 48, timesteps=2, seed=0, epsg=32633,
                              origin=(400_000.0, 5_100_000.0))
    folder.mkdir(parents=True, exist_ok=True)
    s2 = scene.modalities[S2].astype(np.float32)
    for t, date in enumerate(scene.dates):
        data = np.moveaxis(s2[:, :, t, :], -1, 0)
        if transform_values is not None:
            data = transform_values(data)
        with rasterio.open(folder / f"s2_{date.isoformat()}.tif", "w", driver="GTiff",
                           height=48, width=48, count=len(S2_BANDS), dtype="float32",
                           crs=scene.crs, transform=scene.transform) as dst:
            dst.write(data)
            for i, band in enumerate(descriptions or S2_BANDS, start=1):
                dst.set_band_description(i, band)
            if tags:
                dst.update_tags(**tags)
    t = scene.transform
    poly = shapely.box(*(t @ (4, 44)), *(t @ (44, 4)))
    return dict(source=dict(name="my_s2", type="files", modality=S2,
                            paths=[str(folder / "s2_*.tif")], bands=S2_BANDS,
                            date_pattern=r"s2_(\d{4}-\d{2}-\d{2})\.tif", date_format="%Y-%m-%d"),
                box=reproject_geometry(poly, scene.crs.to_string(), WGS84),
                start=scene.dates[0].isoformat())


def _labels(path: Path, box: shapely.Polygon, n: int = 4) -> Path:
    """``n`` labelled squares inside ``box`` (lon/lat GeoJSON), classes alternating."""
    x0, y0, x1, y1 = box.bounds
    dx, dy = (x1 - x0) / n, (y1 - y0) / n
    feats = [{"type": "Feature", "properties": {"label": ["crop", "forest"][i % 2]},
              "geometry": shapely.geometry.mapping(shapely.box(x0 + i * dx, y0 + i * dy,
                                                               x0 + (i + 1) * dx,
                                                               y0 + (i + 1) * dy))}
             for i in range(n)]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def _finetune(tmp: Path, *, scene: dict | None = None, labels: Path | None = None,
              prepare_only: bool = False, **changes) -> list[str]:
    """A working fine-tuning config with ``changes`` applied (``a.b`` keys set nested)."""
    scene = scene or _scene_files(tmp / "s2")
    labels = labels or _labels(tmp / "labels.geojson", scene["box"])
    cfg = dict(task="segmentation", encoder="nano", labels=dict(path=str(labels), field="label"),
               sources=[scene["source"]],
               windows=dict(size_px=16, start="2024-01-01", end="2024-03-01"),
               split=dict(cell_size_m=160, train=0.5, val=0.5, test=0.0),
               train=dict(epochs=1, batch_size=2, patch_size=8), output=str(tmp / "model"))
    for key, value in changes.items():
        *parents, last = key.split("__")
        node = cfg
        for p in parents:
            node = node[p]
        node[last] = value
    path = tmp / "ft.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ["finetune", "--config", str(path)] + (["--prepare-only"] if prepare_only else [])


def _data_build(tmp: Path, *, scene: dict | None = None, **changes) -> list[str]:
    """A working ``data build`` config (the scene's area, its two months) with ``changes``."""
    scene = scene or _scene_files(tmp / "s2")
    cfg = dict(output_dir=str(tmp / "samples"), area=dict(bbox=list(scene["box"].bounds)),
               start="2024-01-01", end="2024-03-01", tile_size=32, sample_size=32,
               sources=[scene["source"]])
    cfg.update(changes)
    path = tmp / "data.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ["data", "build", "--config", str(path), "--executor", "serial"]


def _pretrain_on_empty_folder(tmp: Path) -> list[str]:
    """``pretrain`` on a sample folder that holds no sample file."""
    (tmp / "no_samples").mkdir()
    path = _write(tmp / "pt.yaml", yaml.safe_dump(dict(
        model=dict(size="nano"), data=dict(root=str(tmp / "no_samples"), num_workers=0),
        schedule=dict(max_steps=1, warmup_steps=0),
        train=dict(global_batch_size=2, micro_batch_size=2, device="cpu"))))
    return ["pretrain", "--config", str(path), "--run-dir", str(tmp / "run")]


def _model_folder(tmp: Path) -> Path:
    """A folder for --model: the probes below fail before any model is read."""
    (tmp / "model").mkdir(exist_ok=True)
    return tmp / "model"


def _predict(tmp: Path, aoi: Path | None = None, **opts) -> list[str]:
    if aoi is None:
        aoi = tmp / "aoi.geojson"
        aoi.write_text(json.dumps(shapely.geometry.mapping(shapely.box(14.5, 45.8, 14.6, 45.9))))
    args = {"--model": str(_model_folder(tmp)), "--aoi": str(aoi), "--start": "2024-01-01",
            "--end": "2024-03-01", "-o": str(tmp / "map.tif")} | opts
    return ["predict", *[x for kv in args.items() for x in kv]]


def _with_source(tmp: Path, **changes) -> dict:
    """The scene with its source declaration changed."""
    scene = _scene_files(tmp / "s2")
    return dict(scene, source=dict(scene["source"], **changes))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _geojson(path: Path, obj: dict) -> Path:
    return _write(path, json.dumps(obj))


def _embed(tmp: Path, *, transform_values: Callable[[np.ndarray], np.ndarray] | None = None,
           out: str | None = None, opts: tuple[str, ...] = ()) -> list[str]:
    """``embed`` of the first scene file with a random-weight Nano (a demo model: fast)."""
    _scene_files(tmp / "s2", transform_values=transform_values)
    first = sorted((tmp / "s2").glob("s2_*.tif"))[0]
    return ["embed", "--s2", str(first), "--random-weights", "nano", "--tile-size", "48",
            "-o", out or str(tmp / "emb.tif"), *opts]


def _embedding_is_finite(tmp: Path) -> None:
    with rasterio.open(tmp / "emb.tif") as src:
        e = src.read()
    assert np.isfinite(e).all(), f"{np.isnan(e).mean():.0%} of the embedding is NaN"


def _platform():
    """The platform tests' helpers (scenes as GeoTIFFs, model folders): a module beside
    ``tests/platform``'s tests, not a package (``platform`` would shadow the stdlib)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
    import platform_fixtures

    return platform_fixtures


def _predict_with_model(tmp: Path, *, box: tuple[float, float, float, float] | None = None,
                        out: str | None = None) -> list[str]:
    """``predict`` with a real model folder (random Nano and head) over its scene, or ``box``
    (lon/lat)."""
    pf = _platform()
    scene = pf.write_scene(tmp / "scene", height=32, width=32)
    pf.make_bundle(tmp / "m", "segmentation", [pf.s2_source(tmp / "scene")])
    area = shapely.box(*box) if box else pf.scene_box(scene, 2)
    aoi = _geojson(tmp / "aoi.geojson", shapely.geometry.mapping(area))
    return ["predict", "--model", str(tmp / "m"), "--aoi", str(aoi), "--start", "2024-01-01",
            "--end", "2024-02-28", "-o", out or str(tmp / "map.tif")]


def _killed_finetune_folder(tmp: Path) -> list[str]:
    """What a fine-tuning killed after its first best epoch leaves (the best model so far in
    OUTPUT/.work, nothing at OUTPUT), given to ``predict``."""
    from geolatent.platform.bundle import unfinished_model_dir

    args = _predict_with_model(tmp)
    (tmp / "m").rename(tmp / "best")
    unfinished_model_dir(tmp / "m").parent.mkdir(parents=True)
    (tmp / "best").rename(unfinished_model_dir(tmp / "m"))
    return args


def _user_folder(tmp: Path) -> str:
    (tmp / "mine").mkdir()
    _write(tmp / "mine" / "notes.txt", "my notes")
    return str(tmp / "mine")


def _pretrain(tmp: Path, root: Path | None = None, run_dir: Path | None = None) -> list[str]:
    """``pretrain`` for one step on the sample files under ``root`` (default: the built-in
    scene written by the trainer)."""
    data = dict(root=str(root), num_workers=0) if root else dict(
        builtin=dict(num_samples=2, size_px=16, timesteps=2), num_workers=0)
    path = _write(tmp / "pt.yaml", yaml.safe_dump(dict(
        model=dict(size="nano"), data=data, schedule=dict(max_steps=1, warmup_steps=0),
        train=dict(global_batch_size=2, micro_batch_size=2, device="cpu"),
        logging=dict(progress=False, tensorboard=False))))
    return ["pretrain", "--config", str(path), "--run-dir", str(run_dir or tmp / "run")]


def _hold_lock(output: Path, what: str) -> Path:
    """Hold ``output``'s run lock as another run would (released when the probe ends)."""
    lock = OutputLock(output, what)
    lock.__enter__()
    _HELD.append(lock)
    return output


def _hold(argv: list[str], output: Path, what: str) -> list[str]:
    _hold_lock(output, what)
    return argv


def _weights_are_finite(tmp: Path) -> None:
    from safetensors.numpy import load_file

    weights = load_file(tmp / "model" / "weights.safetensors")
    bad = [k for k, v in weights.items() if not np.isfinite(v).all()]
    assert not bad, f"non-finite weights: {bad[:3]}"


def _leftover(argv: list[str], temp: Path) -> list[str]:
    """``temp``: what a run killed while writing its output left beside it."""
    _write(temp, "half written")
    return argv


def _gone(path: Path) -> None:
    assert not path.exists(), f"{path.name} left behind"


def _killed_build_leftovers(tmp: Path) -> list[str]:
    """A sample folder holding the temporaries of a build killed mid-write."""
    argv = _data_build(tmp)
    for leftover in ("samples/.w0.h5.tmp-4242-deadbeef", ".manifest.jsonl.tmp-4242-cafe0000"):
        (tmp / "samples" / leftover).parent.mkdir(parents=True, exist_ok=True)
        _write(tmp / "samples" / leftover, "half written")
    return argv


def _no_temporaries(tmp: Path) -> None:
    left = [p.name for p in (tmp / "samples").rglob("*") if ".tmp-" in p.name]
    assert not left, f"temporaries left: {left}"


def _embed_call(dates: list[str]) -> Callable[[], object]:
    """``model.embed`` in Python on a small S2 series with ``dates``."""
    import geolatent

    model = geolatent.build_model("nano")
    x = np.full((1, 8, 8, len(dates), len(S2_BANDS)), 1200.0, np.float32)
    return lambda: model.embed({S2: x}, dates, patch_size=4)


def _no_cuda(argv: list[str]) -> list[str]:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is valid here")
    return argv


def _with_zero_byte_scene(tmp: Path) -> dict:
    """The scene plus a zero-byte file its glob and date pattern match."""
    scene = _scene_files(tmp / "s2")
    _write(tmp / "s2" / "s2_2024-02-20.tif", "")
    return scene


def _aoi(tmp: Path) -> Path:
    return _geojson(tmp / "aoi.geojson",
                    shapely.geometry.mapping(_scene_files(tmp / "s2")["box"]))


def _archive_read_only(tmp: Path) -> list[str]:
    from shared_data import FIXTURE_DIR

    if not (FIXTURE_DIR / "weights.pth").exists():
        pytest.skip(f"reference fixtures not found at {FIXTURE_DIR} (set GEOLATENT_SHARED)")
    _data_build(tmp)  # its data.yaml holds the `sources:` list
    return ["archive", "build", "--model", str(FIXTURE_DIR), "--aoi", str(_aoi(tmp)),
            "--start", "2024-01-01", "--end", "2024-03-01", "--config", str(tmp / "data.yaml"),
            "--out", str(tmp / "read_only" / "region.zarr")]


def _old_samples(tmp: Path, change: Callable[[np.ndarray], np.ndarray]) -> Path:
    """Sample files as an older build (or a hand-written script) left them: the built-in
    scene's files with their Sentinel-2 values rewritten by ``change``."""
    import h5py

    from geolatent.pretrain.samples import write_builtin_samples

    root = tmp / "old_samples"
    for path in write_builtin_samples(root, 2, 16, 2):
        with h5py.File(path, "r+") as f:
            f[S2][...] = change(f[S2][...])
    return root


def _full_disk(tmp: Path) -> Path:
    """A folder path on the full 16 MiB file system at ``tmp / "small_disk"``."""
    return tmp / "small_disk" / "out"


# -- the table ----------------------------------------------------------------------------------
PROBES: list[Probe] = [
    # predict: options (#12 item 11)
    Probe("predict --batch-size 0", (11,), lambda t: _predict(t, **{"--batch-size": "0"}), 2,
          ("--batch-size",)),
    Probe("predict --start 2015-13-01", (11,),
          lambda t: _predict(t, **{"--start": "2015-13-01"}), 2, ("--start", "2015-13-01")),
    Probe("predict --end before --start", (11,),
          lambda t: _predict(t, **{"--end": "2023-01-01"}), 2, ("--end", "before --start")),
    Probe("predict -o onto a folder", (8,),
          lambda t: _predict(t, **{"-o": str(_model_folder(t))}), 2, ("is a folder",)),
    # predict: areas (#11 item 3, #12 items 6 and 11)
    Probe("garbage AOI file", (11,),
          lambda t: _predict(t, _write(t / "aoi.geojson", "not json{")), 1,
          ("aoi.geojson", "not readable GeoJSON"), keeps=("aoi.geojson",)),
    Probe("garbage AOI (not a vector format)", (11,), lambda t: _predict(t, _write(t / "aoi.gpkg",
                                                                            "garbage")), 1,
          ("aoi.gpkg", "not a readable vector file")),
    Probe("empty AOI", (6,), lambda t: _predict(t, _geojson(t / "aoi.geojson", {
        "type": "FeatureCollection", "features": []})), 1, ("holds no geometry",)),
    Probe("AOI longitude 184", (6,), lambda t: _predict(t, _geojson(t / "aoi.geojson", {
        "type": "Polygon", "coordinates": [[[184, 0], [185, 0], [185, 1], [184, 1], [184, 0]]]})),
        1, ("longitude must be in -180..180",)),
    Probe("AOI in metres read as lon/lat", (6,), lambda t: _predict(t, _geojson(t / "aoi.geojson", {
        "type": "Polygon", "coordinates": [[[465181, 5079244], [466180, 5079244],
                                            [466180, 5080254], [465181, 5079244]]]})),
        1, ("projected coordinates", "--aoi-crs")),
    Probe("--aoi-crs contradicting the file's crs", (6,), lambda t: _predict(
        t, _geojson(t / "aoi.geojson", {
            "type": "Polygon", "crs": {"type": "name", "properties": {"name": "EPSG:32633"}},
            "coordinates": [[[465181, 5079244], [466180, 5079244], [466180, 5080254],
                             [465181, 5079244]]]}), **{"--aoi-crs": "EPSG:32632"}),
        1, ("declares CRS", "EPSG:32632")),
    # finetune: config values (#12 item 11)
    Probe("lr -1", (11,), lambda t: _finetune(t, train__lr=-1), 2, ("lr",)),
    Probe("split fractions 0.9/0.9/0.9", (11,), lambda t: _finetune(
        t, split__train=0.9, split__val=0.9, split__test=0.9), 2, ("add up to 1",)),
    Probe("resolution_m -10", (6,), lambda t: _finetune(t, windows__resolution_m=-10), 2,
          ("resolution_m",)),
    Probe("windows.end before windows.start", (11,), lambda t: _finetune(
        t, windows__start="2024-03-01", windows__end="2024-01-01"), 2, ("windows.end",)),
    Probe("invalid date_pattern regex", (8,), lambda t: _finetune(
        t, scene=_with_source(t, date_pattern="s2_((\\d+.tif")), 2,
        ("date_pattern", "not a valid regular expression")),
    # finetune: labels (#11 item 2, #12 item 11)
    Probe("empty labels file", (11,), lambda t: _finetune(t, labels=_geojson(
        t / "labels.geojson", {"type": "FeatureCollection", "features": []})), 1,
        ("holds no labels",), keeps=("labels.geojson",)),
    Probe("time_column that does not exist", (11,), lambda t: _finetune(
        t, labels__time_column="acquired"), 1, ("time column 'acquired' not found",)),
    # finetune: imagery (#12 items 6, 3, 7; #11 item 5)
    Probe("source glob matching nothing", (6,), lambda t: _finetune(
        t, scene=_with_source(t, paths=[str(t / "none_*.tif")])), 1,
        ("my_s2", "matches no file")),
    Probe("reflectance 0-1 given as DN", (7,), lambda t: _finetune(
        t, scene=_scene_files(t / "s2", transform_values=lambda a: a / 10000),
        prepare_only=True), 1, ("reflectance in 0-1", "scale: 10000", "my_s2")),
    Probe("one inf pixel", (3,), lambda t: _finetune(
        t, scene=_scene_files(t / "s2", transform_values=_one_inf), prepare_only=True), 0,
        ("infinite values", "treated as missing data")),
    Probe("Sentinel-2 L1C file given as L2A", (7,), lambda t: _finetune(
        t, scene=_scene_files(t / "s2", tags={"PRODUCT_TYPE": "S2MSI1C"}), prepare_only=True), 1,
        ("Level-1C", "my_s2")),
    # data build (#12 items 6, 7, 8)
    Probe("data build: tile_size 0", (8,), lambda t: _data_build(t, tile_size=0), 2,
          ("tile_size",)),
    Probe("data build: sample_size 0", (8,), lambda t: _data_build(t, sample_size=0), 2,
          ("sample_size",)),
    Probe("data build: resolution_m -10", (6,), lambda t: _data_build(t, resolution_m=-10), 2,
          ("resolution_m",)),
    Probe("data build: bbox in metres", (6,), lambda t: _data_build(
        t, area=dict(bbox=[465181, 5079244, 466180, 5080254])), 2, ("not a lon/lat box",)),
    Probe("data build: invalid date_pattern", (8,), lambda t: _data_build(
        t, scene=_with_source(t, date_pattern="(((")), 2,
        ("date_pattern", "not a valid regular expression")),
    Probe("data build: reflectance 0-1 written as samples", (7,), lambda t: _data_build(
        t, scene=_scene_files(t / "s2", transform_values=lambda a: a / 10000)), 1,
        ("reflectance in 0-1", "scale: 10000` on source 'my_s2'")),
    Probe("data build: a band subset (builds; the rest filled by the missing-band rule)", (7,),
          lambda t: _data_build(t, scene=_with_source(t, bands=S2_BANDS[:3])), 0,
          ("note:", "are filled by the model version's missing-band rule")),
    Probe("finetune: a bandset all NaN in the files (warned)", (3,), lambda t: _finetune(
        t, scene=_scene_files(t / "s2", transform_values=_nan_b01_b09), prepare_only=True), 0,
        ("warning:", "bandset ['B01', 'B09'] has no valid value in any window")),
    Probe("finetune: a band subset (the rest filled by the missing-band rule)", (7,),
          lambda t: _finetune(t, scene=_with_source(t, bands=S2_BANDS[:3]), prepare_only=True), 0,
          ("note:", "are filled by the model version's missing-band rule")),
    Probe("data build: output_dir an existing file", (8,), lambda t: _data_build(
        t, output_dir=str(_write(t / "notes.txt", "my notes"))), 2,
        ("is an existing file",), keeps=("notes.txt",)),
    Probe("pretrain: no usable samples", (8,), _pretrain_on_empty_folder, 1,
          ("no usable sample",)),
    Probe("band descriptions contradict bands:", (7,), lambda t: _finetune(
        t, scene=_scene_files(t / "s2", descriptions=[S2_BANDS[1], S2_BANDS[0], *S2_BANDS[2:]]),
        prepare_only=True), 1, ("described as B03 but given as B02", "`bands:`")),
    # outputs never destroy the user's files (#12 items 1, 2)
    Probe("finetune output: a folder of the user's files", (1,), lambda t: _finetune(
        t, output=_user_folder(t)), 1, ("holds other files", "choose a new folder"),
        keeps=("mine/notes.txt",)),
    Probe("finetune output: an existing file", (1,), lambda t: _finetune(
        t, output=str(_write(t / "notes.txt", "my notes"))), 1, ("is an existing file",),
        keeps=("notes.txt",)),
    Probe("embed -o onto its own input", (2,), lambda t: _embed(
        t, out=str(t / "s2" / "s2_2024-01-15.tif")), 2, ("is also an input",),
        keeps=("s2/s2_2024-01-15.tif",)),
    Probe("predict -o onto a source scene", (2,), lambda t: _predict_with_model(
        t, out=str(t / "scene" / "sentinel2_l2a_2024-01-15.tif")), 1, ("is also an input",),
        keeps=("scene/sentinel2_l2a_2024-01-15.tif",)),
    # non-finite and implausible values (#12 items 3, 7)
    Probe("embed: one inf pixel (masked, the rest of the map intact)", (3,), lambda t: _embed(
        t, transform_values=_one_inf), 0, ("infinite input values were treated as missing",),
        then=_embedding_is_finite),
    Probe("embed: negative DN", (7,), lambda t: _embed(t, transform_values=lambda a: -a), 2,
          ("negative values", "--s2")),
    Probe("embed: DN x 100", (7,), lambda t: _embed(t, transform_values=lambda a: a * 100), 2,
          ("outside 0..25000", "--s2")),
    # unreadable scenes, unfinished models (#12 items 4, 5)
    Probe("data build: a zero-byte scene file", (4,), lambda t: _data_build(
        t, scene=_with_zero_byte_scene(t)), 2, ("s2_2024-02-20.tif",)),
    Probe("predict with what a killed finetune left", (5,), _killed_finetune_folder, 1,
          ("not a fine-tuned model folder", "did not finish")),
    # read-only outputs, devices (#12 item 8): one line naming the path and what to change
    Probe("embed -o on a read-only file system", (8,), lambda t: _embed(
        t, out=str(t / "read_only" / "emb.tif")), 2, ("read-only file system", "--out"),
        disk="read_only"),
    Probe("data build output_dir on a read-only file system", (8,), lambda t: _data_build(
        t, output_dir=str(t / "read_only")), 2, ("read-only file system", "output_dir"),
        disk="read_only"),
    Probe("pretrain --run-dir on a read-only file system", (8,), lambda t: _pretrain(
        t, run_dir=t / "read_only" / "run"), 1, ("read-only file system", "--run-dir"),
        disk="read_only"),
    Probe("finetune output: on a read-only file system", (8,), lambda t: _finetune(
        t, output=str(t / "read_only" / "model")), 1, ("read-only file system", "output:"),
        disk="read_only"),
    Probe("predict -o on a read-only file system", (8,), lambda t: _predict(
        t, **{"-o": str(t / "read_only" / "map.tif")}), 2, ("read-only file system", "--out"),
        disk="read_only"),
    Probe("archive build --out on a read-only file system", (8,), _archive_read_only, 2,
          ("read-only file system", "--out"), disk="read_only"),
    Probe("imagery fetch --out on a read-only file system", (8,), lambda t: [
        "imagery", "fetch", "--aoi", str(_aoi(t)), "--start", "2024-01-01", "--end",
        "2024-03-01", "--source", "http://127.0.0.1:9/stac", "--collection", "sentinel-2-l2a",
        "--modality", S2, "--out", str(t / "read_only" / "imagery")], 1,
        ("read-only file system", "--out"), disk="read_only"),
    Probe("embed --device cuda without CUDA", (8,), lambda t: _no_cuda(_embed(
        t, opts=("--device", "cuda"))), 2, ("--device",)),
    # area size (#12 item 9)
    Probe("predict over 20 x 20 degrees", (9,), lambda t: _predict_with_model(
        t, box=(5.0, 40.0, 25.0, 60.0)), 1, ("--yes", "--max-area-km2")),
    # the Python API (#12 item 10)
    Probe("Python: timestamps ['2015-13-45', ...]", (10,), lambda t: _embed_call(
        ["2015-13-45", "2016-01-01"]), 1, ("'2015-13-45' is not a valid date",)),
    Probe("Python: unsorted timestamps", (10,), lambda t: _embed_call(
        ["2024-07-02", "2024-03-15"]), 1, ("unsorted dates",)),
    Probe("Python: duplicate timestamps", (10,), lambda t: _embed_call(
        ["2024-03-15", "2024-03-15"]), 1, ("duplicate dates",)),
    # concurrency and leftovers (#12 item 12)
    Probe("data build while another build runs on the output", (12,), lambda t: _data_build(
        t, output_dir=str(_hold_lock(t / "samples", "data build"))), 2,
        ("already running (pid",)),
    Probe("data build over a killed build's temporaries", (12,), _killed_build_leftovers, 0,
          ("built",), then=_no_temporaries),
    # pretraining data loading re-checks units per sample file (#12 items 3, 7)
    Probe("pretrain on samples written with reflectance 0-1", (7,), lambda t: _pretrain(
        t, root=_old_samples(t, lambda a: a / 10000)), 1,
        ("builtin_00000.h5 (sentinel2_l2a)", "reflectance in 0-1", "geolatent data build")),
    Probe("pretrain on a sample holding inf (missing data, counted)", (3,), lambda t: _pretrain(
        t, root=_old_samples(t, _one_inf_hwtc)), 0,
        ("infinite values", "treated as missing data"), slow=True),
    # a full disk (#12 item 8): one line naming the path and the free space, no traceback
    Probe("embed -o on a full disk", (8,), lambda t: _embed(
        t, out=str(_full_disk(t) / "emb.tif")), 2, ("MiB are free", "small_disk"), disk="full"),
    Probe("data build output_dir on a full disk", (8,), lambda t: _data_build(
        t, output_dir=str(_full_disk(t))), 2, ("MiB free", "small_disk"), disk="full"),
    Probe("pretrain --run-dir on a full disk", (8,), lambda t: _pretrain(
        t, run_dir=_full_disk(t)), 1, ("MiB free", "small_disk"), disk="full"),
    Probe("finetune --prepare-only with output: on a full disk", (8,), lambda t: _finetune(
        t, output=str(_full_disk(t) / "model"), prepare_only=True), 1,
        ("MiB free", "small_disk"), disk="full"),
    # --device cuda without CUDA (#12 item 8)
    Probe("pretrain train.device=cuda without CUDA", (8,), lambda t: _no_cuda(
        [*_pretrain(t), "train.device=cuda"]), 2, ("train.device",)),
    Probe("finetune --device cuda without CUDA", (8,), lambda t: _no_cuda(
        [*_finetune(t), "--device", "cuda"]), 2, ("--device",)),
    Probe("predict --device cuda without CUDA", (8,), lambda t: _no_cuda(
        _predict(t, **{"--device": "cuda"})), 2, ("--device",)),
    # one run per output (#12 item 12)
    Probe("predict while another predict writes the same map", (12,), lambda t: _hold(
        _predict_with_model(t), t / "map.tif", "predict"), 1, ("already running (pid",)),
    Probe("embed while another embed writes the same output", (12,), lambda t: _hold(
        _embed(t), t / "emb.tif", "embed"), 2, ("already running (pid",)),
    Probe("predict over a killed predict's half-written map", (12,), lambda t: _leftover(
        _predict_with_model(t), t / ".map.tif.tmp-4242-deadbeef"), 0, ("map.tif",),
        then=lambda t: _gone(t / ".map.tif.tmp-4242-deadbeef")),
    Probe("embed over a killed embed's half-written output", (12,), lambda t: _leftover(
        _embed(t), t / ".emb.tif.tmp-4242-deadbeef"), 0, ("embedded",),
        then=lambda t: _gone(t / ".emb.tif.tmp-4242-deadbeef")),
    Probe("predict far from the imagery", (6,), lambda t: _predict_with_model(
        t, box=(-60.0, -10.0, -59.9, -9.9)), 1, ("no scene of the sources", "covers the area")),
    Probe("finetune on imagery with one inf pixel (trains, finite weights)", (3,),
          lambda t: _finetune(t, scene=_scene_files(t / "s2", transform_values=_one_inf)), 0,
          ("infinite values", "model folder:"), then=_weights_are_finite, slow=True),
]


def _nan_b01_b09(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[[S2_BANDS.index("B01"), S2_BANDS.index("B09")]] = np.nan
    return a


def _one_inf_hwtc(a: np.ndarray) -> np.ndarray:
    """One +inf in a sample file's ``[H, W, T, C]`` array."""
    a = a.copy()
    a[3, 4, 0, 2] = np.inf
    return a


def _one_inf(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[3, 20, 20] = np.inf
    return a


def _snapshot(tmp: Path, names: tuple[str, ...], before: bool = False) -> dict[str, bytes | None]:
    """The bytes of the kept files (``None`` once gone); before the probe they must exist."""
    return {n: (tmp / n).read_bytes() if before or (tmp / n).is_file() else None for n in names}


def _on_alarm(signum, frame):
    raise ProbeHang


def _invoke(target: list[str] | Callable[[], object]) -> tuple[int, str, BaseException | None]:
    """Run a command line (in process, the real CLI) or a Python call: ``(exit status, output
    or error message, the exception when it is not a clean exit)``. Python warnings and
    logged warnings are part of the output (a real run prints both on stderr)."""
    logged = _Records(logging.WARNING)
    logging.getLogger("geolatent").addHandler(logged)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if callable(target):
            try:
                target()
                code, out, raw = 0, "", None
            except ValueError as e:  # the Python API's clear errors are ValueErrors
                code, out, raw = 1, str(e), None
            except Exception as e:
                code, out, raw = 1, str(e), e
        else:
            result = runner.invoke(app, target, env={"COLUMNS": "400"})
            code, out = result.exit_code, result.output
            raw = None if isinstance(result.exception, SystemExit | None) else result.exception
    logging.getLogger("geolatent").removeHandler(logged)
    notes = [str(w.message) for w in caught] + [r.getMessage() for r in logged.records]
    return code, out + "".join(f"\nwarning: {n}" for n in notes), raw


class _Records(logging.Handler):
    """Keeps the log records of a probe (a real run prints them on stderr)."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def run_probe(probe: Probe, tmp: Path) -> Outcome:
    """Build the probe's inputs under ``tmp``, run it (at most :data:`HANG_S` seconds) and
    classify what it did. The probe's ``disk`` must already be mounted under ``tmp``."""
    before = None
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(HANG_S)
    try:
        target = probe.make(tmp)
        before = _snapshot(tmp, probe.keeps, before=True)
        code, out, raw = _invoke(target)
    except ProbeHang:
        return Outcome(HANG, f"still running after {HANG_S} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        while _HELD:
            _HELD.pop().__exit__(None, None, None)
    out = " ".join(out.split())  # undo the console's line wrapping
    if before is not None and _snapshot(tmp, probe.keeps) != before:
        return Outcome(DATA_LOSS, f"changed or removed: {probe.keeps}; output: {out}")
    if raw is not None:
        return Outcome(TRACEBACK, f"{type(raw).__name__}: {raw}")
    try:
        if probe.then is not None:
            probe.then(tmp)
        if probe.exit_code:
            assert not (tmp / "map.tif").exists(), "a failed run left map.tif"
    except AssertionError as e:
        return Outcome(SILENT, f"{e}; output: {out}")
    if code == 0 and probe.exit_code:
        return Outcome(SILENT, f"exit 0, expected {probe.exit_code}: {out}")
    missing = [s for s in probe.says if s not in out]
    if code != probe.exit_code or missing:
        return Outcome(UNCLEAR, f"exit {code} (expected {probe.exit_code}); missing {missing} in:"
                                f" {out}")
    return Outcome(CLEAR_ERROR if code else CLEAR_WARNING, out)


@pytest.mark.parametrize("probe", [
    pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.slow else []) for p in PROBES])
def test_probe(probe: Probe, tmp_path: Path, request: pytest.FixtureRequest, record_property):
    if probe.disk:  # tmp_path / "read_only" mounted read-only, tmp_path / "small_disk" (16 MiB)
        request.getfixturevalue({"read_only": "read_only_dir", "full": "full_disk"}[probe.disk])
    outcome = run_probe(probe, tmp_path)
    record_property("outcome", outcome.kind)  # counted by benchmarks/reliability_campaign.py
    record_property("items", list(probe.items))
    wanted = CLEAR_WARNING if probe.exit_code == 0 else CLEAR_ERROR
    assert outcome.kind == wanted, outcome.detail


def test_probe_table_covers_every_finding():
    """Every numbered finding of #12 (1-12) has a probe; names are unique (they are the ids)."""
    assert {i for p in PROBES for i in p.items} == set(range(1, 13))
    assert all(set(p.items) <= set(range(1, 13)) for p in PROBES)
    assert len({p.name for p in PROBES}) == len(PROBES)
