"""STAC API sources against real servers on loopback: ``rustac serve`` (a STAC API) and a
range-request file server with fault injection and a SAS token endpoint (``stac_servers``),
with real Sentinel-2 / Sentinel-1 scenes as COGs (``stac_fixtures``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geolatent.data.config import CloudMaskConfig, DataConfig
from geolatent.data.imagery import fetch_composites, imagery_source, search_scenes
from geolatent.data.remote import WindowCache, clear_http_cache
from geolatent.data.stac_presets import preset_source

from .helpers import REAL
from .stac_env import write_aoi
from .stac_fixtures import L1C_ORDER, PC_ACCOUNT, S2_DATES, s2_arrays
from .stac_servers import AssetServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(stac_env):  # the loopback STAC setup (tests/data/stac_env.py, via conftest.py)
    return stac_env


_aoi = write_aoi


def _fast(**kw):
    return dict(retries=3, backoff_s=0.05, timeout_s=10, **kw)


def _read(path: Path) -> tuple[np.ndarray, rasterio.Affine]:
    with rasterio.open(path) as src:
        return src.read(), src.transform


def _expected(month: int, transform) -> np.ndarray:
    """Cloud-masked median of the month's real scenes, read straight from the arrays,
    registry band order ``[C, H, W]`` on the output grid."""
    from geolatent.modalities import MODALITIES

    dn, cloud = s2_arrays(REAL)
    ks = [k for k, d in enumerate(S2_DATES) if int(d[5:7]) == month]
    stack = dn.astype(np.float32)[ks]
    stack[np.broadcast_to(cloud[ks][:, None], stack.shape)] = np.nan
    order = [L1C_ORDER.index(b) for b in MODALITIES["sentinel2_l2a"].bands]
    with np.errstate(all="ignore"):
        med = np.nanmedian(stack[:, order], axis=0)
    # the output grid's offset inside the patch (both on the 10 m grid)
    col = round((transform.c - 465180.0) / 10)
    row = round((5080260.0 - transform.f) / 10)
    return med, (row, col)


def _check_composite(out: Path, month: int) -> None:
    data, transform = _read(out / f"sentinel2_l2a_2015-{month:02d}.tif")
    med, (row, col) = _expected(month, transform)
    h, w = data.shape[1:]
    # the output covers whole tiles; compare where the patch is
    r0, c0 = max(0, -row), max(0, -col)
    sub = data[:, r0:min(h, med.shape[1] - row), c0:min(w, med.shape[2] - col)]
    ref = med[:, row + r0:row + r0 + sub.shape[1], col + c0:col + c0 + sub.shape[2]]
    assert sub.size > 0
    ref = np.where(np.isnan(ref), -99999, ref)
    np.testing.assert_allclose(sub, ref, atol=0.5)
    assert (sub != -99999).mean() > 0.3


# -- presets and config (no server) -------------------------------------------------------------
def test_presets_expand_and_landsat_level2_is_a_clear_error():
    es = preset_source({"preset": "earth-search"})
    assert es["collections"] == ["sentinel-2-l2a"] and es["assets"]["B8A"] == "nir08"
    assert es["cloud_mask"] == {"band": "scl", "kind": "scl"} and es["harmonize"]
    s1 = preset_source({"preset": "planetary-computer", "collection": "sentinel-1-rtc"})
    assert s1["units"] == "linear" and s1["query"] == {"sar:instrument_mode": {"eq": "IW"}}
    assert s1["signing"] == "planetary-computer"
    for preset in ("earth-search", "planetary-computer"):
        with pytest.raises(ValueError, match="Level-1 DN with 11 bands"):
            preset_source({"preset": preset, "collection": "landsat-c2-l2"})
    with pytest.raises(ValueError, match="known presets"):
        preset_source({"preset": "nope"})
    with pytest.raises(ValueError, match="has no collection 'x'"):
        preset_source({"preset": "earth-search", "collection": "x"})
    # a preset: entry in a data config is the stac_api source it stands for
    cfg = DataConfig.model_validate({
        "output_dir": "o", "area": {"bbox": [0, 0, 1, 1]}, "year": 2020,
        "sources": [{"preset": "planetary-computer", "collection": "esa-worldcover"}]})
    assert cfg.sources[0].type == "stac_api" and cfg.sources[0].modality == "worldcover"
    with pytest.raises(ValueError, match="also give --collection"):
        imagery_source("http://127.0.0.1:1/api")
    with pytest.raises(ValueError, match="unknown imagery"):
        imagery_source("sentinel")
    with pytest.raises(ValueError, match="max_cloud: Input should be less than or equal to 100"):
        imagery_source("earth-search", max_cloud=200)


def test_landsat_qa_pixel_bits_mask_clouds():
    from geolatent.data.composite import cloud_invalid

    qa = np.array([[21824, 22280], [1, 55052]], dtype=np.float32)  # clear, cloud, fill, cloud
    bad = cloud_invalid(qa, CloudMaskConfig(band="qa_pixel", kind="bits"))
    assert bad.tolist() == [[False, True], [True, True]]


def test_window_cache_is_bounded(tmp_path):
    cache = WindowCache(tmp_path, max_mb=0.05)  # ~52 kB: holds one 40 kB entry
    a = {"b": np.zeros((100, 100), np.float32)}
    cache.put("one", a)
    time.sleep(0.01)
    cache.put("two", a)
    assert cache.get("one") is None and cache.get("two") is not None


def test_scene_choice_per_month_prefers_covering_then_least_cloudy():
    from datetime import datetime

    from geolatent.data.sources import BandAsset, Scene
    from geolatent.data.stac_api import choose_scenes

    def scene(i, day, cloud, bbox=(0.0, 0.0, 1.0, 1.0)):
        return Scene(f"s{i}", datetime(2020, 5 + day // 40, 1 + day % 28),
                     {"B04": BandAsset("x")}, bbox, cloud_cover=cloud)

    scenes = [scene(0, 1, 50.0), scene(1, 2, 5.0), scene(2, 3, 1.0, (0.0, 0.0, 0.5, 1.0)),
              scene(3, 4, 20.0), scene(4, 45, 90.0)]
    kept = choose_scenes(scenes, (0.1, 0.1, 0.9, 0.9), per_month=2)
    # May: the partial scene (1 %) loses to covering ones; June keeps its only scene
    assert [s.id for s in kept] == ["s1", "s3", "s4"]


# -- search -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_search_lists_scenes_client_side_query_and_footprints(env, tmp_path):
    aoi = _aoi(tmp_path)
    cfg = imagery_source("earth-search", url=env["es"], cache_dir=tmp_path / "c")
    scenes = search_scenes(cfg, aoi, "2015-07-01", "2015-10-01")
    assert [s.datetime[:10] for s in scenes] == sorted(d[:10] for d in S2_DATES)
    assert all(s.aoi_coverage > 0.999 for s in scenes)
    clouds = sorted(s.cloud_cover for s in scenes)
    limit = (clouds[2] + clouds[3]) / 2  # the real CLM: 0, 0, 0, 100, 100 %
    # rustac's memory backend lacks the query extension: the filter runs on the client
    few = search_scenes(imagery_source("earth-search", url=env["es"], max_cloud=limit,
                                       cache_dir=tmp_path / "c"), aoi, "2015-07-01", "2015-10-01")
    assert sorted(s.cloud_cover for s in few) == clouds[:3]
    out = tmp_path / "fp.geojson"
    r = subprocess.run(
        [sys.executable, "-m", "geolatent.cli", "imagery", "search", "--aoi", str(aoi),
         "--start", "2015-07-01", "--end", "2015-10-01", "--source", env["es"],
         "--collection", "sentinel-2-l2a", "--footprints", str(out), "--cache",
         str(tmp_path / "c")],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "COLUMNS": "200"},
        timeout=120)
    assert r.returncode == 0, r.stderr
    assert "S2A_33TVL_20150820_0_L2A" in r.stdout and "5 scenes" in r.stdout
    assert len(json.loads(out.read_text())["features"]) == 5


# -- fetch: composites equal the direct read ----------------------------------------------------
@pytest.mark.slow
def test_fetch_composites_equal_direct_read_both_layouts(env, tmp_path):
    """Earth Search (baseline 02.01) and Planetary Computer (05.00: DN + 1000, signed URLs):
    after harmonization both equal the cloud-masked median of the real arrays."""
    aoi = _aoi(tmp_path, {"type": "Polygon", "coordinates": [[[14.5520, 45.8660],
                          [14.5640, 45.8660], [14.5640, 45.8730], [14.5520, 45.8730],
                          [14.5520, 45.8660]]]})  # across two tiles
    for name, url in (("earth-search", env["es"]), ("planetary-computer", env["pc"])):
        out = tmp_path / name
        src = imagery_source(name, url=url, cache_dir=tmp_path / f"cache-{name}", **_fast())
        res = fetch_composites([src], aoi, "2015-07-01", "2015-10-01", out)
        assert res.windows == 2 and not any(res.report.values()), res.report
        assert sorted(Path(f).name for f in res.files) == [
            "sentinel2_l2a_2015-07.tif", "sentinel2_l2a_2015-08.tif", "sentinel2_l2a_2015-09.tif"]
        for month in (7, 8, 9):
            _check_composite(out, month)
        with rasterio.open(res.files[0]) as f:
            assert f.crs.to_epsg() == 32633 and f.descriptions[0] == "B02" and f.count == 12
    a, _ = _read(tmp_path / "earth-search" / "sentinel2_l2a_2015-08.tif")
    b, _ = _read(tmp_path / "planetary-computer" / "sentinel2_l2a_2015-08.tif")
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sentinel1_rtc_linear_becomes_db(env, tmp_path):
    real = REAL / "s1_spatialist" / "S1A__IW___D_20170309T054356_VV_grd_mli_geo_norm_db.tif"
    with rasterio.open(real) as f:
        b = f.bounds
        db = f.read(1)
    from rasterio.warp import transform_bounds

    x0, y0, x1, y1 = transform_bounds(f.crs, "EPSG:4326", *b)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    geom = {"type": "Polygon", "coordinates": [[[cx - .01, cy - .01], [cx + .01, cy - .01],
            [cx + .01, cy + .01], [cx - .01, cy + .01], [cx - .01, cy - .01]]]}
    src = imagery_source("planetary-computer", collection="sentinel-1-rtc", url=env["pc"],
                         assets={"vv": "vv"}, cache_dir=tmp_path / "c", resampling="nearest",
                         **_fast())
    res = fetch_composites([src], _aoi(tmp_path, geom), "2017-03-01", "2017-04-01",
                           tmp_path / "out", resolution=20.0, crs=str(f.crs))
    assert [Path(p).name for p in res.files] == ["sentinel1_2017-03.tif"]
    with rasterio.open(res.files[0]) as out:
        vv = out.read(1)
        t = out.transform
    col, row = round((t.c - b.left) / 20), round((b.top - t.f) / 20)
    ok = vv != -99999
    rr, cc = np.nonzero(ok)
    np.testing.assert_allclose(vv[ok], db[rr + row, cc + col], atol=1e-3)
    assert ok.sum() > 1000


# -- faults -------------------------------------------------------------------------------------
def _es_item_hrefs(env, item_index: int) -> dict[str, str]:
    item = env["s2"]["earth-search"][item_index]
    return {k: a["href"].split("/", 3)[3] for k, a in item["assets"].items()}


@pytest.mark.slow
def test_faults_retried_or_named_in_the_report_and_the_rest_done(env, tmp_path):
    server: AssetServer = env["server"]
    aug20 = _es_item_hrefs(env, 0)  # 2015-08-20
    aug30 = _es_item_hrefs(env, 3)  # 2015-08-30
    jul11 = _es_item_hrefs(env, 4)  # 2015-07-11
    sep09 = _es_item_hrefs(env, 2)  # 2015-09-09
    clear_http_cache()  # GDAL keeps remote blocks per process: earlier tests read these files
    server.inject(aug20["red"], "500")  # then success
    server.inject(aug20["nir"], "429:1", "429:1")  # 429 with Retry-After: 1 s
    server.inject(aug30["green"], "stall:4")  # no answer: the 2 s timeout, then a retry
    server.inject(aug30["blue"], "drop")  # connection dropped mid-body... of the header read
    # a truncated COG: its header survives, its pixel tiles do not
    trunc = env["root"] / "assets" / jul11["swir16"]
    keep = trunc.read_bytes()
    trunc.write_bytes(keep[: len(keep) // 2])
    missing = env["root"] / "assets" / sep09["green"]
    moved = missing.with_suffix(".moved")
    missing.rename(moved)
    server.clear_log()
    try:
        src = imagery_source("earth-search", url=env["es"], cache_dir=tmp_path / "c",
                             **_fast() | {"timeout_s": 2})
        res = fetch_composites([src], _aoi(tmp_path), "2015-07-01", "2015-10-01",
                               tmp_path / "out")
    finally:
        trunc.write_bytes(keep)
        moved.rename(missing)
    problems = [p for ps in res.report.values() for p in ps]
    assert len(problems) == 2, "\n".join(problems)
    assert any(jul11["swir16"] in p for p in problems)
    assert any(sep09["green"] in p and "404" in p for p in problems)
    # the 500, 429 and dropped connection were retried: those scenes are in the composite
    reqs = server.requests(aug20["nir"])
    assert [r.status for r in reqs[:2]] == [429, 429]
    assert reqs[2].time - reqs[1].time >= 0.95  # waited for Retry-After
    assert [r.status for r in server.requests(aug20["red"])][:2] == [500, 200]
    stalled = server.requests(aug30["green"])
    assert any(r.status in (200, 206) for r in stalled)  # answered after the timed-out try
    # July: its clear scene is the truncated one (the other is all cloud in the real mask);
    # September: its only scene lost an asset. Both months are missing, August is complete.
    assert [Path(f).name for f in res.files] == ["sentinel2_l2a_2015-08.tif"]
    assert res.missing_months == ["sentinel2_l2a_2015-07", "sentinel2_l2a_2015-09"]
    _check_composite(tmp_path / "out", 8)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["missing"] == res.missing_months


@pytest.mark.slow
def test_expired_signature_is_re_signed(env, tmp_path):
    server: AssetServer = env["server"]
    src = imagery_source("planetary-computer", url=env["pc"], cache_dir=tmp_path / "c",
                         **_fast())
    clear_http_cache()  # GDAL keeps remote blocks per process: earlier tests read these files
    res1 = fetch_composites([src], _aoi(tmp_path), "2015-07-01", "2015-08-01", tmp_path / "a")
    assert not any(res1.report.values()) and server.state.issued_tokens
    before = len(server.state.issued_tokens)
    server.revoke_tokens()  # every token the client holds now answers 403
    server.clear_log()
    res2 = fetch_composites([src], _aoi(tmp_path), "2015-08-01", "2015-09-01", tmp_path / "b")
    assert not any(res2.report.values()), res2.report
    assert len(server.state.issued_tokens) == before + 1  # re-signed once, then reused
    statuses = [r.status for r in server.requests(PC_ACCOUNT)]
    assert 403 in statuses and statuses[-1] in (200, 206)
    _check_composite(tmp_path / "b", 8)


# -- resume and offline -------------------------------------------------------------------------
@pytest.mark.slow
def test_kill9_mid_fetch_resumes_identically_and_fetches_nothing_twice(env, tmp_path):
    server: AssetServer = env["server"]
    aoi = _aoi(tmp_path)
    cfg_env = {**os.environ, "COLUMNS": "200"}

    def cmd(out, cache):
        return [sys.executable, "-m", "geolatent.cli", "imagery", "fetch", "--aoi", str(aoi),
                "--start", "2015-07-01", "--end", "2015-10-01", "--source", env["es"],
                "--collection", "sentinel-2-l2a", "--out", str(out), "--cache", str(cache)]

    # an uninterrupted reference run
    server.clear_log()
    ref = subprocess.run(cmd(tmp_path / "ref", tmp_path / "c0"), capture_output=True,
                         text=True, cwd=REPO, env=cfg_env, timeout=300)
    assert ref.returncode == 0, ref.stderr + ref.stdout
    ref_paths = [r.path for r in server.requests() if r.path.endswith(".tif")]
    # a plain STAC API URL: assets mapped to all 12 bands by their eo:bands names
    a, _ = _read(tmp_path / "ref" / "sentinel2_l2a_2015-09.tif")
    assert all((a[b] != -99999).any() for b in range(12))

    server.state.delay_s = 0.02  # a slower link, so the kill lands mid-fetch
    server.clear_log()
    proc = subprocess.Popen(cmd(tmp_path / "out", tmp_path / "c"), cwd=REPO, env=cfg_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache_dir = tmp_path / "c" / "windows"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(cache_dir.glob("*.npz"))) < 8:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {r.path for r in server.requests() if r.path.endswith(".tif")}
    done_first = len(list(cache_dir.glob("*.npz")))
    assert 8 <= done_first < len(set(ref_paths)), "the kill must land mid-fetch"
    server.state.delay_s = 0.0
    server.clear_log()
    again = subprocess.run(cmd(tmp_path / "out", tmp_path / "c"), capture_output=True,
                           text=True, cwd=REPO, env=cfg_env, timeout=300)
    assert again.returncode == 0, again.stderr + again.stdout
    second = {r.path for r in server.requests() if r.path.endswith(".tif")}
    # one asset per window here: an asset fetched in both runs is the one read when killed
    assert len(first & second) <= 1, sorted(first & second)
    assert first | second == set(ref_paths)
    for name in ("sentinel2_l2a_2015-07.tif", "sentinel2_l2a_2015-08.tif",
                 "sentinel2_l2a_2015-09.tif"):
        a, _ = _read(tmp_path / "ref" / name)
        b, _ = _read(tmp_path / "out" / name)
        np.testing.assert_array_equal(a, b)

    # offline: everything from the cache, no request at all
    server.clear_log()
    off = subprocess.run(cmd(tmp_path / "off", tmp_path / "c") + ["--offline"],
                         capture_output=True, text=True, cwd=REPO, env=cfg_env, timeout=300)
    assert off.returncode == 0, off.stderr + off.stdout
    assert server.requests() == []
    # offline with an empty cache says what is missing
    off2 = subprocess.run(cmd(tmp_path / "off2", tmp_path / "empty") + ["--offline"],
                          capture_output=True, text=True, cwd=REPO, env=cfg_env, timeout=300)
    assert off2.returncode == 1 and "no cached search" in off2.stdout


# -- files source: band names from descriptions; a glob matching nothing --------------------------
def test_files_source_bands_from_descriptions_and_empty_glob(tmp_path):
    from geolatent.data.config import FileSourceConfig
    from geolatent.data.sources import open_file_source

    from .helpers import write_raster

    data = np.full((2, 8, 8), 1000, np.uint16)
    p = write_raster(tmp_path / "s2_20200105.tif", data)
    with rasterio.open(p, "r+") as f:
        f.descriptions = ("B4", "B8")
    cfg = FileSourceConfig(name="s2", modality="sentinel2_l2a", paths=[str(tmp_path / "s2_*.tif")],
                           date_pattern=r"_(\d{8})")
    src = open_file_source(cfg)
    assert src.bands == ("B04", "B08") and not src.problems
    assert src.scenes[0].assets["B08"].band_index == 2
    write_raster(tmp_path / "s2_20200205.tif", data)  # no descriptions
    src = open_file_source(cfg)
    assert len(src.scenes) == 1 and "give 'bands'" in src.problems[0].reason
    none = FileSourceConfig(name="s2", modality="sentinel2_l2a", paths=[str(tmp_path / "x*.tif")],
                            date_pattern=r"_(\d{8})")
    with pytest.raises(ValueError, match=r"matches no file"):
        open_file_source(none)


# -- the presets through data build and --imagery ------------------------------------------------
@pytest.mark.slow
def test_data_build_with_a_preset_source_and_imagery_sources(env, tmp_path):
    from geolatent.data.build import build_dataset
    from geolatent.data.config import load_data_config
    from geolatent.data.h5samples import read_sample
    from geolatent.data.imagery import imagery_sources

    cfg_path = tmp_path / "data.yaml"
    cfg_path.write_text(
        "output_dir: out\n"
        "area: {bbox: [14.5540, 45.8665, 14.5595, 45.8720]}\n"
        "start: 2015-08-01\nend: 2015-09-01\n"
        "tile_size: 128\nsample_size: 128\n"
        "sources:\n"
        f"  - {{preset: earth-search, url: '{env['es']}', cache_dir: cache, retries: 2,"
        " backoff_s: 0.05}\n"
    )
    cfg = load_data_config(cfg_path)
    assert cfg.sources[0].name == "earth-search/sentinel-2-l2a"
    assert cfg.sources[0].cache_dir == str(tmp_path / "cache")
    summary = build_dataset(cfg, executor="serial")
    assert summary.built and not summary.failed and summary.samples_written >= 1
    rec = json.loads((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[0])
    s2 = read_sample(tmp_path / "out" / rec["file"])["arrays"]["sentinel2_l2a"]
    valid = s2[..., 0] != -99999
    assert valid.mean() > 0.2 and 100 < np.median(s2[..., 0][valid]) < 3000  # DN, not 0-1

    aoi = _aoi(tmp_path)
    srcs = imagery_sources("planetary-computer", aoi, "2015-07-01", "2015-10-01",
                           modalities=["sentinel2_l2a", "sentinel1"], url=env["pc"],
                           cache_dir=tmp_path / "c")
    assert [s.config.collections for s in srcs] == [["sentinel-2-l2a"], ["sentinel-1-rtc"]]
    with pytest.raises(ValueError, match="supplies no collection for \\['landsat'\\]"):
        imagery_sources("earth-search", aoi, "2015-07-01", "2015-10-01", modalities=["landsat"],
                        url=env["es"], cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="no scene of"):
        imagery_sources(env["es"], aoi, "2019-07-01", "2019-10-01", collection="sentinel-2-l2a",
                        cache_dir=tmp_path / "c")


@pytest.mark.slow
def test_predict_imagery_flag_errors_are_clear(tmp_path):
    aoi = _aoi(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "geolatent.cli", "predict", "--model", str(tmp_path), "--aoi",
         str(aoi), "--start", "2015-07-01", "--end", "2015-09-30", "-o", str(tmp_path / "m.tif"),
         "--imagery", "sentinel"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "COLUMNS": "200"},
        timeout=120)
    assert r.returncode == 1 and "unknown imagery 'sentinel'" in r.stdout + r.stderr


def test_search_retries_5xx_and_429_of_the_stac_api(env, tmp_path):
    from .stac_servers import FaultProxy

    with FaultProxy(env["es"]) as proxy:
        proxy.faults["/search"] = ["500", "429:1"]
        cfg = imagery_source("earth-search", url=proxy.url, cache_dir=tmp_path / "c",
                             retries=3, backoff_s=0.05)
        t = time.monotonic()
        scenes = search_scenes(cfg, _aoi(tmp_path), "2015-07-01", "2015-10-01")
        assert len(scenes) == 5 and time.monotonic() - t >= 0.95  # waited for Retry-After
        statuses = [s for _, p, s in proxy.log if p.startswith("/search")]
        assert statuses[:3] == [500, 429, 200]
        proxy.faults["/search"] = ["500"] * 5
        bad = imagery_source("earth-search", url=proxy.url, cache_dir=tmp_path / "d",
                             retries=2, backoff_s=0.05)
        from geolatent.data.stac_api import StacSearchError

        with pytest.raises(StacSearchError, match="search of http://127.0.0.1"):
            search_scenes(bad, _aoi(tmp_path), "2015-07-01", "2015-10-01")


@pytest.mark.slow
def test_interrupted_fetch_resumes_from_the_work_store(env, tmp_path):
    """The run driver's resume scheme: finished tiles are kept in ``OUT/.work``, a rerun reads
    them from there (not even a cache lookup) and fetches only the rest; the outputs equal an
    uninterrupted run; a rerun of a finished fetch leaves the published COGs untouched."""
    aoi = _aoi(tmp_path, {"type": "Polygon", "coordinates": [[[14.5520, 45.8660],
                          [14.5640, 45.8660], [14.5640, 45.8730], [14.5520, 45.8730],
                          [14.5520, 45.8660]]]})  # across two tiles
    dates = ("2015-07-01", "2015-10-01")

    def src(cache):
        return imagery_source(env["es"], collection="sentinel-2-l2a", cache_dir=cache, **_fast())

    ref = fetch_composites([src(tmp_path / "c0")], aoi, *dates, tmp_path / "ref")
    assert ref.windows == 2 and ref.fetched_windows > 0

    class Stop(Exception):
        pass

    def stop_after_first(p):
        if p["windows_done"] == 1:
            raise Stop

    out = tmp_path / "out"
    with pytest.raises(Stop):
        fetch_composites([src(tmp_path / "c")], aoi, *dates, out, progress=stop_after_first)
    assert (out / ".work" / "window_000000.json").exists()
    assert not (out / ".work" / "window_000001.json").exists()
    res = fetch_composites([src(tmp_path / "c")], aoi, *dates, out)
    assert res.cached_windows == 0 and 0 < res.fetched_windows < ref.fetched_windows
    assert [Path(f).name for f in res.files] == [Path(f).name for f in ref.files]
    for f in ref.files:
        np.testing.assert_array_equal(_read(Path(f))[0], _read(out / Path(f).name)[0])
    assert not (out / ".work").exists()  # the store goes once the COGs are published

    before = {f: os.stat(f).st_mtime_ns for f in res.files}
    again = fetch_composites([src(tmp_path / "c")], aoi, *dates, out)
    assert again.fetched_windows == 0 and again.cached_windows > 0
    assert {f: os.stat(f).st_mtime_ns for f in again.files} == before

    # one fetch per folder at a time
    from geolatent.data.run import OutputLock, RunLockedError

    with OutputLock(out, "imagery fetch"), pytest.raises(RunLockedError, match="already running"):
        fetch_composites([src(tmp_path / "c")], aoi, *dates, out)
