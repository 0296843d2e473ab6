"""GeoTIFF -> embedding GeoTIFF with the real (random-weight) Nano model."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import rasterio
from affine import Affine

from geolatent.data.io.cog import is_cloud_optimized
from geolatent.data.io.grid import OutputGrid
from geolatent.inference.embed_rasters import embed_geotiffs, plan_embedding
from geolatent.inference.file_inputs import FileInputs, RasterInput
from geolatent.modalities import MODALITIES
from geolatent.platform.predict.plan import embedding_tiling

from .conftest import L1C_BANDS, S1, S2, cosine, read_embedding, write_tif


def direct_feature_map(model, scene, p: int = 4, rows=slice(None), cols=slice(None)) -> np.ndarray:
    """The untiled reference: ``model.embed`` on the in-memory arrays, ``[h, w, D]``."""
    out = model.embed(
        {S2: scene.sentinel2_l2a[None, rows, cols], S1: scene.sentinel1[None, rows, cols]},
        timestamps=scene.timestamps[None],
        patch_size=p,
    )
    return out.feature_map[0].numpy()


# ----------------------------------------------------------------------------- tiling plan

DAY = ("2024-01-01", "2024-01-02")


def embed_tiles(h: int, w: int, p: int, tile: int, ov: int,
                grid: OutputGrid | None = None) -> tuple[list[tuple[int, ...]], object]:
    """The embedding plan of an ``h x w`` px grid as ``(out_row, out_col, out_height,
    out_width, in_row, in_col, in_size)`` per tile (input pixels relative to the grid)."""
    grid = grid or OutputGrid(rasterio.crs.CRS.from_epsg(32633),
                              Affine(10.0, 0.0, 400_000.0, 0.0, -10.0, 5_100_000.0), w, h)
    plan = plan_embedding(grid, p, tile, ov, DAY)
    tiles = []
    for t in plan.tiles:
        c0, r0, c1, r1 = t.core
        (row,), (col,) = (np.unique(o) for o in plan.crop_origins(t))  # one crop per tile
        tiles.append(((r0 - ov) // p, (c0 - ov) // p, (r1 - r0) // p, (c1 - c0) // p,
                      int(row) - ov, int(col) - ov, plan.crop))
    return tiles, plan


@pytest.mark.parametrize(
    "h,w,p,tile,ov", [(32, 32, 4, 8, 4), (101, 100, 4, 48, 8), (30, 27, 2, 6, 0)]
)
def test_plan_covers_output_once(h: int, w: int, p: int, tile: int, ov: int) -> None:
    tiles, plan = embed_tiles(h, w, p, tile, ov)
    assert (plan.height, plan.width) == (h // p, w // p)
    hits = np.zeros((plan.height, plan.width), int)
    for out_row, out_col, out_height, out_width, in_row, in_col, in_size in tiles:
        hits[out_row : out_row + out_height, out_col : out_col + out_width] += 1
        assert in_size == tile + 2 * ov
        assert (in_row, in_col) == (out_row * p - ov, out_col * p - ov)
    assert (hits == 1).all()


def test_plan_validation_and_defaults() -> None:
    with pytest.raises(ValueError, match="multiple of patch_size"):
        embedding_tiling(64, 64, 4, 1, 1, 30, 0)
    with pytest.raises(ValueError, match="overlap must be"):
        embedding_tiling(64, 64, 4, 1, 1, 32, 3)
    with pytest.raises(ValueError, match="smaller than one"):
        embedding_tiling(3, 64, 4, 1, 1, 32, 0)
    # A raster that fits the token budget (4096) is one tile without margin.
    assert embedding_tiling(64, 60, 4, 2, 4) == (64, 0)
    # A large one: the largest window within the budget, 1/8 of it as margin on each side.
    tile, ov = embedding_tiling(10_000, 10_000, 4, 12, 4)
    assert (tile, ov) == (28, 4)  # window 9 patches: 81 x 12 x 4 = 3888 tokens
    assert embedding_tiling(10_000, 10_000, 8, 1, 1) == (256, 64)  # window 64, core capped
    assert embedding_tiling(10_000, 10_000, 4, 12, 4, tile_size=96) == (96, 16)
    assert embedding_tiling(10_000, 10_000, 4, 12, 4, tile_size=96, overlap=0) == (96, 0)


# ----------------------------------------------------------------------------- results


def test_single_tile_equals_direct_embed(nano, small_scene, small_scene_files, tmp_path) -> None:
    out = tmp_path / "emb.tif"
    res = embed_geotiffs(nano, small_scene_files, out, patch_size=4, tags={"weights": "random"})
    assert res.tiles_total == res.tiles_embedded == 1 and res.overlap == 0
    emb = read_embedding(out)
    np.testing.assert_allclose(emb, direct_feature_map(nano, small_scene), rtol=1e-5, atol=1e-5)

    ok, problems = is_cloud_optimized(out)
    assert ok, problems
    with rasterio.open(out) as src:
        assert src.crs == small_scene.crs
        assert src.transform == small_scene.transform @ Affine.scale(4)
        assert src.res == (40.0, 40.0)
        assert (src.height, src.width, src.count) == (8, 8, nano.embedding_dim)
        assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
        assert src.descriptions[0] == "embedding_000"
        tags = src.tags()
        assert tags["weights"] == "random" and tags["patch_size"] == "4"
        assert tags["dates"] == ",".join(d.isoformat() for d in small_scene.dates)


def test_tiles_are_stitched_in_place(nano, small_scene_files, tmp_path) -> None:
    """Every written core equals the model's output on that tile's window, trimmed; the last
    row / column of tiles is smaller than the tile, the last batch smaller than the batch."""
    out = tmp_path / "tiled.tif"
    res = embed_geotiffs(nano, small_scene_files, out, tile_size=12, overlap=4, batch_size=4)
    assert res.tiles_total == res.tiles_embedded == 9
    emb = read_embedding(out)
    with FileInputs(small_scene_files) as st:
        tiles, _ = embed_tiles(32, 32, 4, 12, 4, st.grid)
        assert [t[2] for t in tiles[::3]] == [3, 3, 2]
        windows = [st.read(t[4], t[5], t[6], t[6]) for t in tiles]
        ts = np.repeat(st.timeline.timestamps[None], len(windows), axis=0)
    batch = {m: np.stack([w[m] for w in windows]) for m in (S2, S1)}
    fm = nano.embed(batch, timestamps=ts, patch_size=4).feature_map.numpy()  # [9, 5, 5, D]
    for k, (out_row, out_col, h, w, *_) in enumerate(tiles):
        got = emb[out_row : out_row + h, out_col : out_col + w]
        np.testing.assert_allclose(got, fm[k, 1 : 1 + h, 1 : 1 + w], rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # >= 5 s (pytest --durations)
def test_tiled_close_to_untiled(nano, tmp_path) -> None:
    """Tiles are encoded separately (global attention, spatial encodings relative to the tile),
    so the result is close to, not equal to, the untiled one. Measured with random Nano weights
    on sample scenes: mean cosine 0.89-0.98 depending on tile and margin sizes."""
    from geolatent.data.synthetic import make_sample_scene, write_scene_geotiffs

    scene = make_sample_scene(48, 48, timesteps=2, seed=11)
    files = write_scene_geotiffs(scene, tmp_path / "scene")
    inputs = {
        m: [RasterInput(p, d) for p, d in zip(files[m], scene.dates, strict=True)] for m in (S2, S1)
    }
    full = direct_feature_map(nano, scene)
    res = embed_geotiffs(nano, inputs, tmp_path / "t.tif", tile_size=24, overlap=8)
    assert res.tiles_total == 4
    tiled = read_embedding(res.path)
    cos = cosine(tiled, full)
    assert cos.mean() > 0.85 and cos.min() > 0.7, (cos.mean(), cos.min())


def write_s2_s1(scene, folder, s2: np.ndarray, s1: np.ndarray) -> dict[str, list[RasterInput]]:
    """S2 (uint16 DN, nodata 0) and S1 (dB, NaN missing) ``[C, h, w]`` arrays on the scene's
    grid as one GeoTIFF each of the scene's first date."""
    f2 = write_tif(folder / "s2.tif", s2, transform=scene.transform,
                   descriptions=list(MODALITIES[S2].bands), nodata=0)
    f1 = write_tif(folder / "s1.tif", s1, transform=scene.transform, descriptions=["vv", "vh"])
    date = scene.dates[0]
    return {S2: [RasterInput(f2, date)], S1: [RasterInput(f1, date)]}


def test_size_not_divisible_by_patch(nano, small_scene, tmp_path) -> None:
    """30 x 27 px at p=4: the last incomplete patch row / column is not embedded."""
    s2 = np.moveaxis(small_scene.sentinel2_l2a[:30, :27, 0], -1, 0).astype(np.uint16)
    s1 = np.moveaxis(small_scene.sentinel1[:30, :27, 0], -1, 0)
    inputs = write_s2_s1(small_scene, tmp_path, s2, s1)
    res = embed_geotiffs(nano, inputs, tmp_path / "e.tif", patch_size=4)
    assert (res.height, res.width) == (7, 6)
    crop = (None, slice(0, 28), slice(0, 24), slice(0, 1))
    ref = (
        nano.embed(
            {S2: small_scene.sentinel2_l2a[crop], S1: small_scene.sentinel1[crop]},
            timestamps=small_scene.timestamps[None, :1],
            patch_size=4,
        )
        .feature_map[0]
        .numpy()
    )
    # Not bit-identical: the tile is square (28 x 28, the missing columns padded with -99999);
    # the model fills missing pixels with their plane's mean before its bicubic resize (p != 8),
    # which nudges the edge tokens, and attention spreads that a little.
    emb = read_embedding(res.path)
    np.testing.assert_allclose(emb, ref, rtol=0, atol=0.05)
    assert cosine(emb, ref).min() > 0.999
    # Tiled with edge tiles smaller than the tile size gives the same grid.
    res2 = embed_geotiffs(nano, inputs, tmp_path / "e2.tif", patch_size=4, tile_size=16, overlap=4)
    assert (res2.height, res2.width, res2.tiles_total) == (7, 6, 4)
    assert np.isfinite(read_embedding(res2.path)).all()


def test_nodata_in_inputs_becomes_nodata_out(nano, small_scene, tmp_path) -> None:
    s2 = np.moveaxis(small_scene.sentinel2_l2a[:, :, 0], -1, 0).astype(np.uint16)
    s1 = np.moveaxis(small_scene.sentinel1[:, :, 0], -1, 0).copy()
    s2[:, :8, :] = 0  # nodata of the S2 file: patch rows 0-1
    s1[:, :8, :16] = np.nan  # S1 missing in the left half of those rows
    s2[:, 16:, 16:] = 0
    s1[:, 16:, 16:] = np.nan  # a whole 16 x 16 px tile with no data at all
    inputs = write_s2_s1(small_scene, tmp_path, s2, s1)
    res = embed_geotiffs(nano, inputs, tmp_path / "e.tif", tile_size=16, overlap=4)
    assert (res.tiles_total, res.tiles_embedded) == (4, 3)  # the empty tile is not run
    emb = read_embedding(res.path)
    nan = np.isnan(emb).all(axis=-1)
    assert np.isnan(emb).any(axis=-1).tolist() == nan.tolist()  # nodata is all bands or none
    expected = np.zeros((8, 8), bool)
    expected[:2, :4] = True  # neither modality valid
    expected[4:, 4:] = True
    assert nan.tolist() == expected.tolist()
    assert np.isfinite(emb[:2, 4:]).all()  # S1 alone still gives an embedding


def test_reflectance_is_rejected_not_rescaled(nano, small_scene, tmp_path) -> None:
    bands = list(MODALITIES[S2].bands)
    refl = np.moveaxis(small_scene.sentinel2_l2a[:, :, 0], -1, 0) / 10_000.0  # 0-1 reflectance
    f2 = write_tif(
        tmp_path / "refl.tif",
        refl.astype(np.float32),
        transform=small_scene.transform,
        descriptions=bands,
    )
    out = tmp_path / "out" / "e.tif"
    with pytest.raises(ValueError, match="reflectance"):
        embed_geotiffs(nano, {S2: [RasterInput(f2, "2024-01-15")]}, out)
    assert not out.exists() and list(out.parent.iterdir()) == []


# ----------------------------------------------------------------------------- real data

EOLEARN_BANDS = L1C_BANDS
EOLEARN_DATES = ["2015-08-20", "2015-07-31", "2015-09-09", "2015-08-30", "2015-07-11"]
# Patch bounds (EPSG:32633): 465181-466181 E, 5079245-5080255 N; 100 columns x 101 rows at 10 m.
EOLEARN_TRANSFORM = Affine(10.0, 0.0, 465_181.0, 0.0, -10.0, 5_080_255.0)


@pytest.fixture(scope="module")
def eolearn_files(real_data, tmp_path_factory) -> list[RasterInput]:
    """The real eo-learn Sentinel-2 L1C scenes as one 13-band GeoTIFF (uint16 DN) per date."""
    path = real_data / "eolearn" / "REFERENCE_SCENES.npy"
    if not path.exists():
        pytest.skip(f"{path} not found")
    scenes = np.load(path)  # [5, 101, 100, 13] reflectance 0-1
    out = tmp_path_factory.mktemp("eolearn")
    files = []
    for t, date in enumerate(EOLEARN_DATES):
        dn = np.rint(np.moveaxis(scenes[t], -1, 0) * 10_000).astype(np.uint16)
        f = write_tif(
            out / f"s2_{date}.tif", dn, transform=EOLEARN_TRANSFORM, descriptions=EOLEARN_BANDS
        )
        files.append(RasterInput(f, date))
    return files


@pytest.mark.slow  # >= 5 s (pytest --durations)
def test_real_eolearn_scenes(nano, eolearn_files, tmp_path) -> None:
    with FileInputs({S2: eolearn_files}) as st:
        assert st.summary()[S2].bands_dropped == ("B10",)  # by name; not a model band
        assert st.dates[0] == dt.date(2015, 7, 11)  # sorted chronologically
    # 101 x 100 px, tiled with edge tiles smaller than the tile (and a partial patch row).
    res = embed_geotiffs(
        nano, {S2: eolearn_files}, tmp_path / "eolearn.tif", patch_size=4, tile_size=52, overlap=8
    )
    assert (res.height, res.width) == (25, 25)  # floor(101 / 4) x floor(100 / 4)
    assert res.tiles_total == res.tiles_embedded == 4
    assert len(res.timestamps) == 5
    emb = read_embedding(res.path)
    assert np.isfinite(emb).all()
    assert emb.std(axis=(0, 1)).mean() > 0.01  # not a constant map
    ok, problems = is_cloud_optimized(res.path)
    assert ok, problems
    with rasterio.open(res.path) as src:
        assert src.crs.to_epsg() == 32633
        assert src.transform == EOLEARN_TRANSFORM @ Affine.scale(4)
        assert src.bounds.left == 465_181.0 and src.bounds.top == 5_080_255.0
        assert src.bounds.right == 465_181.0 + 25 * 40
