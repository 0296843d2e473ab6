"""End-to-end builds on real Sentinel-1: samples, manifest, resume, bad inputs, executors, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import yaml
from rasterio.warp import transform_bounds
from shapely.geometry import box, mapping
from typer.testing import CliRunner

from geolatent.data.build import BadSceneError, build_dataset, plan_build
from geolatent.data.config import DataConfig, StacSourceConfig, load_data_config
from geolatent.data.h5samples import read_sample
from geolatent.data.materialize import WindowError, materialize_window
from geolatent.data.sources import open_source
from geolatent.data.window import Window, year_range
from geolatent.modalities import MISSING_VALUE

from .helpers import write_raster

AREA = [4.49, 43.575, 4.55, 43.61]  # 3 x 2 tiles of 256 px over the Camargue S1 scenes
S1 = dict(
    type="files",
    modality="sentinel1",
    bands=["vv"],
    nodata=-99,
    date_pattern=r"_(\d{8}T\d{6})_",
    date_format="%Y%m%dT%H%M%S",
)


def make_config(out: Path, s1_dir: Path, extra_sources=(), **kw) -> DataConfig:
    source = dict(S1, name="s1", paths=[str(s1_dir / "*_VV_*.tif")])
    raw = dict(
        output_dir=str(out), area={"bbox": AREA}, year=2017, sources=[source, *extra_sources]
    )
    return DataConfig.model_validate(raw | kw)


def read_manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_build_writes_spec_samples_and_resumes(tmp_path, s1_dir):
    cfg = make_config(tmp_path / "out", s1_dir)
    plan = plan_build(cfg)
    assert len(plan.windows) == 6
    # the 2017-12-10 scene lies beside the area: no window uses it
    used = {i for wp in plan.windows for i in wp.scene_ids()["s1"]}
    assert used == {"S1A__IW___D_20170309T054356_VV_grd_mli_geo_norm_db.tif"}

    summary = build_dataset(cfg, executor="serial")
    assert len(summary.built) + len(summary.empty) == 6 and not summary.failed
    assert summary.samples_written == len(read_manifest(tmp_path / "out")) > 6
    records = read_manifest(tmp_path / "out")
    for rec in records:
        s = read_sample(tmp_path / "out" / rec["file"])
        vv = s["arrays"]["sentinel1"]
        assert vv.shape == (128, 128, 12, 2)
        assert s["timestamps"].tolist() == [[1, m, 2017] for m in range(12)]
        assert np.flatnonzero(~s["missing_timesteps"]["sentinel1"]).tolist() == [2]  # March
        assert (vv[..., 1] == MISSING_VALUE).all()
        assert 43.57 < s["latlon"][0] < 43.62 and 4.48 < s["latlon"][1] < 4.56
        assert rec["modalities"]["sentinel1"]["present_timesteps"] == 1
        assert rec["modalities"]["sentinel1"]["bandsets_present"] == [False]
        assert np.allclose(s["latlon"], rec["latlon"], atol=1e-5)
    saved = json.loads((tmp_path / "out" / "build_summary.json").read_text())
    assert saved["samples_written"] == summary.samples_written

    again = build_dataset(cfg, executor="serial")
    assert sorted(again.skipped) == sorted(summary.built + summary.empty)
    assert not again.built and read_manifest(tmp_path / "out") == records

    # a changed config (different fingerprint) rebuilds instead of reusing old samples
    changed = make_config(tmp_path / "out", s1_dir, required_modalities=["sentinel1"])
    assert len(build_dataset(changed, executor="serial").skipped) == 0


def _bad_inputs(tmp_path: Path, s1_dir: Path) -> Path:
    """Bad files next to the real ones, each over its own column of windows."""
    bad = tmp_path / "bad"
    bad.mkdir()
    with rasterio.open(next(s1_dir.glob("*20170309*"))) as f:
        data, t = f.read(1), f.transform
    # west column: a truncated GeoTIFF (its header survives, its pixel blocks do not)
    west = bad / "S1A_trunc_20170320T054356_VV.tif"
    write_raster(
        west,
        data[:, :90],
        origin=(t.c, t.f),
        res=20.0,
        nodata=-99.0,
        tiled=True,
        blockxsize=32,
        blockysize=32,
        compress="deflate",
    )
    west.write_bytes(west.read_bytes()[: west.stat().st_size // 3])
    # middle column: declared [vv, vh] but the file has only vv
    middle = bad / "S1A_dual_20170320T054356_VVVH.tif"
    write_raster(middle, data[:, 110:170], origin=(t.c + 110 * 20, t.f), res=20.0, nodata=-99.0)
    # a CRS without a transform: cannot be placed, reported once
    write_raster(bad / "S1A_notransform_20170320T054356_VV.tif", data, georeferenced=False)
    return bad


def test_bad_inputs_fail_their_windows_and_the_build_goes_on(tmp_path, s1_dir):
    bad = _bad_inputs(tmp_path, s1_dir)
    extra = [
        dict(S1, name="bad_vv", paths=[str(bad / "*_VV.tif")]),
        dict(S1, name="bad_dual", paths=[str(bad / "*_VVVH.tif")], bands=["vv", "vh"]),
    ]
    cfg = make_config(tmp_path / "out", s1_dir, extra)
    plan = plan_build(cfg)
    assert [p.file.split("/")[-1] for p in plan.problems] == [
        "S1A_notransform_20170320T054356_VV.tif"
    ]
    assert "no geotransform" in plan.problems[0].reason

    # A scene that cannot be indexed stops the build (on_bad_scene: fail) before any window is
    # recorded as done; the file is named.
    with pytest.raises(BadSceneError, match="S1A_notransform_20170320T054356_VV.tif"):
        build_dataset(cfg, executor="serial")
    assert not list((tmp_path / "out").glob("windows/*.json"))
    (bad / "S1A_notransform_20170320T054356_VV.tif").unlink()

    summary = build_dataset(cfg, executor="serial")
    reasons = summary.failed
    trunc = [r for r in reasons.values() if "S1A_trunc_20170320T054356_VV.tif" in r]
    dual = [r for r in reasons.values() if "S1A_dual_20170320T054356_VVVH.tif" in r]
    assert len(trunc) == 2 and len(dual) == 2 and len(reasons) == 4
    assert all("IReadBlock" in r or "Read" in r for r in trunc)
    assert all("band 'vh' is absent" in r for r in dual)
    assert len(summary.built) == 2  # the east column is unaffected
    manifest = read_manifest(tmp_path / "out")
    assert {r["window"] for r in manifest} == set(summary.built)

    # failed windows are retried on the next run; once the inputs are fixed they build
    # (files are repaired rather than removed: a glob matching no file is a config error)
    with rasterio.open(next(s1_dir.glob("*20170309*"))) as f:
        data, t = f.read(1), f.transform
    # the truncated file rewritten whole
    write_raster(bad / "S1A_trunc_20170320T054356_VV.tif", data[:, :90], origin=(t.c, t.f),
                 res=20.0, nodata=-99.0)
    # the dual-polarisation file repaired: it now holds both vv and vh
    write_raster(bad / "S1A_dual_20170320T054356_VVVH.tif",
                 np.stack([data[:, 110:170]] * 2), origin=(t.c + 110 * 20, t.f), res=20.0,
                 nodata=-99.0)
    again = build_dataset(cfg, executor="serial")
    assert sorted(again.skipped) == sorted(summary.built)
    assert sorted(again.built) == sorted(reasons) and not again.failed


def test_unreadable_stac_asset_fails_the_window_or_is_skipped(tmp_path, s1_dir):
    with rasterio.open(next(s1_dir.glob("*20170309*"))) as f:
        data, crs, bounds = f.read(1), f.crs, f.bounds
    path = write_raster(tmp_path / "no_transform.tif", data, crs=str(crs), georeferenced=False)
    bbox = list(transform_bounds(crs, "EPSG:4326", *bounds))
    cat = pystac.Catalog("c", "c")
    item = pystac.Item("scene", mapping(box(*bbox)), bbox, year_range(2017)[0].replace(month=3), {})
    item.add_asset("vv", pystac.Asset(str(path)))
    cat.add_item(item)
    cat.normalize_hrefs(str(tmp_path / "stac"))
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    kw = dict(name="stac", modality="sentinel1", catalog=str(tmp_path / "stac" / "catalog.json"))
    w = Window.from_projected_bounds(
        "EPSG:32631", (621000, 4826500, 623560, 4829060), time_range=year_range(2017)
    )
    with pytest.raises(WindowError, match="no_transform.tif: no CRS or no geotransform"):
        materialize_window(w, [open_source(StacSourceConfig(**kw))])
    skipped = materialize_window(w, [open_source(StacSourceConfig(**kw, on_bad_scene="skip"))])
    assert "no_transform.tif" in skipped.warnings[0]
    assert skipped.missing_timesteps["sentinel1"].all()


def _same_outputs(a: Path, b: Path) -> None:
    ra, rb = read_manifest(a), read_manifest(b)
    assert sorted(r["file"] for r in ra) == sorted(r["file"] for r in rb)
    for rec in ra:
        x, y = read_sample(a / rec["file"]), read_sample(b / rec["file"])
        np.testing.assert_array_equal(x["arrays"]["sentinel1"], y["arrays"]["sentinel1"])


@pytest.mark.slow  # >= 5 s (pytest --durations)
def test_process_pool_and_dask_give_the_serial_result(tmp_path, s1_dir):
    serial = build_dataset(make_config(tmp_path / "serial", s1_dir), executor="serial")
    pool = build_dataset(make_config(tmp_path / "pool", s1_dir), executor="process", workers=2)
    assert sorted(pool.built) == sorted(serial.built) and not pool.failed
    _same_outputs(tmp_path / "serial", tmp_path / "pool")
    dask = build_dataset(
        make_config(tmp_path / "dask", s1_dir), executor="dask", workers=2, dask_processes=False
    )
    assert sorted(dask.built) == sorted(serial.built) and not dask.failed
    _same_outputs(tmp_path / "serial", tmp_path / "dask")


def _write_yaml(tmp_path: Path, s1_dir: Path) -> Path:
    raw = {
        "output_dir": "out",  # relative to the config file
        "area": {"bbox": AREA},
        "year": 2017,
        "sources": [dict(S1, name="s1", paths=[os.path.relpath(s1_dir, tmp_path) + "/*_VV_*.tif"])],
    }
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_cli_dry_run_and_build(tmp_path, s1_dir):
    from geolatent.data.cli import app

    config = _write_yaml(tmp_path, s1_dir)
    assert load_data_config(config).output_dir == str(tmp_path / "out")
    runner = CliRunner()
    dry = runner.invoke(app, ["build", "--config", str(config), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "6 windows" in dry.output and "S1A__IW___D_20170309T054356" in dry.output
    assert not (tmp_path / "out").exists()
    res = runner.invoke(app, ["build", "--config", str(config), "--executor", "serial"])
    assert res.exit_code == 0, res.output
    assert "failed 0" in res.output and (tmp_path / "out" / "manifest.jsonl").exists()
    sample = read_manifest(tmp_path / "out")[0]["file"]
    shown = runner.invoke(app, ["inspect", str(tmp_path / "out" / sample)])
    assert "sentinel1: [128, 128, 12, 2]" in shown.output


@pytest.mark.slow  # >= 5 s (pytest --durations)
def test_root_cli_mounts_data_build(tmp_path, s1_dir):
    probe = subprocess.run(
        [sys.executable, "-c", "import geolatent.cli"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"geolatent.cli does not import yet: {probe.stderr.strip().splitlines()[-1]}")
    config = _write_yaml(tmp_path, s1_dir)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "geolatent.cli",
            "data",
            "build",
            "--config",
            str(config),
            "--executor",
            "serial",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(read_manifest(tmp_path / "out")) > 0
