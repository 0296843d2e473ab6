"""Sources and compositing on small rasters built here: tables, cloud masks, mosaics, bands."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from geolatent.data.config import FileSourceConfig
from geolatent.data.materialize import materialize_window
from geolatent.data.sources import open_source
from geolatent.data.window import Window, year_range
from geolatent.modalities import MISSING_VALUE

from .helpers import vv_source, write_raster

ORIGIN = (500_000.0, 4_800_000.0)  # EPSG:32631, on the 10 m grid
WINDOW = Window("EPSG:32631", (50_000, -480_000, 50_016, -479_984), year_range(2020))
S2_BANDS = ["B02", "B03", "B04", "B08", "SCL"]


def _s2_scene(tmp_path, day: str, value: float, cloudy_left: bool):
    data = np.zeros((5, 16, 16), np.uint16)
    data[:4] = value
    data[4] = 4  # SCL vegetation: clear
    if cloudy_left:
        data[4, :, :8] = 9  # cloud high probability
    return write_raster(tmp_path / f"S2_{day}.tif", data, origin=ORIGIN, nodata=0)


def _s2_source(tmp_path):
    return open_source(
        FileSourceConfig(
            name="s2",
            modality="sentinel2_l2a",
            paths=[str(tmp_path / "S2_*.tif")],
            bands=S2_BANDS,
            date_pattern=r"S2_(\d{8})",
            date_format="%Y%m%d",
            cloud_mask={"band": "SCL", "kind": "scl"},
        )
    )


def test_monthly_median_composite_is_cloud_aware(tmp_path):
    _s2_scene(tmp_path, "20200105", 100, False)
    _s2_scene(tmp_path, "20200115", 200, False)
    _s2_scene(tmp_path, "20200125", 900, True)  # bright cloud over the left half
    _s2_scene(tmp_path, "20200210", 500, False)
    _s2_scene(tmp_path, "20200310", 700, True)  # left half cloudy, the only March scene
    src = _s2_source(tmp_path)
    assert src.bands == ("B02", "B03", "B04", "B08")  # SCL is the mask, not a band
    mw = materialize_window(WINDOW, [src])
    arr = mw.arrays["sentinel2_l2a"]
    assert arr.shape == (16, 16, 12, 12)
    jan, feb, mar = arr[:, :, 0, 0], arr[:, :, 1, 0], arr[:, :, 2, 0]
    assert (jan[:, :8] == 150).all()  # median of the two clear scenes (cloud removed)
    assert (jan[:, 8:] == 200).all()  # median of 100, 200, 900
    assert (feb == 500).all()
    assert (mar[:, :8] == MISSING_VALUE).all() and (mar[:, 8:] == 700).all()
    assert mw.missing_timesteps["sentinel2_l2a"].tolist() == [False] * 3 + [True] * 9
    assert mw.timestamps[:3].tolist() == [[1, 0, 2020], [1, 1, 2020], [1, 2, 2020]]
    # only the 10 m bandset is provided: the 20 m and 60 m bandsets are missing, not zero
    assert (arr[..., 4:] == MISSING_VALUE).all()
    assert mw.bandset_present("sentinel2_l2a")[:3].tolist() == [[True, False, False]] * 3


def test_same_day_tiles_are_mosaicked_before_compositing(tmp_path):
    # Two tiles of one pass, overlapping by 4 px: the overlap takes one of them, not their mean.
    a = np.full((16, 10), 1.0, np.float32)
    b = np.full((16, 10), 3.0, np.float32)
    write_raster(tmp_path / "S1_20200301_a.tif", a, origin=ORIGIN, nodata=-99.0)
    write_raster(
        tmp_path / "S1_20200301_b.tif", b, origin=(ORIGIN[0] + 60, ORIGIN[1]), nodata=-99.0
    )
    write_raster(tmp_path / "S1_20200310_c.tif", b * 0 + 2, origin=ORIGIN, nodata=-99.0)
    src = vv_source(str(tmp_path / "S1_*.tif"), date_pattern=r"S1_(\d{8})", date_format="%Y%m%d")
    mw = materialize_window(WINDOW, [src], timesteps="observed")
    vv = mw.arrays["sentinel1"][:, :, 0, 0]
    # day 1 mosaic: 1 on cols 0-9, 3 on cols 10-15; day 10: 2 on cols 0-9 -> median per pixel
    assert (vv[:, :10] == 1.5).all() and (vv[:, 10:] == 3).all()


def test_two_sources_feed_one_modality_and_table_source(tmp_path):
    vv = np.full((16, 16), -10.0, np.float32)
    vh = np.full((16, 16), -17.0, np.float32)
    write_raster(tmp_path / "vv.tif", vv, origin=ORIGIN)
    write_raster(tmp_path / "vh.tif", vh, origin=ORIGIN)
    (tmp_path / "scenes.csv").write_text(
        "path,datetime,band,scene\nvv.tif,2020-06-01T10:00:00,VV,a\nvh.tif,2020-06-01T10:00:00,VH,a\n"
    )
    table = open_source(
        FileSourceConfig(name="t", modality="sentinel1", table=str(tmp_path / "scenes.csv"))
    )
    assert len(table.scenes) == 1 and set(table.scenes[0].assets) == {"vv", "vh"}
    mw = materialize_window(WINDOW, [table])
    assert mw.bandset_present("sentinel1")[5].tolist() == [True]
    june = mw.arrays["sentinel1"][:, :, 5]
    assert (june[..., 0] == -10).all() and (june[..., 1] == -17).all()


def test_config_validation_messages(tmp_path):
    with pytest.raises(ValidationError, match="unknown modality 'sentinel3'"):
        FileSourceConfig(name="x", modality="sentinel3", paths=["a"], bands=["vv"])
    with pytest.raises(ValidationError, match="needs 'date_pattern' or 'date_tag'"):
        FileSourceConfig(name="x", modality="sentinel1", paths=["a"], bands=["vv"])
    with pytest.raises(ValidationError, match="only applies to the sentinel1"):
        FileSourceConfig(name="x", modality="worldcover", paths=["a"], bands=["B1"], units="linear")
    with pytest.raises(ValidationError, match="capture group"):
        FileSourceConfig(
            name="x", modality="sentinel1", paths=["a"], bands=["vv"], date_pattern=r"\d+"
        )
    with pytest.raises(ValidationError, match="band 'hh' is not a band of modality 'sentinel1'"):
        FileSourceConfig(
            name="x", modality="sentinel1", paths=["a"], bands=["hh"], date_pattern=r"(\d{8})"
        )
    # a band file whose name (band pattern) is not a registry band: reported, not used
    write_raster(tmp_path / "s_20200101_HH.tif", np.zeros((4, 4), np.float32), origin=ORIGIN)
    src = open_source(
        FileSourceConfig(
            name="x",
            modality="sentinel1",
            paths=[str(tmp_path / "*.tif")],
            band_pattern=r"_([A-Z]+)\.tif$",
            date_pattern=r"_(\d{8})_",
        )
    )
    assert not src.scenes
    assert "s_20200101_HH.tif: band 'HH' is not a band of modality 'sentinel1'" in str(
        src.problems[0]
    )
