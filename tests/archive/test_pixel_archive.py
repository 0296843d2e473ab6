"""Per-pixel archives of a model with location tokens (the v1.3 mini fixture: random weights in
the v1.3 architecture), and ranks started by the real ``torchrun``.

The area is the top 32 rows of the sample scene: two 64 px build tiles (one per rank), about
3000 pixels of 10 m.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import shapely
import torch
import zarr
from archive_fixtures import ORIGIN, WIDTH, write_sample
from shapely.geometry import box, mapping
from shared_data import SHARED

import geolatent.archive as ga
from geolatent.archive.quantize import decode, unit
from geolatent.archive.store import ArchiveError
from geolatent.data.window import WGS84, reproject_geometry

REPO = Path(__file__).resolve().parents[2]
START, END = "2024-01-01", "2024-03-31"
ROWS = 32


def _v13() -> Path:
    path = SHARED / "fixtures" / "olmoearth_v1_3_mini"
    if not (path / "weights.pth").exists():
        pytest.skip(f"v1.3 fixture not found at {path} (set GEOLATENT_SHARED)")
    return path


@pytest.fixture(scope="module")
def strip(tmp_path_factory):
    """The sample scene, and an area of its top 32 rows (two 64 px tiles)."""
    s = write_sample(tmp_path_factory.mktemp("pixel"))
    x0, y1 = ORIGIN
    area = box(x0 + 5, y1 - ROWS * 10 + 5, x0 + WIDTH * 10 - 5, y1 - 5)
    ll = reproject_geometry(shapely.segmentize(area, 20), s["scene"].crs.to_string(), WGS84)
    aoi = s["dir"] / "strip.geojson"
    aoi.write_text(json.dumps(mapping(ll)))
    return dict(s, aoi=aoi)


def _env() -> dict:
    # one thread per process, as torchrun sets it, so every build here computes the same bits
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def _build_args(model: Path, strip: dict, out: Path) -> list[str]:
    return ["archive", "build", "--model", str(model), "--aoi", str(strip["aoi"]),
            "--start", START, "--end", END, "--config", str(strip["config"]), "--out", str(out),
            "--dims", "32"]  # fmt: skip


@pytest.fixture(scope="module")
def pixel_built(strip):
    """The per-pixel archive built by one process through the CLI (int8, the 32-d student)."""
    out = strip["dir"] / "pixel.zarr"
    r = subprocess.run([sys.executable, "-m", "geolatent.cli", *_build_args(_v13(), strip, out)],
                       env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    print("\n" + r.stdout)
    return out


@pytest.mark.slow
def test_per_pixel_archive_layout_and_attributes(pixel_built):
    root = zarr.open_group(str(pixel_built), mode="r")
    a = root.attrs
    assert a["geoemb:pixel_size_m"] == 10.0 and a["geoemb:patch_size"] == 4
    v = a["geoemb:vectors"]
    assert (v["source"], v["per_pixel"], v["cell_pixels"], v["resolution_m"]) == \
        ("location_embedding", True, 1, 10.0)
    assert "not resampled" in v["method"]
    assert a["geoemb:reduction"]["method"] == "matryoshka_prefix"
    assert a["geoemb:dims"] == 32 and a["geoemb:matryoshka_prefixes"] == [16, 32]
    assert a["geolatent:build"]["location_patch_size"] == 1
    assert a["geoemb:dequantization_cosine"]["int8"] > 0.9999
    assert "projection" not in root  # a Matryoshka prefix has no PCA to record
    zone = root["zones"]["32633"]
    assert zone.attrs["geoemb:transform"][0] == 10.0 and zone.attrs["geoemb:transform"][4] == -10.0
    emb = zone["embeddings"]
    # one chunk per 64 px build tile holding every dim, as for patch archives
    assert emb.shape == (64, 128, 32) and emb.chunks == (64, 64, 32) and emb.dtype == np.int8
    _, ok = decode(emb[:])
    # every 10 m pixel whose centre is in the area (the edges of its lon/lat outline cut a few)
    assert ok.sum() == a["geolatent:vectors"] and 0.97 * ROWS * WIDTH < ok.sum() <= ROWS * WIDTH
    assert zone["overview_rgb"].shape == (3, 64, 128)


@pytest.mark.slow
def test_per_pixel_vectors_are_the_models_own(pixel_built, strip):
    """Each stored vector is the model's location embedding of that pixel (renormalized, int8),
    and pixels of one 4 x 4 patch get different vectors: computed per pixel, not repeated."""
    import geolatent
    from geolatent.archive.build import plan_zones, time_range_of
    from geolatent.archive.tile import materialize_tile
    from geolatent.data.sources import open_sources
    from geolatent.data.window import tile_windows
    from geolatent.model.embed import embed
    from geolatent.platform.area import read_area

    model = geolatent.load_model(_v13())
    area = read_area(strip["aoi"])
    windows = tile_windows(area, time_range=time_range_of(START, END), tile_size=64)
    grid, ws = plan_zones(area, windows, 64, 1)["EPSG:32633"]
    w = ws[0]
    mw = materialize_tile((w, open_sources(strip["sources"]), list(model.config.modalities)))
    with torch.inference_mode():
        out = embed(model, {m: a[None] for m, a in mw["arrays"].items()}, mw["timestamps"], 4,
                    location_patch_size=1)
    direct = out.location_embedding[0].numpy()  # [64, 64, 32]
    tr, tc = grid.tile_of(*w.pixel_bounds[:2])
    stored = zarr.open_group(str(pixel_built), mode="r")["zones"]["32633"]["embeddings"]
    got, ok = decode(stored[tr * 64:(tr + 1) * 64, tc * 64:(tc + 1) * 64])
    cos = (got * unit(direct)).sum(-1)[ok]
    assert ok.sum() > 1000 and cos.min() > 0.999, cos.min()
    patch = direct[32:36, 8:12].reshape(16, -1)  # one 4 x 4 patch inside the area
    assert np.abs(patch - patch[0]).max() > 1e-6


@pytest.mark.slow
def test_search_on_a_per_pixel_archive(pixel_built):
    """Search by example on 10 m pixels: the result is the exact cosine ranking of the decoded
    archive, and each match is a 10 m pixel."""
    arch = ga.open(pixel_built)
    zone = arch.zones[0]
    emb, ok = decode(zarr.open_group(str(pixel_built), mode="r")["zones"]["32633"]["embeddings"][:])
    rr, cc = np.nonzero(ok)
    pos = [(rr[i], cc[i]) for i in (10, 1500, 2900)]
    xy = [zone.transform @ (c + 0.5, r + 0.5) for r, c in pos]
    from pyproj import Transformer

    to_ll = Transformer.from_crs(zone.crs, "OGC:CRS84", always_xy=True)
    pts = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {},
         "geometry": {"type": "Point", "coordinates": list(to_ll.transform(x, y))}}
        for x, y in xy]}  # fmt: skip
    res = arch.search(pts, top=10, method="exact")
    q = unit(np.mean([emb[r, c] for r, c in pos], axis=0))
    score = np.where(ok, emb @ q, -np.inf)
    for r, c in pos:
        score[r, c] = -np.inf  # the examples are left out of the results
    want = np.sort(score.ravel())[::-1][:10]  # compared by score: vectors may tie
    got = np.array([m.score for m in res.matches])
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got, [score[m.row, m.col] for m in res.matches], atol=1e-5)
    poly = shapely.geometry.shape(res.to_geojson("polygon")["features"][0]["geometry"])
    to_crs = Transformer.from_crs("OGC:CRS84", zone.crs, always_xy=True)
    back = shapely.transform(poly, lambda c: np.column_stack(to_crs.transform(c[:, 0], c[:, 1])))
    assert back.area == pytest.approx(100.0, rel=1e-3)  # a 10 m pixel


@pytest.mark.slow
def test_per_pixel_build_resumes(pixel_built, strip, tmp_path):
    """A build stopped after one tile resumes with the other and publishes the same arrays."""
    out = tmp_path / "resumed.zarr"

    class Stop(Exception):
        pass

    def stop_after_one(done: int, total: int) -> None:
        if done == 1:
            raise Stop

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference was built with one thread
    try:
        with pytest.raises(Stop):
            ga.build(_v13(), strip["aoi"], START, END, out, config=strip["config"], dims=32,
                     progress=stop_after_one)
        assert not (out / "zarr.json").exists()
        r = ga.build(_v13(), strip["aoi"], START, END, out, config=strip["config"], dims=32)
    finally:
        torch.set_num_threads(threads)
    assert (r.tiles_resumed, r.tiles_run) == (1, 1)
    a, b = (zarr.open_group(str(p), mode="r")["zones"]["32633"] for p in (pixel_built, out))
    np.testing.assert_array_equal(a["embeddings"][:], b["embeddings"][:])
    # the same settings at another cell size into the finished archive are refused
    with pytest.raises(ArchiveError, match=r"--location-patch-size: archive has 1, asked 2"):
        ga.build(_v13(), strip["aoi"], START, END, out, config=strip["config"], dims=32,
                 location_patch_size=2)


@pytest.mark.slow
def test_options_a_model_cannot_serve_say_what_to_change(strip, fixture_dir, tmp_path):
    from typer.testing import CliRunner

    from geolatent.cli import app

    cases = [
        (fixture_dir, ["--location-patch-size", "1"], "--location-patch-size needs a model with "
                                                      "location tokens"),
        (fixture_dir, ["--dims", "256"], "--dims must be 128 or 64"),
        (_v13(), ["--dims", "128"], "Matryoshka-trained at the widths [32, 16]; give one of them"),
        (_v13(), ["--dims", "32", "--location-patch-size", "3"],
         "--location-patch-size 3 must be a positive divisor of --patch-size 4"),
    ]
    for model, extra, msg in cases:
        r = CliRunner().invoke(app, _build_args(model, strip, tmp_path / "x.zarr")[:-2] + extra)
        assert r.exit_code == 2 and msg in r.output, (extra, r.output)
    assert not (tmp_path / "x.zarr").exists()


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
def test_torchrun_takes_start_for_its_own_option_without_the_separator(strip, tmp_path):
    """Why the separator is needed: torchrun's argparse abbreviates options, also after the
    script, so ``--start`` is read as torchrun's ``--start-method`` before any rank runs."""
    r = subprocess.run([*_torchrun(), "--standalone", "--nproc-per-node", "2", "-m",
                        "geolatent.cli", *_build_args(_v13(), strip, tmp_path / "t.zarr")],
                       env=_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "ambiguous option: --start could match --start-method" in r.stderr
    assert not (tmp_path / "t.zarr").exists()


@pytest.mark.slow
def test_torchrun_two_ranks_build_the_single_process_archive(pixel_built, strip, tmp_path):
    """The documented invocation, ``torchrun ... -m geolatent.cli -- archive build --start ...``,
    with 2 CPU ranks (one tile each) publishes the archive one process builds."""
    out = tmp_path / "ranks.zarr"
    r = subprocess.run([*_torchrun(), "--standalone", "--nproc-per-node", "2", "-m",
                        "geolatent.cli", "--", *_build_args(_v13(), strip, out)],
                       env=_env(), capture_output=True, text=True, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    print("\n" + r.stdout)
    assert "rank 1: 1 tiles run, 0 resumed" in r.stdout
    assert "2 tiles run" not in r.stdout  # rank 0 embedded one tile, not both
    a, b = (zarr.open_group(str(p), mode="r") for p in (pixel_built, out))
    for name in ("embeddings", "overview_rgb", "tiles_planned"):
        np.testing.assert_array_equal(a["zones"]["32633"][name][:], b["zones"]["32633"][name][:])
    assert dict(a.attrs) == dict(b.attrs)
    assert sorted(p.name for p in out.iterdir()) == [".geolatent-archive", "zarr.json", "zones"]
