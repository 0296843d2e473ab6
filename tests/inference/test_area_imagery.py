"""``--imagery`` on the area commands: ``geolatent embed --imagery`` (inputs fetched from a
STAC API over an area) and ``predict --imagery`` (the fine-tuned model's own modalities),
against the loopback STAC API + range file server of the data tests
(``tests/data/stac_env.py``) serving real Sentinel-2 / Sentinel-1 scenes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from data.stac_env import stac_env, write_aoi  # noqa: F401 (a fixture)
from typer.testing import CliRunner

from geolatent.cli import app
from geolatent.data.imagery import composite_inputs, fetch_composites, imagery_source
from geolatent.data.run import work_dir_for
from geolatent.inference.embed_rasters import embed_geotiffs
from geolatent.inference.file_inputs import RasterInput

from .conftest import flat, read_embedding

DATES = ("2015-07-01", "2015-10-01")
S2, S1 = "sentinel2_l2a", "sentinel1"


def _bundle(path: Path, modalities: list[str]) -> Path:
    """A fine-tuned model folder (random Nano encoder, fresh segmentation head) trained, as far
    as its bundle says, on ``modalities``."""
    from geolatent.modalities import MODALITIES
    from geolatent.model import build_model
    from geolatent.platform.bundle import FinetunedModel, InputSpec, TaskSpec, save_bundle
    from geolatent.platform.classes import ClassTable
    from geolatent.platform.finetune import head_spec_for
    from geolatent.platform.heads import TaskModel, build_head

    torch.manual_seed(0)
    model = build_model("nano")
    spec = head_spec_for("segmentation", model.config.embedding_size, 3, modalities, 16, 0.0)
    save_bundle(FinetunedModel(
        model=TaskModel(model.encoder, build_head(spec), spec).eval(),
        task=TaskSpec("segmentation", 0.0, 1.0),
        inputs=InputSpec(modalities, {m: list(MODALITIES[m].bands) for m in modalities}, 8, 16,
                         16),
        model_config=model.config, classes=ClassTable.from_values(range(3)),
    ), path)
    return path


def _embed(*args: str):
    return CliRunner().invoke(app, ["embed", "--random-weights", "nano", *args])


@pytest.mark.slow
def test_embed_imagery_equals_embedding_the_fetched_composites(
        stac_env, nano, tmp_path, monkeypatch):  # noqa: F811 (stac_env: the imported fixture)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the default window cache
    server = stac_env["server"]
    aoi = write_aoi(tmp_path)
    out = tmp_path / "emb.tif"
    args = ["--imagery", stac_env["es"], "--collection", "sentinel-2-l2a", "--aoi", str(aoi),
            "--start", DATES[0], "--end", DATES[1], "--out", str(out)]

    # a failing model load comes after the fetch: the composites stay in OUT.work/imagery
    server.clear_log()
    r = CliRunner().invoke(app, ["embed", "--model", str(tmp_path / "no-model"), *args])
    assert r.exit_code == 2 and "cannot load --model" in flat(r.output), r.output
    assert any(q.path.endswith(".tif") for q in server.requests())
    imagery_dir = work_dir_for(out) / "imagery"
    assert sorted(p.name for p in imagery_dir.glob("*.tif")) == [
        "sentinel2_l2a_2015-07.tif", "sentinel2_l2a_2015-08.tif", "sentinel2_l2a_2015-09.tif"]

    # the rerun reads every asset window from the cache: no asset request at all
    server.clear_log()
    r = _embed(*args)
    assert r.exit_code == 0, r.output
    assert not [q for q in server.requests() if q.path.endswith(".tif")]
    assert "3 timestep(s)" in flat(r.output)
    assert not work_dir_for(out).exists()

    # the same as fetching the composites and embedding them as files
    src = imagery_source(stac_env["es"], collection="sentinel-2-l2a", cache_dir=tmp_path / "c")
    fetched = fetch_composites([src], aoi, *DATES, tmp_path / "composites")
    files = composite_inputs(fetched)
    assert [d.isoformat() for _, d in files["sentinel2_l2a"]] == [
        "2015-07-01", "2015-08-01", "2015-09-01"]
    ref = embed_geotiffs(nano, {m: [RasterInput(p, d) for p, d in fs] for m, fs in files.items()},
                         tmp_path / "ref.tif")
    got, want = read_embedding(out), read_embedding(ref.path)
    assert np.isfinite(got).any()
    np.testing.assert_array_equal(got, want)
    with rasterio.open(out) as f:
        assert f.tags()["dates"] == "2015-07-01,2015-08-01,2015-09-01"
        assert f.crs.to_epsg() == 32633 and f.transform.a == 40.0


def test_embed_imagery_option_errors_are_clear(tmp_path):
    aoi = write_aoi(tmp_path)
    out = str(tmp_path / "e.tif")
    r = _embed("--imagery", "earth-search", "--aoi", str(aoi), "--out", out)
    assert r.exit_code == 2 and "--imagery needs --aoi FILE, --start DATE and --end DATE" in \
        flat(r.output)
    r = _embed("--aoi", str(aoi), "--start", DATES[0], "--end", DATES[1], "--out", out)
    assert r.exit_code == 2 and "--aoi / --start / --end / --collection are for --imagery" in \
        flat(r.output)
    r = _embed("--imagery", "sentinel", "--aoi", str(aoi), "--start", DATES[0], "--end",
               DATES[1], "--out", out)
    assert r.exit_code == 2 and "unknown imagery 'sentinel'" in flat(r.output)
    s2 = tmp_path / "s2.tif"
    s2.write_bytes(b"")
    r = _embed("--imagery", "earth-search", "--s2", str(s2), "--s2-dates", DATES[0], "--aoi",
               str(aoi), "--start", DATES[0], "--end", DATES[1], "--out", out)
    assert r.exit_code == 2 and "either --imagery or input files" in flat(r.output)
    assert not (tmp_path / "e.tif.work").exists()


@pytest.mark.slow
def test_predict_imagery_feeds_the_models_own_modalities(stac_env, tmp_path):  # noqa: F811
    from geolatent.platform.predict import predict_area
    from geolatent.platform.predict.plan import imagery_for_model

    aoi = write_aoi(tmp_path)
    kw = dict(url=stac_env["pc"], cache_dir=tmp_path / "c")
    s2s1 = _bundle(tmp_path / "s2s1", [S2, S1])
    srcs = imagery_for_model("planetary-computer", s2s1, aoi, *DATES, **kw)
    assert [s.config.collections for s in srcs] == [["sentinel-2-l2a"], ["sentinel-1-rtc"]]
    s2 = _bundle(tmp_path / "s2", [S2])
    assert [s.config.collections for s in
            imagery_for_model("planetary-computer", s2, aoi, *DATES, **kw)] == [["sentinel-2-l2a"]]
    with pytest.raises(ValueError, match="supplies no collection for \\['landsat'\\]"):
        imagery_for_model("planetary-computer", _bundle(tmp_path / "ls", [S2, "landsat"]), aoi,
                          *DATES, **kw)
    with pytest.raises(ValueError, match="cannot read the model's input modalities"):
        imagery_for_model("planetary-computer", tmp_path / "c", aoi, *DATES, **kw)
    with pytest.raises(ValueError, match="unknown imagery 'sentinel'"):
        imagery_for_model("sentinel", tmp_path / "c", aoi, *DATES, **kw)

    # the sources map the area (Planetary Computer layout: signed URLs, baseline 05.00)
    res = predict_area(s2s1, aoi, *DATES, tmp_path / "map.tif", sources=srcs)
    with rasterio.open(res.path) as f:
        assert f.crs.to_epsg() == 32633 and (f.read(1) != 255).mean() > 0.5


@pytest.mark.slow
def test_finetune_with_a_preset_source(stac_env, tmp_path):  # noqa: F811
    """``finetune`` with a ``preset:`` entry in ``sources:`` (Earth Search layout on loopback):
    windows are materialized from the STAC API, the model folder records the source, and the
    model maps the area from the same source."""
    import shapely
    import yaml

    from geolatent.data.window import WGS84, reproject_geometry
    from geolatent.platform.bundle import load_bundle
    from geolatent.platform.predict import predict_area

    # 25 points 200 m apart on the real patch (EPSG:32633, x 465180-466190, y 5079260-5080260;
    # 160 m windows do not overlap): the western part "west", the eastern part "east"
    lines = ["lat,lon,side"]
    for x in np.arange(465250, 466100, 200):
        for y in np.arange(5079350, 5080200, 200):
            p = reproject_geometry(shapely.Point(x, y), "EPSG:32633", WGS84)
            lines.append(f"{p.y},{p.x},{'west' if x < 465685 else 'east'}")
    (tmp_path / "points.csv").write_text("\n".join(lines) + "\n")
    source = {"preset": "earth-search", "url": stac_env["es"], "cache_dir": "cache",
              "retries": 2, "backoff_s": 0.05}
    cfg = {
        "task": "classification",
        "encoder": "nano",
        "labels": {"path": "points.csv", "field": "side"},
        "sources": [source],
        "windows": {"size_px": 16, "start": "2015-07-01", "end": "2015-10-01"},
        "split": {"cell_size_m": 200, "train": 0.6, "val": 0.4, "test": 0.0, "seed": 1},
        "train": {"epochs": 2, "batch_size": 8, "patch_size": 8, "lr": 2e-3, "head_hidden": 16},
        "output": "model",
    }
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(cfg))
    stac_env["server"].clear_log()
    r = CliRunner().invoke(app, ["finetune", "--config", str(tmp_path / "ft.yaml")])
    assert r.exit_code == 0, r.output
    assert any(q.path.endswith(".tif") for q in stac_env["server"].requests())
    assert list((tmp_path / "cache").rglob("*.npz")), "asset windows go to the config's cache"
    fm = load_bundle(tmp_path / "model")
    assert fm.inputs.modalities == [S2]
    assert fm.sources[0]["type"] == "stac_api" and fm.sources[0]["url"] == stac_env["es"]
    assert set(fm.classes.names) == {"east", "west"} and "val" in fm.metrics

    # the recorded source maps the area (no --sources needed)
    area = reproject_geometry(shapely.box(465300, 5079380, 466070, 5080140), "EPSG:32633",
                              WGS84)
    res = predict_area(fm, area, *DATES, tmp_path / "map.tif")
    with rasterio.open(res.path) as f:
        assert (f.read(1) != 255).mean() > 0.5


@pytest.mark.slow
def test_embed_imagery_interrupted_resumes_its_tiles(stac_env, nano, tmp_path,  # noqa: F811
                                                     monkeypatch):
    """An ``embed --imagery`` run stopped after some tiles: the rerun fetches the composites
    again from the cache with the same bytes and mtimes, so the finished tiles are kept; the
    result equals an uninterrupted run."""
    from geolatent.inference.cli import _imagery_inputs

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    aoi = write_aoi(tmp_path)
    out = tmp_path / "emb.tif"

    def inputs():
        return _imagery_inputs(stac_env["es"], aoi, *DATES, ["sentinel-2-l2a"], out, {}, None,
                               None)

    class Stop(Exception):
        pass

    def stop(done, total):
        if done >= 2:
            raise Stop

    kw = dict(tile_size=64, batch_size=1)
    with pytest.raises(Stop):
        embed_geotiffs(nano, inputs(), out, progress=stop, **kw)
    mtimes = {p: p.stat().st_mtime_ns for p in (work_dir_for(out) / "imagery").glob("*.tif")}
    again = inputs()
    assert {ri.path: ri.path.stat().st_mtime_ns for ris in again.values() for ri in ris} == mtimes
    # an uninterrupted run on copies of the composites (the originals go with OUT.work)
    copies = tmp_path / "ref-in"
    copies.mkdir()
    ref_inputs = {m: [RasterInput(Path(shutil.copy(ri.path, copies)), ri.dates) for ri in ris]
                  for m, ris in again.items()}
    ref = embed_geotiffs(nano, ref_inputs, tmp_path / "ref.tif", **kw)
    seen: list[int] = []
    embed_geotiffs(nano, again, out, progress=lambda done, total: seen.append(done), **kw)
    assert seen[0] >= 2, "the finished tiles are kept"
    np.testing.assert_array_equal(read_embedding(out), read_embedding(ref.path))
