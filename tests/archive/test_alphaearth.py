"""The Satellite Embedding (AlphaEarth Foundations) COG layout read in place, on files this test
writes in that layout: ``<year>/<zone>/<name>.tif``, 64 int8 bands A00-A63, nodata -128, the
signed-square dequantization."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from archive_fixtures import pixel_lonlat, planted_vectors

import geolatent.archive as ga
from geolatent.archive.alphaearth import write_alphaearth_cog
from geolatent.archive.store import ArchiveError

X0, Y0 = 500_000.0, 5_000_000.0  # zone 33N, 10 m pixels


@pytest.fixture(scope="module")
def aef(tmp_path_factory):
    root = tmp_path_factory.mktemp("aef") / "2024" / "33N"
    root.mkdir(parents=True)
    v, rc = planted_vectors(128, 96, 64, 12, noise=0.5, seed=3)
    v[:4, :4] = np.nan  # masked corner
    # two neighbouring files of the zone: left and right halves
    write_alphaearth_cog(root / "xa.tif", v[:, :48], "EPSG:32633",
                         Affine(10, 0, X0, 0, -10, Y0))
    write_alphaearth_cog(root / "xb.tif", v[:, 48:], "EPSG:32633",
                         Affine(10, 0, X0 + 480, 0, -10, Y0))
    return root.parent.parent, v, rc


def _ll(rc):
    return pixel_lonlat(rc, patch_size=1, col0=int(X0 / 10), row0=int(-Y0 / 10))


def test_layout_and_dequantization(aef):
    folder, v, _ = aef
    with rasterio.open(folder / "2024" / "33N" / "xa.tif") as src:
        assert src.count == 64 and src.dtypes[0] == "int8" and src.nodata == -128
        assert src.descriptions[0] == "A00" and src.descriptions[63] == "A63"
        q = src.read(window=((10, 11), (20, 21)))[:, 0, 0].astype(np.float64)
    x = np.sign(q) * (q / 127.5) ** 2  # the published rule
    assert np.linalg.norm(x) == pytest.approx(1.0, abs=0.01)
    assert float(x @ v[10, 20]) / np.linalg.norm(x) > 0.999
    a = ga.open(folder)
    assert a.dims == 64 and a.info.layout == "alphaearth" and len(a.zones) == 2
    got, _ = a.vectors_at(_ll([(10, 20), (10, 70)]))
    assert float(got[0] @ v[10, 20]) > 0.999 and float(got[1] @ v[10, 70]) > 0.999


def test_search_finds_planted_matches_across_files(aef, tmp_path):
    folder, _, rc = aef
    a = ga.open(folder)
    res = a.search(_ll(rc[:3]), top=9, heatmap=tmp_path / "sim.tif")
    want = {tuple(x) for x in rc[3:].tolist()}
    got = set()
    for m in res.matches:
        col = m.col + (48 if a.zones[m.zone].name == "xb" else 0)
        got.add((m.row, col))
    assert got == want
    assert len(res.heatmaps) == 2  # one COG per file (zone), suffixed
    with rasterio.open(res.heatmaps[0]) as src:
        assert np.isnan(src.read(1)[:4, :4]).all()  # masked pixels are nodata


def test_masked_pixels_and_wrong_dims_are_errors(aef, tmp_path):
    folder, _, _ = aef
    with pytest.raises(ArchiveError, match="positive point 0 .* without data"):
        ga.open(folder).search(_ll([(1, 1)]))
    bad = tmp_path / "bad.tif"
    with rasterio.open(bad, "w", driver="GTiff", width=8, height=8, count=32, dtype="int8",
                       crs="EPSG:32633", transform=Affine(10, 0, X0, 0, -10, Y0)) as dst:
        dst.write(np.zeros((32, 8, 8), np.int8))
    with pytest.raises(ArchiveError, match="32 band.*has 64 int8 bands.*wrong dims"):
        ga.open(bad)
    with pytest.raises(ArchiveError, match="neither a geolatent Zarr archive"):
        ga.open(tmp_path / "empty") if (tmp_path / "empty").mkdir() is None else None
