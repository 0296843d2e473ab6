"""The streaming COG writer: content, georeferencing, COG layout, atomicity."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from geolatent.data.io.cog import COGWriter, is_cloud_optimized

from .conftest import write_tif

TRANSFORM = Affine(40.0, 0.0, 400_000.0, 0.0, -40.0, 5_100_000.0)


def test_float_tiles_in_any_order(tmp_path) -> None:
    rng = np.random.default_rng(0)
    full = rng.standard_normal((3, 600, 700)).astype(np.float32)
    out = tmp_path / "emb.tif"
    with COGWriter(
        out, width=700, height=600, count=3, dtype="float32", crs="EPSG:32633",
        transform=TRANSFORM, nodata=float("nan"), band_descriptions=["a", "b", "c"],
        tags={"patch_size": 4}, blocksize=256,
    ) as w:  # fmt: skip
        # Unaligned windows, written out of order; rows 500-599 are never written.
        for r0, c0, h, wd in [(250, 333, 250, 367), (0, 0, 250, 700), (250, 0, 250, 333)]:
            w.write(full[:, r0 : r0 + h, c0 : c0 + wd], r0, c0)
    ok, problems = is_cloud_optimized(out)
    assert ok, problems
    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
        assert src.overviews(1) == [2, 4]
        assert src.crs.to_epsg() == 32633 and src.transform == TRANSFORM
        assert np.isnan(src.nodata)
        assert src.descriptions == ("a", "b", "c")
        assert src.tags()["patch_size"] == "4"
        data = src.read()
    np.testing.assert_array_equal(data[:, :500], full[:, :500])
    assert np.isnan(data[:, 500:]).all()  # never written -> nodata
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.tif"]  # no temp files left


def test_many_bands_unwritten_areas_are_nodata(tmp_path) -> None:
    """128 pixel-interleaved bands (an embedding), partly written blocks: every band of every
    pixel that was not written reads back as nodata, including inside written-to blocks."""
    rng = np.random.default_rng(1)
    out = tmp_path / "e.tif"
    with COGWriter(
        out, width=72, height=40, count=128, dtype="float32", crs="EPSG:32633",
        transform=TRANSFORM, nodata=float("nan"), blocksize=32,
    ) as w:  # fmt: skip
        for r, c in [(0, 0), (0, 4), (4, 0), (20, 40)]:
            w.write(rng.standard_normal((128, 4, 4)).astype(np.float32), r, c)
        w.write(np.full((128, 4, 4), np.nan, np.float32), 8, 8)  # a nodata tile
    with rasterio.open(out) as src:
        data = src.read()
        assert np.isnan(src.nodata) and src.overviews(1) == [2, 4]
        ovr = src.read(out_shape=(128, 20, 36))
    written = np.zeros((40, 72), bool)
    for r, c in [(0, 0), (0, 4), (4, 0), (20, 40)]:
        written[r : r + 4, c : c + 4] = True
    assert np.isfinite(data[:, written]).all()
    assert np.isnan(data[:, ~written]).all()
    # Overview pixels average the valid pixels of their 2 x 2 cell: valid where any was.
    cell = written.reshape(20, 2, 36, 2).any(axis=(1, 3))
    assert np.isfinite(ovr[:, cell]).all() and np.isnan(ovr[:, ~cell]).all()


def test_uint8_class_map_with_colours(tmp_path) -> None:
    classes = (np.arange(300 * 300).reshape(300, 300) // 7 % 4).astype(np.uint8)
    out = tmp_path / "classes.tif"
    cmap = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255), 3: (9, 9, 9)}
    with COGWriter(
        out, width=300, height=300, count=1, dtype="uint8", crs="EPSG:32633",
        transform=TRANSFORM, nodata=255, band_descriptions=["class"], colormap=cmap,
        blocksize=128, overview_count=1,
    ) as w:  # fmt: skip
        w.write(classes, 0, 0)
    assert is_cloud_optimized(out)[0]
    with rasterio.open(out) as src:
        assert src.read(1).tolist() == classes.tolist()
        assert src.colormap(1)[2] == (0, 0, 255, 255)
        assert src.nodata == 255
        assert src.overviews(1) == [2]
        ovr = src.read(1, out_shape=(150, 150))
    # Nearest resampling keeps class ids (an average would invent classes between them).
    assert set(np.unique(ovr).tolist()) <= {0, 1, 2, 3}


def test_error_leaves_nothing_and_keeps_existing_file(tmp_path) -> None:
    out = tmp_path / "x.tif"
    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError, match="boom"):
        with COGWriter(
            out, width=32, height=32, count=1, dtype="float32", crs="EPSG:32633",
            transform=TRANSFORM,
        ) as w:  # fmt: skip
            w.write(np.zeros((1, 16, 16), np.float32), 0, 0)
            raise RuntimeError("boom")
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["x.tif"]


def test_rejects_bad_writes(tmp_path) -> None:
    w = COGWriter(
        tmp_path / "y.tif", width=32, height=32, count=2, dtype="float32", crs="EPSG:32633",
        transform=TRANSFORM,
    )  # fmt: skip
    with pytest.raises(ValueError, match="outside"):
        w.write(np.zeros((2, 16, 16), np.float32), 20, 0)
    with pytest.raises(ValueError, match=r"expected \[2, h, w\]"):
        w.write(np.zeros((3, 16, 16), np.float32), 0, 0)
    w.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="colour table"):
        COGWriter(
            tmp_path / "z.tif", width=8, height=8, count=1, dtype="float32", crs=None,
            transform=TRANSFORM, colormap={0: (0, 0, 0)},
        )  # fmt: skip


def test_plain_geotiff_is_not_a_cog(tmp_path) -> None:
    plain = write_tif(tmp_path / "plain.tif", np.zeros((1, 600, 600), np.float32), tiled=False)
    ok, problems = is_cloud_optimized(plain)
    assert not ok
    assert any("LAYOUT=COG" in p for p in problems) and any("tiled" in p for p in problems)


def test_temporaries_in_temp_dir_and_stale_sidecar_removed(tmp_path) -> None:
    out = tmp_path / "map.tif"
    work = tmp_path / "map.tif.work"
    sidecar = tmp_path / "map.tif.aux.xml"
    data = np.arange(2 * 40 * 50, dtype=np.float32).reshape(2, 40, 50)
    for _ in range(2):
        w = COGWriter(out, width=50, height=40, count=2, dtype="float32", crs="EPSG:32633",
                      transform=TRANSFORM, nodata=float("nan"), temp_dir=work)
        w.write(data, 0, 0)
        assert [p.parent for p in tmp_path.rglob("*.part.tif")] == [work]  # not beside `out`
        # a sidecar describing the raster about to be replaced (e.g. class names of a map)
        sidecar.write_text("<PAMDataset><PAMRasterBand band='1'><CategoryNames>"
                           "<Category>water</Category></CategoryNames></PAMRasterBand>"
                           "</PAMDataset>")
        w.close()
        assert not sidecar.exists() and not list(work.iterdir())
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(), data)
