"""Similar-place search on deterministic synthetic archives with planted matches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from archive_fixtures import (
    MODEL,
    pixel_lonlat,
    planted_vectors,
    write_planted_archive,
)

import geolatent.archive as ga
from geolatent.archive.store import ArchiveError
from geolatent.data.io.cog import is_cloud_optimized

ROWS, COLS, DIMS, PLANTED = 96, 80, 64, 25


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    d = tmp_path_factory.mktemp("planted")
    v, rc = planted_vectors(ROWS, COLS, DIMS, PLANTED, noise=0.6)
    write_planted_archive(d / "int8.zarr", v, "int8")
    write_planted_archive(d / "float32.zarr", v, "float32")
    return d, v, rc


def _found(res, rc) -> set:
    want = {tuple(x) for x in rc.tolist()}
    return {(m.row, m.col) for m in res.matches} & want


def test_store_is_zarr_v3_with_geoemb_attributes(planted):
    d, _, _ = planted
    meta = json.loads((d / "int8.zarr" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["node_type"] == "group"
    a = ga.open(d / "int8.zarr")
    assert a.dims == DIMS and a.model["id"] == MODEL["id"]
    attrs = a.info.attrs
    assert attrs["geoemb:quantization"]["rule"] == "signed_square_root"
    zone = json.loads((d / "int8.zarr" / "zones" / "32633" / "zarr.json").read_text())
    assert zone["attributes"]["geoemb:crs"] == "EPSG:32633"
    assert zone["attributes"]["geoemb:transform"] == [40.0, 0.0, 400000.0, 0.0, -40.0, 5100000.0]
    emb = json.loads((d / "int8.zarr" / "zones" / "32633" / "embeddings" / "zarr.json").read_text())
    assert emb["data_type"] == "int8" and emb["dimension_names"] == ["y", "x", "dim"]
    assert emb["chunk_grid"]["configuration"]["chunk_shape"] == [32, 32, DIMS]


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_exact_search_finds_the_planted_matches(planted, dtype, tmp_path):
    d, _, rc = planted
    a = ga.open(d / f"{dtype}.zarr")
    pos = pixel_lonlat(rc[:3])
    res = a.search(pos, top=PLANTED - 3, heatmap=tmp_path / "sim.tif")
    assert res.method == "exact"
    found = _found(res, rc[3:])
    print(f"\n{dtype}: {len(found)}/{PLANTED - 3} planted matches in the top {PLANTED - 3}")
    assert len(found) == PLANTED - 3  # every other planted pixel, nothing else
    assert not _found(res, rc[:3])  # the examples themselves are left out
    scores = [m.score for m in res.matches]
    assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1
    ok, problems = is_cloud_optimized(res.heatmaps[0])
    assert ok, problems
    with rasterio.open(res.heatmaps[0]) as src:
        sim = src.read(1)
        assert src.crs.to_string() == "EPSG:32633" and src.res == (40.0, 40.0)
    r, c = rc[5]
    assert sim[r, c] == pytest.approx(res.matches[0].score, abs=0.2)
    assert np.nanmedian(sim) < 0.2 < sim[r, c]


def test_int8_and_float_top_k_agree(planted):
    d, _, rc = planted
    pos = pixel_lonlat(rc[:3])
    k = 100  # well past the planted ones, into background ranks where quantization matters
    a = ga.open(d / "int8.zarr").search(pos, top=k)
    b = ga.open(d / "float32.zarr").search(pos, top=k)
    overlap = len({(m.row, m.col) for m in a.matches} & {(m.row, m.col) for m in b.matches}) / k
    print(f"\nint8 vs float32 top-{k} overlap: {overlap:.2f}")
    assert overlap >= 0.9


def test_index_search_matches_exact(planted):
    d, _, rc = planted
    a = ga.open(d / "int8.zarr")
    pos = pixel_lonlat(rc[:3])
    res = a.search(pos, top=PLANTED - 3, method="index")
    assert res.method == "index"
    assert len(_found(res, rc[3:])) == PLANTED - 3
    assert (d / "int8.faiss").exists() and (d / "int8.faiss.json").exists()
    meta = json.loads((d / "int8.faiss.json").read_text())
    assert meta["vectors"] == ROWS * COLS and meta["model"]["id"] == MODEL["id"]
    again = ga.open(d / "int8.zarr").search(pos, top=5, method="index")  # reuses the stored index
    assert [m.row for m in again.matches] == [m.row for m in res.matches[:5]]


@pytest.mark.slow  # the first scikit-learn import takes several seconds here
def test_negatives_train_a_classifier(planted):
    d, v, rc = planted
    a = ga.open(d / "int8.zarr")
    rng = np.random.default_rng(1)
    neg = rng.integers(0, [ROWS, COLS], size=(10, 2))
    neg = np.array([x for x in neg if tuple(x) not in {tuple(y) for y in rc.tolist()}])
    res = a.search(pixel_lonlat(rc[:4]), negative=pixel_lonlat(neg), top=PLANTED - 4)
    assert res.query["score"] == "classifier"
    assert len(_found(res, rc[4:])) >= PLANTED - 6
    assert all(0 <= m.score <= 1 for m in res.matches)


def test_results_geojson_round_trips_as_examples(planted, tmp_path):
    d, _, rc = planted
    a = ga.open(d / "int8.zarr")
    res = a.search(pixel_lonlat(rc[:3]), top=5)
    path = res.write_geojson(tmp_path / "m.geojson")
    fc = json.loads(path.read_text())
    assert fc["geoemb:model"]["id"] == MODEL["id"] and len(fc["features"]) == 5
    f = fc["features"][0]
    assert f["geometry"]["type"] == "Point" and f["properties"]["rank"] == 1
    poly = res.to_geojson("polygon")["features"][0]["geometry"]
    assert poly["type"] == "Polygon"
    again = a.search(path, top=3)  # the matches as new positives (the Earth Index loop)
    assert len(again.matches) == 3


def test_points_outside_the_archive_are_a_clear_error(planted):
    d, _, _ = planted
    a = ga.open(d / "int8.zarr")
    with pytest.raises(ArchiveError, match=r"positive point 1 at lon .* is outside the archive"):
        a.search([pixel_lonlat([(2, 2)])[0], (2.35, 48.85)])  # Paris is far outside
    with pytest.raises(ValueError, match="feature 0 is a LineString; give points"):
        a.search({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                  "geometry": {"type": "LineString", "coordinates": [[14, 46], [14.1, 46]]}}]})


def test_examples_from_an_archive_of_another_model_are_refused(planted, tmp_path):
    d, _, rc = planted
    res = ga.open(d / "int8.zarr").search(pixel_lonlat(rc[:3]), top=3)
    other = dict(MODEL, id="another-model", revision="r9")
    fc = res.to_geojson()
    fc["geoemb:model"] = other
    with pytest.raises(ArchiveError, match="archive of model another-model .* not comparable"):
        ga.open(d / "int8.zarr").search(fc)


def test_wrong_dims_are_refused(planted, tmp_path):
    d, _, _ = planted
    a = ga.open(d / "int8.zarr")
    from geolatent.archive.index import open_or_build_index

    idx = open_or_build_index(a)
    with pytest.raises(ValueError, match="query has 128 dims; the index holds 64-d vectors"):
        idx.search(np.ones(128, np.float32), 0.0, "cosine", 5, set())
    bad = d / "int8.zarr" / "zones" / "32633" / "embeddings" / "zarr.json"
    copy = tmp_path / "bad.zarr"
    import shutil

    shutil.copytree(d / "int8.zarr", copy)
    root = json.loads((copy / "zarr.json").read_text())
    root["attributes"]["geoemb:dims"] = 128
    (copy / "zarr.json").write_text(json.dumps(root))
    assert bad.exists()
    with pytest.raises(ArchiveError, match="stores 64-d vectors but the archive declares"):
        ga.open(copy)
