"""``geolatent archive build --imagery``: imagery from a STAC API through the STAC layer's
``imagery_sources``, against the STAC tests' own loopback servers (``rustac serve`` as the STAC
API, a range-request file server for the COGs) serving the real eo-learn Sentinel-2 scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from data.helpers import REAL
from data.stac_fixtures import build_s2, write_items
from data.stac_servers import AssetServer, StacApi, rustac_binary
from typer.testing import CliRunner

import geolatent.archive as ga
from geolatent.archive.build import archive_imagery
from geolatent.archive.quantize import decode
from geolatent.cli import app

# lon/lat inside the real patch (EPSG:32633, 1 km x 1 km near 14.55 E 45.87 N)
AOI = {"type": "Polygon", "coordinates": [[[14.5530, 45.8660], [14.5600, 45.8660],
                                           [14.5600, 45.8725], [14.5530, 45.8725],
                                           [14.5530, 45.8660]]]}


@pytest.fixture(scope="module")
def stac(tmp_path_factory):
    """The Earth Search layout of the real scenes behind a loopback STAC API."""
    if not (REAL / "eolearn").exists():
        pytest.skip(f"real test data not found at {REAL} (needs ../shared/data/real)")
    if rustac_binary() is None:
        pytest.skip("rustac is not installed (pip install rustac)")
    root = tmp_path_factory.mktemp("stac")
    server = AssetServer(root / "assets")
    items = build_s2(REAL, root / "assets", server.url)["earth-search"]
    api = StacApi([write_items(items, root / "es.json")], root)
    with server:
        yield {"url": api.url, "server": server}
    api.stop()


def _build(fixture_dir: Path, aoi: Path, out: Path, *extra: str, start: str = "2015-07-01",
           end: str = "2015-09-30"):
    return CliRunner().invoke(app, [
        "archive", "build", "--model", str(fixture_dir), "--aoi", str(aoi), "--start", start,
        "--end", end, "--out", str(out), "--dims", "64", *extra])  # fmt: skip


@pytest.mark.slow
def test_imagery_flag_builds_the_archive_from_a_stac_api(stac, fixture_dir, tmp_path,
                                                         monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the STAC window cache
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps(AOI))
    server: AssetServer = stac["server"]
    server.clear_log()
    a = tmp_path / "imagery.zarr"
    r = _build(fixture_dir, aoi, a, "--imagery", stac["url"], "--collection", "sentinel-2-l2a")
    assert r.exit_code == 0, r.output
    assert any(q.path.endswith(".tif") for q in server.requests()), "read over HTTP"
    root = zarr.open_group(str(a), mode="r")
    (src,) = root.attrs["geolatent:sources"]
    assert (src["type"], src["url"], src["collections"], src["modality"]) == (
        "stac_api", stac["url"], ["sentinel-2-l2a"], "sentinel2_l2a")
    v, ok = decode(root["zones"]["32633"]["embeddings"][:])
    assert ok.sum() >= 150  # the AOI: ~540 m x 720 m at 40 m
    np.testing.assert_allclose(np.linalg.norm(v[ok], axis=-1), 1.0, atol=1e-5)

    # A preset name: the build's imagery function (what the CLI calls for --imagery) with
    # the preset pointed at the loopback mirror gives the same archive as the preset entry of a
    # --config YAML: --imagery only chooses the sources (collection, asset keys, SCL mask).
    srcs = archive_imagery("earth-search", aoi, "2015-07-01", "2015-09-30",
                           url=stac["url"], cache_dir=tmp_path / "cache1")
    assert [s.config.collections for s in srcs] == [["sentinel-2-l2a"]]
    assert srcs[0].config.cloud_mask is not None  # the preset's SCL mask, not a bare URL's
    b = tmp_path / "preset.zarr"
    ga.build(fixture_dir, aoi, "2015-07-01", "2015-09-30", b, sources=srcs, dims=64)
    cfg = tmp_path / "data.yaml"
    cfg.write_text(yaml.safe_dump({"sources": [{
        "preset": "earth-search", "url": stac["url"], "cache_dir": str(tmp_path / "cache2")}]}))
    c = tmp_path / "config.zarr"
    r = _build(fixture_dir, aoi, c, "--config", str(cfg))
    assert r.exit_code == 0, r.output
    pb, pc = (zarr.open_group(str(x), mode="r") for x in (b, c))
    assert pb.attrs["geolatent:sources"] == pc.attrs["geolatent:sources"]
    for name in ("embeddings", "overview_rgb"):
        np.testing.assert_array_equal(pb["zones"]["32633"][name][:], pc["zones"]["32633"][name][:])

    # dates without any scene: a clear error before any work, nothing created
    none = tmp_path / "none.zarr"
    r = _build(fixture_dir, aoi, none, "--imagery", stac["url"], "--collection", "sentinel-2-l2a",
               start="2019-07-01", end="2019-09-30")
    assert r.exit_code == 2 and "--imagery" in r.output and "no scene of" in r.output, r.output
    assert not none.exists()
