"""``geolatent embed --imagery``: inputs fetched from a STAC API over an area, against the
loopback STAC API + range file server of the data tests (``tests/data/stac_env.py``) serving
real Sentinel-2 scenes."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from data.stac_env import stac_env, write_aoi  # noqa: F401 (a fixture)
from typer.testing import CliRunner

from geolatent.cli import app
from geolatent.data.imagery import composite_inputs, fetch_composites, imagery_source
from geolatent.data.run import work_dir_for
from geolatent.inference.embed_rasters import embed_geotiffs
from geolatent.inference.raster_io import RasterInput

from .conftest import flat, read_embedding

DATES = ("2015-07-01", "2015-10-01")


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
