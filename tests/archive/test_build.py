"""Building archives from imagery: the built-in sample scene through the data layer and a model
with the reference Nano architecture (random weights: no release weights are downloadable here).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from archive_fixtures import write_sample
from typer.testing import CliRunner

import geolatent.archive as ga
from geolatent.archive.store import ArchiveError, is_archive
from geolatent.cli import app
from geolatent.data.run import OutputConflictError, OutputLock, RunLockedError, prepare_output_dir

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_sample(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def built(sample, fixture_dir):
    """The sample scene built with the CLI (int8, 128 dims, p=4)."""
    out = sample["dir"] / "region.zarr"
    r = CliRunner().invoke(app, [
        "archive", "build", "--model", str(fixture_dir), "--aoi", str(sample["aoi"]),
        "--start", "2024-01-01", "--end", "2024-03-31", "--config", str(sample["config"]),
        "--out", str(out), "--patch-size", "4", "--dims", "128", "--dtype", "int8"])  # fmt: skip
    assert r.exit_code == 0, r.output
    print("\n" + r.output)
    return out


@pytest.mark.slow
def test_build_writes_a_zarr_v3_archive(built, fixture_dir):
    root = zarr.open_group(str(built), mode="r")
    assert json.loads((built / "zarr.json").read_text())["zarr_format"] == 3
    a = dict(root.attrs)
    assert a["geoemb:model"]["id"] == "olmoearth_v1_nano"
    assert a["geoemb:model"]["revision"].startswith("sha256:")
    assert a["geoemb:dims"] == 128 and a["geoemb:matryoshka_prefixes"] == [16, 32, 64, 128]
    assert a["geoemb:quantization"]["dtype"] == "int8"
    assert a["geoemb:time_range"] == ["2024-01-01", "2024-04-01"]
    assert a["geoemb:pixel_size_m"] == 40.0 and a["geolatent:complete"] is True
    assert a["geoemb:dequantization_cosine"]["int8"] > 0.999
    zone = root["zones"]["32633"]
    assert zone.attrs["geoemb:crs"] == "EPSG:32633"
    # 2 x 2 tiles of 64 px on the global grid; the scene's top edge is 8 output rows down
    assert zone.attrs["geoemb:transform"] == [40.0, 0.0, 400000.0, 0.0, -40.0, 5100800.0]
    emb = zone["embeddings"]
    assert emb.shape == (32, 32, 128) and emb.chunks == (16, 16, 128) and emb.dtype == np.int8
    # published from the run driver's work store: every planned tile written, work area gone
    assert zone["tiles_planned"][:].all() and "tiles_done" not in zone
    assert not (built / ".work").exists() and (built / ".geolatent-archive").is_file()
    from geolatent.archive.quantize import decode

    v, ok = decode(emb[:])
    # exactly the output pixels whose centre is inside the area (the scene minus 5 m)
    assert ok[8:24, :24].all() and ok.sum() == 16 * 24
    np.testing.assert_allclose(np.linalg.norm(v[ok], axis=-1), 1.0, atol=1e-5)
    rgb = zone["overview_rgb"][:]
    assert rgb.shape == (3, 32, 32) and rgb.dtype == np.uint8
    assert (rgb[:, ok] > 0).all() and (rgb[:, ~ok] == 0).all() and rgb[:, ok].std() > 20
    proj = root["projection"]
    assert proj["components"].shape == (128, 128)
    evr = proj["explained_variance_ratio"][:]
    assert (np.diff(evr) <= 1e-7).all()  # ordered: every prefix is the best of its size


@pytest.mark.slow
def test_geoparquet_samples_are_readable_by_duckdb(built):
    path = built.with_name("region.samples.parquet")
    t = pq.read_table(path)
    geo = json.loads(t.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    assert t.num_rows == 384 and t.schema.field("embedding").type.list_size == 128
    import duckdb

    con = duckdb.connect()
    # DuckDB reads the GeoParquet `geo` metadata: the column comes back as a GEOMETRY in CRS84
    kind, wkt = con.execute(
        f"SELECT typeof(geometry), ST_AsText(geometry) FROM '{path}' LIMIT 1").fetchone()
    assert kind == "GEOMETRY('OGC:CRS84')" and wkt.startswith("POINT (13.7")
    n, dims = con.execute(
        f"SELECT count(*), any_value(len(embedding)) FROM '{path}'").fetchone()
    assert (n, dims) == (t.num_rows, 128)


@pytest.mark.slow
def test_cli_search_on_the_built_archive(built, tmp_path):
    root = zarr.open_group(str(built), mode="r")
    from archive_fixtures import pixel_lonlat

    rows, cols = 11, 5
    pts = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": ll}}
        for ll in pixel_lonlat([(rows, cols)], col0=40_000, row0=-510_080)]}  # fmt: skip
    (tmp_path / "pos.geojson").write_text(json.dumps(pts))
    r = CliRunner().invoke(app, [
        "archive", "search", "--archive", str(built), "--positive", str(tmp_path / "pos.geojson"),
        "--top", "10", "-o", str(tmp_path / "m.geojson"), "--heatmap", str(tmp_path / "h.tif")])
    assert r.exit_code == 0, r.output
    fc = json.loads((tmp_path / "m.geojson").read_text())
    assert len(fc["features"]) == 10 and (tmp_path / "h.tif").exists()
    assert fc["geoemb:model"] == dict(root.attrs)["geoemb:model"]
    far = {"type": "Point", "coordinates": [2.35, 48.85]}
    (tmp_path / "far.geojson").write_text(json.dumps(far))
    r = CliRunner().invoke(app, [
        "archive", "search", "--archive", str(built), "--positive", str(tmp_path / "far.geojson"),
        "-o", str(tmp_path / "x.geojson")])
    assert r.exit_code == 2 and "--positive point 0 at lon 2.350000" in r.output
    assert not (tmp_path / "x.geojson").exists()


@pytest.mark.slow
def test_rebuild_with_other_settings_is_refused(built, sample, fixture_dir):
    with pytest.raises(ArchiveError, match=r"--dims: archive has 128, asked 64.*nothing was"):
        ga.build(fixture_dir, sample["aoi"], "2024-01-01", "2024-03-31", built,
                 config=sample["config"], dims=64)
    other = sample["dir"] / "other_model"
    from geolatent.model import build_model, save_model

    torch_model = build_model("nano")
    save_model(torch_model, other)
    with pytest.raises(ArchiveError, match=r"--model: archive has 'olmoearth_v1_nano', asked "
                                           r"'other_model'"):
        ga.build(other, sample["aoi"], "2024-01-01", "2024-03-31", built, config=sample["config"])


def test_cli_bad_inputs_say_what_to_change(sample, tmp_path, fixture_dir):
    base = ["archive", "build", "--model", str(fixture_dir), "--aoi", str(sample["aoi"]),
            "--start", "2024-01-01", "--end", "2024-03-31", "--out", str(tmp_path / "a.zarr")]
    cases = [
        (["--config", str(sample["config"]), "--dims", "256"], "--dims must be 128 or 64"),
        (["--config", str(sample["config"]), "--dtype", "int4"], "--dtype must be int8, float16"),
        (["--imagery", "sentinel2"], "unknown imagery 'sentinel2'"),
        (["--imagery", "http://127.0.0.1:9/stac"], "also give --collection"),
        (["--imagery", "earth-search", "--config", str(sample["config"])],
         "give either --config or --imagery"),
        (["--config", str(sample["config"]), "--collection", "sentinel-2-l2a"],
         "--collection goes with --imagery"),
        (["--imagery", "earth-search", "--start", "2024-13-01"], "give ISO dates"),
        (["--config", str(sample["config"]), "--executor", "threads"],
         "--executor must be serial, process or dask"),
        ([], "give --config data.yaml"),
    ]
    for extra, msg in cases:
        r = CliRunner().invoke(app, base + extra)
        assert r.exit_code == 2 and msg in r.output, (extra, r.output)
    r = CliRunner().invoke(app, [*base[:4], "--aoi", str(tmp_path / "none.geojson"), *base[6:],
                                 "--config", str(sample["config"])])
    assert r.exit_code == 2 and "--aoi" in r.output and "does not exist" in r.output
    r = CliRunner().invoke(app, ["archive", "build", "--model", str(tmp_path / "nomodel"),
                                 *base[4:], "--config", str(sample["config"])])
    assert r.exit_code == 2 and "--model" in r.output and "no random weights" in r.output
    assert not (tmp_path / "a.zarr").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputConflictError, match=r"--out .*mine is a folder with other files "
                                                  r"\(notes.txt\) and no geolatent archive"):
        ga.build(fixture_dir, sample["aoi"], "2024-01-01", "2024-03-31", tmp_path / "mine",
                 config=sample["config"])
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "file.zarr").write_text("mine too")
    r = CliRunner().invoke(app, [*base[:-1], str(tmp_path / "file.zarr"),
                                 "--config", str(sample["config"])])
    assert r.exit_code == 2 and "is an existing file, not a folder" in r.output, r.output
    assert (tmp_path / "file.zarr").read_text() == "mine too"


def test_one_build_per_archive(sample, tmp_path, fixture_dir):
    """A second build of the same archive stops at once naming the running one's pid."""
    out = tmp_path / "a.zarr"
    prepare_output_dir(out, "archive")
    with OutputLock(out, "archive build"):
        with pytest.raises(RunLockedError, match=rf"archive build on .*a.zarr is already running "
                                                 rf"\(pid {os.getpid()}\)"):
            ga.build(fixture_dir, sample["aoi"], "2024-01-01", "2024-03-31", out,
                     config=sample["config"])
        r = CliRunner().invoke(app, [
            "archive", "build", "--model", str(fixture_dir), "--aoi", str(sample["aoi"]),
            "--start", "2024-01-01", "--end", "2024-03-31", "--config", str(sample["config"]),
            "--out", str(out)])  # fmt: skip
        assert r.exit_code == 2 and f"is already running (pid {os.getpid()})" in r.output
    # the refused runs touched nothing: only the marker and the lock are there
    assert sorted(p.name for p in out.iterdir()) == [".geolatent-archive", ".work"]
    assert [p.name for p in (out / ".work").iterdir()] == ["lock"]


KILLED_BUILD = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {here!r})
    import geolatent.archive as ga
    from geolatent.data.config import FileSourceConfig
    srcs = [FileSourceConfig.model_validate(s) for s in {sources!r}]
    def slow(done, total):
        print(f"tiles {{done}}/{{total}}", flush=True)
        time.sleep(0.4)  # leaves the test time to kill the build between tiles
    ga.build({model!r}, {aoi!r}, "2024-01-01", "2024-03-31", {out!r}, sources=srcs,
             tile_size=32, pca_tiles=2, progress=slow)
""")


@pytest.mark.slow
def test_kill_9_then_resume_gives_identical_arrays(sample, fixture_dir, tmp_path):
    torch_threads = 1
    import torch

    torch.set_num_threads(torch_threads)
    ref = ga.build(fixture_dir, sample["aoi"], "2024-01-01", "2024-03-31", tmp_path / "ref.zarr",
                   sources=sample["sources"], tile_size=32, pca_tiles=2)
    out = tmp_path / "killed.zarr"
    script = KILLED_BUILD.format(here=str(HERE), model=str(fixture_dir), aoi=str(sample["aoi"]),
                                 out=str(out),
                                 sources=[s.model_dump(mode="json") for s in sample["sources"]])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    work = out / ".work"  # the run driver's work store: one marker per finished tile

    def tiles_done() -> int:
        return len(list(work.glob("tile-*.json")))

    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if tiles_done() >= 2:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    done_at_kill = tiles_done()
    assert 2 <= done_at_kill < ref.tiles_total
    # nothing published yet: the folder is no Zarr store until every tile is done
    assert not (out / "zarr.json").exists() and not is_archive(out)
    assert not out.with_name("killed.samples.parquet").exists()
    print(f"\nkilled with {done_at_kill}/{ref.tiles_total} tiles done")

    res = ga.build(fixture_dir, sample["aoi"], "2024-01-01", "2024-03-31", out,
                   sources=sample["sources"], tile_size=32, pca_tiles=2)
    assert res.tiles_resumed == done_at_kill and res.tiles_run == ref.tiles_total - done_at_kill
    assert not work.exists() and _complete(out)
    a = zarr.open_group(str(tmp_path / "ref.zarr"), mode="r")
    b = zarr.open_group(str(out), mode="r")
    for name in ("embeddings", "overview_rgb", "tiles_planned"):
        np.testing.assert_array_equal(a["zones"]["32633"][name][:], b["zones"]["32633"][name][:])
    for name in ("mean", "components", "explained_variance_ratio"):
        np.testing.assert_array_equal(a["projection"][name][:], b["projection"][name][:])
    assert pq.read_table(tmp_path / "ref.samples.parquet").equals(
        pq.read_table(tmp_path / "killed.samples.parquet"))
    # a rerun of the finished archive changes nothing and runs nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = ga.build(fixture_dir, sample["aoi"], "2024-01-01", "2024-03-31", out,
                     sources=sample["sources"], tile_size=32, pca_tiles=2)
    assert again.tiles_run == 0 and again.vectors == res.vectors
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def _complete(path: Path) -> bool:
    return zarr.open_group(str(path), mode="r").attrs["geolatent:complete"] is True


@pytest.mark.slow
def test_dask_materialization_gives_the_same_archive(built, sample, fixture_dir, tmp_path):
    """Imagery materialized on a Dask LocalCluster (the large-area path) -> the same arrays."""
    pytest.importorskip("dask.distributed")
    r = ga.build(fixture_dir, sample["aoi"], "2024-01-01", "2024-03-31", tmp_path / "d.zarr",
                 config=sample["config"], executor="dask", workers=1)
    assert r.tiles_run == 4
    a = zarr.open_group(str(built), mode="r")["zones"]["32633"]["embeddings"][:]
    b = zarr.open_group(str(tmp_path / "d.zarr"), mode="r")["zones"]["32633"]["embeddings"][:]
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_an_area_too_small_for_the_pca_is_a_clear_error(sample, fixture_dir, tmp_path):
    from archive_fixtures import pixel_lonlat

    lon, lat = pixel_lonlat([(10, 10)], col0=40_000, row0=-510_080)[0]
    tiny = {"type": "Polygon", "coordinates": [[[lon, lat], [lon + 0.001, lat],
                                                [lon + 0.001, lat + 0.001], [lon, lat]]]}
    with pytest.raises(ArchiveError, match=r"fewer than --dims 128.*use a larger --aoi"):
        ga.build(fixture_dir, tiny, "2024-01-01", "2024-03-31", tmp_path / "t.zarr",
                 config=sample["config"])
    assert not (tmp_path / "t.zarr").exists()  # a build that finished nothing leaves nothing


@pytest.mark.slow
def test_ranks_share_the_build_and_rank_0_publishes(sample, fixture_dir, tmp_path):
    """torchrun-style ranks on one folder: rank 0 fits the PCA and publishes, each rank embeds
    every second tile; waits time out naming the missing rank; the archive equals one built by
    a single process."""
    args = (fixture_dir, sample["aoi"], "2024-01-01", "2024-03-31")
    kw = dict(sources=sample["sources"], tile_size=32, pca_tiles=2)  # 6 tiles; PCA on 0 and 5
    out = tmp_path / "ranks.zarr"
    with pytest.raises(TimeoutError, match=r"rank 0 did not prepare .*ranks.zarr"):
        ga.build(*args, out, rank=1, world=2, rank_timeout_s=0.5, **kw)
    assert not out.exists()
    # rank 0 alone: the PCA's tiles and its own (0, 2, 4), then it waits for rank 1
    with pytest.raises(TimeoutError, match=r"rank 1 \(2 items left\) did not finish within 1 s"):
        ga.build(*args, out, rank=0, world=2, rank_timeout_s=1, **kw)
    assert not (out / "zarr.json").exists()
    r1 = ga.build(*args, out, rank=1, world=2, rank_timeout_s=5, **kw)
    assert (r1.tiles_run, r1.tiles_resumed) == (2, 0)  # 1 and 3; tile 5 is the PCA's (rank 0)
    assert not (out / "zarr.json").exists()  # only rank 0 publishes
    r0 = ga.build(*args, out, rank=0, world=2, rank_timeout_s=5, **kw)
    assert (r0.tiles_run, r0.tiles_resumed) == (0, 4) and not (out / ".work").exists()
    ref = ga.build(*args, tmp_path / "ref.zarr", **kw)
    a, b = (zarr.open_group(str(p), mode="r") for p in (ref.path, out))
    for name in ("embeddings", "overview_rgb"):
        np.testing.assert_array_equal(a["zones"]["32633"][name][:], b["zones"]["32633"][name][:])
    np.testing.assert_array_equal(a["projection"]["components"][:],
                                  b["projection"]["components"][:])
    # rank 0 embedding every tile itself (all of them fit the PCA) while rank 1 waits: rank 1
    # stops once the archive is published (its store is gone) and leaves nothing behind
    out2, all6 = tmp_path / "ranks2.zarr", dict(kw, pca_tiles=6)
    got: dict = {}
    waiter = threading.Thread(target=lambda: got.update(r1=ga.build(
        *args, out2, rank=1, world=2, rank_timeout_s=60, **all6)))
    waiter.start()
    r0 = ga.build(*args, out2, rank=0, world=2, rank_timeout_s=60, **all6)
    waiter.join(120)
    assert r0.tiles_run == 6 and got["r1"].tiles_run == 0
    assert sorted(p.name for p in out2.iterdir()) == [".geolatent-archive", "projection",
                                                      "zarr.json", "zones"]
    r = CliRunner().invoke(app, [
        "archive", "build", "--model", str(fixture_dir), "--aoi", str(sample["aoi"]),
        "--start", "2024-01-01", "--end", "2024-03-31", "--config", str(sample["config"]),
        "--out", str(tmp_path / "x.zarr")], env={"RANK": "2", "WORLD_SIZE": "2"})
    assert r.exit_code == 2 and "rank 2 must be in 0..1" in r.output and "WORLD_SIZE" in r.output
