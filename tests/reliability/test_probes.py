"""The reliability campaign, compact: bad inputs and bad configs as a user gives them, each
with the outcome it must keep (a clear error naming what to change, the exit code, no file of
the user's lost). One row per probe in ``PROBES``; ``test_probe`` runs each row.

Every input is real: GeoTIFFs with CRS and transform, GeoJSON / YAML files, the real CLI.
"""

from __future__ import annotations

import json
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
from geolatent.data.synthetic import make_sample_scene
from geolatent.data.window import WGS84, reproject_geometry
from geolatent.modalities import MODALITIES

S2 = "sentinel2_l2a"
S2_BANDS = list(MODALITIES[S2].bands)
runner = CliRunner()


@dataclass
class Probe:
    """One probe: ``make(tmp) -> argv`` builds the inputs and returns the command line.

    Attributes:
        name: what is wrong, as a user would say it.
        make: writes the inputs under ``tmp`` and returns the ``geolatent`` arguments.
        exit_code: the expected exit status (2: bad command line / config, 1: bad data; 0
            where the run goes on after a warning).
        says: substrings the output must contain (the option, file or value to change).
        keeps: files (relative to ``tmp``) that must be unchanged afterwards.
    """

    name: str
    make: Callable[[Path], list[str]]
    exit_code: int
    says: tuple[str, ...]
    keeps: tuple[str, ...] = field(default=())


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


# -- the table ----------------------------------------------------------------------------------
PROBES: list[Probe] = [
    # predict: options (#12 item 11)
    Probe("predict --batch-size 0", lambda t: _predict(t, **{"--batch-size": "0"}), 2,
          ("--batch-size",)),
    Probe("predict --start 2015-13-01", lambda t: _predict(t, **{"--start": "2015-13-01"}), 2,
          ("--start", "2015-13-01")),
    Probe("predict --end before --start", lambda t: _predict(t, **{"--end": "2023-01-01"}), 2,
          ("--end", "before --start")),
    Probe("predict -o onto a folder", lambda t: _predict(t, **{"-o": str(_model_folder(t))}), 2,
          ("is a folder",)),
    # predict: areas (#11 item 3, #12 items 6 and 11)
    Probe("garbage AOI file", lambda t: _predict(t, _write(t / "aoi.geojson", "not json{")), 1,
          ("aoi.geojson", "not readable GeoJSON"), keeps=("aoi.geojson",)),
    Probe("garbage AOI (not a vector format)", lambda t: _predict(t, _write(t / "aoi.gpkg",
                                                                            "garbage")), 1,
          ("aoi.gpkg", "not a readable vector file")),
    Probe("empty AOI", lambda t: _predict(t, _geojson(t / "aoi.geojson", {
        "type": "FeatureCollection", "features": []})), 1, ("holds no geometry",)),
    Probe("AOI longitude 184", lambda t: _predict(t, _geojson(t / "aoi.geojson", {
        "type": "Polygon", "coordinates": [[[184, 0], [185, 0], [185, 1], [184, 1], [184, 0]]]})),
        1, ("longitude must be in -180..180",)),
    Probe("AOI in metres read as lon/lat", lambda t: _predict(t, _geojson(t / "aoi.geojson", {
        "type": "Polygon", "coordinates": [[[465181, 5079244], [466180, 5079244],
                                            [466180, 5080254], [465181, 5079244]]]})),
        1, ("projected coordinates", "--aoi-crs")),
    Probe("--aoi-crs contradicting the file's crs", lambda t: _predict(
        t, _geojson(t / "aoi.geojson", {
            "type": "Polygon", "crs": {"type": "name", "properties": {"name": "EPSG:32633"}},
            "coordinates": [[[465181, 5079244], [466180, 5079244], [466180, 5080254],
                             [465181, 5079244]]]}), **{"--aoi-crs": "EPSG:32632"}),
        1, ("declares CRS", "EPSG:32632")),
    # finetune: config values (#12 item 11)
    Probe("lr -1", lambda t: _finetune(t, train__lr=-1), 2, ("lr",)),
    Probe("split fractions 0.9/0.9/0.9", lambda t: _finetune(
        t, split__train=0.9, split__val=0.9, split__test=0.9), 2, ("add up to 1",)),
    Probe("resolution_m -10", lambda t: _finetune(t, windows__resolution_m=-10), 2,
          ("resolution_m",)),
    Probe("windows.end before windows.start", lambda t: _finetune(
        t, windows__start="2024-03-01", windows__end="2024-01-01"), 2, ("windows.end",)),
    Probe("invalid date_pattern regex", lambda t: _finetune(
        t, scene=_with_source(t, date_pattern="s2_((\\d+.tif")), 2,
        ("date_pattern", "not a valid regular expression")),
    # finetune: labels (#11 item 2, #12 item 11)
    Probe("empty labels file", lambda t: _finetune(t, labels=_geojson(
        t / "labels.geojson", {"type": "FeatureCollection", "features": []})), 1,
        ("holds no labels",), keeps=("labels.geojson",)),
    Probe("time_column that does not exist", lambda t: _finetune(
        t, labels__time_column="acquired"), 1, ("time column 'acquired' not found",)),
    # finetune: imagery (#12 items 6, 3, 7; #11 item 5)
    Probe("source glob matching nothing", lambda t: _finetune(
        t, scene=_with_source(t, paths=[str(t / "none_*.tif")])), 1,
        ("my_s2", "matches no file")),
    Probe("reflectance 0-1 given as DN", lambda t: _finetune(
        t, scene=_scene_files(t / "s2", transform_values=lambda a: a / 10000),
        prepare_only=True), 1, ("reflectance in 0-1", "scale: 10000", "my_s2")),
    Probe("one inf pixel", lambda t: _finetune(
        t, scene=_scene_files(t / "s2", transform_values=_one_inf), prepare_only=True), 0,
        ("infinite values", "treated as missing data")),
    Probe("Sentinel-2 L1C file given as L2A", lambda t: _finetune(
        t, scene=_scene_files(t / "s2", tags={"PRODUCT_TYPE": "S2MSI1C"}), prepare_only=True), 1,
        ("Level-1C", "my_s2")),
    # data build (#12 items 6, 7, 8)
    Probe("data build: tile_size 0", lambda t: _data_build(t, tile_size=0), 2, ("tile_size",)),
    Probe("data build: sample_size 0", lambda t: _data_build(t, sample_size=0), 2,
          ("sample_size",)),
    Probe("data build: resolution_m -10", lambda t: _data_build(t, resolution_m=-10), 2,
          ("resolution_m",)),
    Probe("data build: bbox in metres", lambda t: _data_build(
        t, area=dict(bbox=[465181, 5079244, 466180, 5080254])), 2, ("not a lon/lat box",)),
    Probe("data build: invalid date_pattern", lambda t: _data_build(
        t, scene=_with_source(t, date_pattern="(((")), 2,
        ("date_pattern", "not a valid regular expression")),
    Probe("data build: reflectance 0-1 written as samples", lambda t: _data_build(
        t, scene=_scene_files(t / "s2", transform_values=lambda a: a / 10000)), 1,
        ("reflectance in 0-1", "scale: 10000` on source 'my_s2'")),
    Probe("data build: a band subset (builds; the rest filled by the missing-band rule)",
          lambda t: _data_build(t, scene=_with_source(t, bands=S2_BANDS[:3])), 0,
          ("note:", "are filled by the model version's missing-band rule")),
    Probe("finetune: a bandset all NaN in the files (warned)", lambda t: _finetune(
        t, scene=_scene_files(t / "s2", transform_values=_nan_b01_b09), prepare_only=True), 0,
        ("warning:", "bandset ['B01', 'B09'] has no valid value in any window")),
    Probe("finetune: a band subset (the rest filled by the missing-band rule)", lambda t: _finetune(
        t, scene=_with_source(t, bands=S2_BANDS[:3]), prepare_only=True), 0,
          ("note:", "are filled by the model version's missing-band rule")),
    Probe("data build: output_dir an existing file", lambda t: _data_build(
        t, output_dir=str(_write(t / "notes.txt", "my notes"))), 2,
        ("is an existing file",), keeps=("notes.txt",)),
    Probe("pretrain: no usable samples", _pretrain_on_empty_folder, 1,
          ("no usable sample",)),
    Probe("band descriptions contradict bands:", lambda t: _finetune(
        t, scene=_scene_files(t / "s2", descriptions=[S2_BANDS[1], S2_BANDS[0], *S2_BANDS[2:]]),
        prepare_only=True), 1, ("described as B03 but given as B02", "`bands:`")),
]


def _nan_b01_b09(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[[S2_BANDS.index("B01"), S2_BANDS.index("B09")]] = np.nan
    return a


def _one_inf(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[3, 20, 20] = np.inf
    return a


def _snapshot(tmp: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    return {n: (tmp / n).read_bytes() for n in names}


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_probe(probe: Probe, tmp_path: Path):
    argv = probe.make(tmp_path)
    before = _snapshot(tmp_path, probe.keeps)
    result = runner.invoke(app, argv, env={"COLUMNS": "400"})
    out = " ".join(result.output.split())  # undo the console's line wrapping
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"raw traceback: {result.exception!r}"
    assert result.exit_code == probe.exit_code, out
    for s in probe.says:
        assert s in out, f"{s!r} not in: {out}"
    assert _snapshot(tmp_path, probe.keeps) == before
    assert not (tmp_path / "map.tif").exists()


def test_probe_table_is_counted():
    """The campaign's figures for the note: every probe expects a clear error (two: a clear
    warning, the run going on)."""
    assert len(PROBES) == 33
    assert len({p.name for p in PROBES}) == len(PROBES)
