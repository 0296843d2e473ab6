"""Real data: an archive of the eo-learn Slovenian patch (real Sentinel-2 L1C scenes), searched
with positives from one land-use class of its LULC raster; precision@k against the raster.

The model has the reference Nano architecture with random weights (no release weights are
downloadable here), so the figures measure the archive and search machinery on real imagery,
not OlmoEarth's learned representation; they are printed, and the test requires search to beat
the class's base rate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

import geolatent.archive as ga
from geolatent.archive.quantize import decode
from geolatent.data.config import FileSourceConfig
from geolatent.data.window import WGS84, reproject_geometry

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12")
DATES = ("2015-08-20", "2015-07-31", "2015-09-09", "2015-08-30", "2015-07-11")
CRS = "EPSG:32633"
TRANSFORM = Affine(10.0, 0.0, 465181.0, 0.0, -10.0, 5080255.0)
NAMES = {1: "cultivated land", 2: "forest", 3: "grassland", 4: "shrubland", 8: "artificial"}


@pytest.fixture(scope="module")
def eolearn(tmp_path_factory, real_data: Path, fixture_dir: Path) -> dict:
    """Both builds (int8, float32) of the patch; shared data located by tests/conftest.py."""
    eolearn_dir = real_data / "eolearn"
    if not (eolearn_dir / "REFERENCE_SCENES.npy").exists():
        pytest.skip(f"eo-learn real data not found at {eolearn_dir}")
    d = tmp_path_factory.mktemp("eolearn")
    scenes = np.load(eolearn_dir / "REFERENCE_SCENES.npy")  # [5, 101, 100, 13] reflectance 0-1
    keep = [i for i, b in enumerate(BANDS) if b != "B10"]
    (d / "s2").mkdir()
    for t, date in enumerate(DATES):
        data = np.moveaxis(scenes[t][..., keep] * 10000.0, -1, 0).astype(np.float32)
        with rasterio.open(d / "s2" / f"s2_{date}.tif", "w", driver="GTiff", width=100,
                           height=101, count=12, dtype="float32", crs=CRS,
                           transform=TRANSFORM) as dst:  # fmt: skip
            dst.write(data)
    src = FileSourceConfig(name="s2_l1c", type="files", modality="sentinel2_l2a",
                           paths=[str(d / "s2" / "s2_*.tif")],
                           bands=[b for b in BANDS if b != "B10"],
                           date_pattern=r"s2_(\d{4}-\d{2}-\d{2})\.tif", date_format="%Y-%m-%d")
    x0, y1 = TRANSFORM @ (0, 0)
    x1, y0 = TRANSFORM @ (100, 101)
    area = reproject_geometry(shapely.segmentize(shapely.box(x0, y0, x1, y1), 50), CRS, WGS84)
    (d / "area.geojson").write_text(json.dumps(shapely.geometry.mapping(area)))
    out = {}
    for dtype in ("int8", "float32"):
        r = ga.build(fixture_dir, d / "area.geojson", "2015-07-01", "2015-09-30",
                     d / f"{dtype}.zarr", sources=[src], dtype=dtype, tile_size=32)
        print(f"\neo-learn {dtype}: {r.vectors} vectors, {r.tiles_total} tiles, "
              f"{r.area_km2:.2f} km2 in {r.seconds:.1f} s ({r.km2_per_s:.3f} km2/s)")
        out[dtype] = r
    lulc = np.load(eolearn_dir / "TestEOPatch" / "mask_timeless" / "LULC.npy")[..., 0]
    return {"dir": d, "lulc": lulc, "builds": out}


def _pixel_classes(archive: ga.Archive, lulc: np.ndarray):
    """Per output pixel of the archive's zone: majority LULC class and its purity (over the
    LULC pixels whose centres fall in it)."""
    z = archive.zones[0]
    rows, cols = np.mgrid[0:lulc.shape[0], 0:lulc.shape[1]]
    x, y = TRANSFORM @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
    c, r = ~z.transform @ (x, y)
    r, c = np.floor(r).astype(int), np.floor(c).astype(int)
    counts = np.zeros((*z.shape, 9), np.int32)
    np.add.at(counts, (r, c, lulc.ravel().astype(int)), 1)
    counts[..., 0] = 0  # no-data label
    total = counts.sum(-1)
    major = counts.argmax(-1)
    purity = np.where(total > 0, counts.max(-1) / np.maximum(total, 1), 0)
    return major, purity, total


@pytest.mark.slow
def test_lulc_class_search_precision_at_k(eolearn):
    a = ga.open(eolearn["dir"] / "int8.zarr")
    b = ga.open(eolearn["dir"] / "float32.zarr")
    major, purity, total = _pixel_classes(a, eolearn["lulc"])
    _, valid = decode(a.zones[0].read_rows(0, a.zones[0].shape[0]))
    labelled = valid & (total >= 8)
    rng = np.random.default_rng(0)
    k = 20
    report = {}
    for cls in (1, 2, 3):
        pure = np.argwhere(labelled & (major == cls) & (purity == 1.0))
        if len(pure) < 10:
            continue
        pos_rc = pure[rng.choice(len(pure), 5, replace=False)]
        z = a.zones[0]
        xy = [z.transform @ (c + 0.5, r + 0.5) for r, c in pos_rc]
        from pyproj import Transformer

        t = Transformer.from_crs(z.crs, "OGC:CRS84", always_xy=True)
        pos = [t.transform(x, y) for x, y in xy]
        res = a.search(pos, top=k)
        hits = [major[m.row, m.col] == cls for m in res.matches if labelled[m.row, m.col]]
        prec = float(np.mean(hits))
        base = float((major[labelled] == cls).mean())
        ref = b.search(pos, top=k)
        overlap = len({(m.row, m.col) for m in res.matches}
                      & {(m.row, m.col) for m in ref.matches}) / k
        report[NAMES[cls]] = {"precision_at_k": prec, "base_rate": base, "k": k,
                              "int8_vs_float32_top_k_overlap": overlap}
    print("\n" + json.dumps(report, indent=1))
    assert report, "no land-use class had enough pure pixels"
    for name, r in report.items():
        assert r["int8_vs_float32_top_k_overlap"] >= 0.8, name
    assert max(r["precision_at_k"] - r["base_rate"] for r in report.values()) > 0.1
