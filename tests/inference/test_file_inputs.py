"""Reading inputs: band names, grid checks, time axis, nodata, windowed reads, bad files."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from affine import Affine

from geolatent.data.io.grid import OutputGrid
from geolatent.inference.file_inputs import (
    FileInputs,
    RasterInput,
    RasterInputError,
    date_from_filename,
    parse_date,
)
from geolatent.modalities import MISSING_VALUE, MODALITIES

from .conftest import L1C_BANDS, S1, S2, write_tif

S2_BANDS = list(MODALITIES[S2].bands)


def s2_values(h: int = 20, w: int = 24, seed: int = 0) -> np.ndarray:
    """Plausible S2 DN ``[13, h, w]`` in L1C file order; band i holds values near 1000*(i+1)."""
    rng = np.random.default_rng(seed)
    base = (np.arange(13, dtype=np.float32) + 1)[:, None, None] * 1000
    return (base + rng.integers(0, 100, (13, h, w))).astype(np.float32)


def test_bands_mapped_by_name_and_b10_dropped(tmp_path) -> None:
    data = s2_values()
    path = write_tif(tmp_path / "l1c.tif", data, descriptions=L1C_BANDS)
    with FileInputs({S2: [RasterInput(path, "2024-05-01")]}) as st:
        summary = st.summary()[S2]
        assert summary.bands_dropped == ("B10",)
        assert summary.bandsets_absent == ()
        win = st.read(0, 0, 20, 24)[S2]
    assert win.shape == (20, 24, 1, 12)
    for ch, band in enumerate(S2_BANDS):  # registry order, whatever the file order
        np.testing.assert_array_equal(win[:, :, 0, ch], data[L1C_BANDS.index(band)])


def test_aliases_and_explicit_band_names(tmp_path) -> None:
    data = s2_values()[[1, 2, 3, 7]]  # B02, B03, B04, B08 only (the 10 m bandset)
    named = write_tif(
        tmp_path / "named.tif", data[[2, 1, 0, 3]], descriptions=["B4", "b3", "B2", "B8"]
    )
    bare = write_tif(tmp_path / "bare.tif", data)
    with FileInputs({S2: [RasterInput(named, "2024-01-01")]}) as st:
        a = st.read(0, 0, 20, 24)[S2]
        # Bandsets nobody provides are missing (masked by the model, never zero-filled).
        assert st.summary()[S2].bandsets_absent == (
            ("B05", "B06", "B07", "B8A", "B11", "B12"), ("B01", "B09"),
        )  # fmt: skip
    with pytest.raises(RasterInputError, match="no descriptions"):
        FileInputs({S2: [RasterInput(bare, "2024-01-01")]})
    with FileInputs(
        {S2: [RasterInput(bare, "2024-01-01", bands=["B02", "B03", "B04", "B08"])]}
    ) as st:
        b = st.read(0, 0, 20, 24)[S2]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[..., 0, :4], np.moveaxis(data, 0, -1))
    assert (a[..., 4:] == MISSING_VALUE).all()


def test_bad_band_sets(tmp_path) -> None:
    data = s2_values()
    path = write_tif(tmp_path / "x.tif", data[:4], descriptions=["B02", "B03", "B04", "B05"])
    with pytest.raises(
        RasterInputError, match=r"bandset \['B02', 'B03', 'B04', 'B08'\].*incomplete"
    ):
        FileInputs({S2: [RasterInput(path, "2024-01-01")]})
    dup = write_tif(tmp_path / "dup.tif", data[:2], descriptions=["B02", "B2"])
    with pytest.raises(RasterInputError, match="twice"):
        FileInputs({S2: [RasterInput(dup, "2024-01-01")]})
    other = write_tif(tmp_path / "other.tif", data[:2], descriptions=["red", "nir"])
    with pytest.raises(RasterInputError, match="none of the bands"):
        FileInputs({S2: [RasterInput(other, "2024-01-01")]})
    # Wrong band count for the names given.
    with pytest.raises(RasterInputError, match="3 band names given but the file has 13"):
        full = write_tif(tmp_path / "full.tif", data, descriptions=L1C_BANDS)
        FileInputs({S2: [RasterInput(full, "2024-01-01", bands=["B02", "B03", "B04"])]})
    # A stack whose band count is not a multiple of its dates.
    with pytest.raises(RasterInputError, match="13 bands cannot hold 2 timesteps"):
        FileInputs({S2: [RasterInput(full, ["2024-01-01", "2024-02-01"])]})


def test_inputs_off_one_grid_are_warped_onto_one(tmp_path) -> None:
    rng = np.random.default_rng(0)
    s1 = rng.uniform(-20, -5, (2, 20, 24)).astype(np.float32)
    ref = write_tif(tmp_path / "ref.tif", s1, descriptions=["vv", "vh"])
    moved = write_tif(
        tmp_path / "moved.tif", s1, descriptions=["vv", "vh"],
        transform=Affine(10.0, 0.0, 465_190.0, 0.0, -10.0, 5_080_260.0),
    )  # fmt: skip: one pixel east of ref
    inputs = {S1: [RasterInput(ref, "2024-01-01"), RasterInput(moved, "2024-02-01")]}
    with FileInputs(inputs) as st:
        assert st.grid.crs.to_epsg() == 32633 and (st.height, st.width) == (20, 25)
        assert st.grid.transform == Affine(10.0, 0.0, 465_180.0, 0.0, -10.0, 5_080_260.0)
        w = st.read(0, 0, 20, 25)[S1]
    np.testing.assert_array_equal(w[:, :24, 0], np.moveaxis(s1, 0, -1))  # ref, read directly
    assert (w[:, 24, 0] == MISSING_VALUE).all()
    # the shifted file, warped by the data layer: on the grid one column to the east
    np.testing.assert_allclose(w[:, 1:, 1], np.moveaxis(s1, 0, -1), rtol=0, atol=1e-4)
    assert (w[:, 0, 1] == MISSING_VALUE).all()

    far = write_tif(tmp_path / "utm32.tif", s1, crs="EPSG:32632", descriptions=["vv", "vh"])
    with pytest.raises(RasterInputError, match=r"utm32.tif does not overlap the output grid"):
        FileInputs({S1: [RasterInput(far, "2024-01-01")]}, grid=OutputGrid.of_raster(ref))


def test_20_m_and_lonlat_inputs_go_to_the_10_m_utm_grid(tmp_path) -> None:
    s1 = np.full((2, 20, 24), -12.0, np.float32)
    coarse = Affine(20.0, 0.0, 465_180.0, 0.0, -20.0, 5_080_260.0)
    f20 = write_tif(tmp_path / "s1_20m.tif", s1, transform=coarse, descriptions=["vv", "vh"])
    with FileInputs({S1: [RasterInput(f20, "2024-01-01")]}) as st:
        g = st.grid
        assert (st.height, st.width, g.transform.a, g.crs.to_epsg()) == (40, 48, 10.0, 32633)
        w = st.read(0, 0, 40, 48)[S1]
        assert np.allclose(w[1:-1, 1:-1], -12.0)  # bilinear inside the footprint
    lonlat = Affine(1e-4, 0.0, 14.5, 0.0, -1e-4, 45.9)
    geo = write_tif(
        tmp_path / "s1_geo.tif", s1, crs="EPSG:4326", transform=lonlat, descriptions=["vv", "vh"]
    )
    with FileInputs({S1: [RasterInput(geo, "2024-01-01")]}) as st:
        assert st.grid.crs.to_epsg() == 32633 and st.grid.transform.a == 10.0
        w = st.read(0, 0, st.height, st.width)[S1]
        assert np.allclose(w[w != MISSING_VALUE], -12.0) and (w != MISSING_VALUE).mean() > 0.5
    with FileInputs({S1: [RasterInput(f20, "2024-01-01")]}, check_resolution=False) as st:
        assert st.height == 20  # its own 20 m grid, kept on request
    with FileInputs({S1: [RasterInput(f20, "2024-01-01")]}, crs="EPSG:32632",
                     resolution=20) as st:
        assert st.grid.crs.to_epsg() == 32632 and st.grid.transform.a == 20.0


def test_truncated_and_missing_files(tmp_path) -> None:
    data = s2_values(64, 64)
    good = write_tif(tmp_path / "good.tif", data, descriptions=L1C_BANDS)
    raw = good.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(RasterInputError, match="truncated"):
        FileInputs({S2: [RasterInput(cut, "2024-01-01")]})
    head = tmp_path / "head.tif"
    head.write_bytes(raw[:100])
    with pytest.raises(RasterInputError, match=r"head.tif.*(truncated|corrupt)"):
        FileInputs({S2: [RasterInput(head, "2024-01-01")]})
    with pytest.raises(RasterInputError, match="no such file"):
        FileInputs({S2: [RasterInput(tmp_path / "nope.tif", "2024-01-01")]})


def test_nodata_nan_and_boundless_reads(tmp_path) -> None:
    s1 = np.full((2, 20, 24), -12.0, np.float32)
    s1[:, 3, 4] = -99.0  # the file's nodata value
    s1[0, 5, 6] = np.nan
    path = write_tif(tmp_path / "s1.tif", s1, descriptions=["VV", "VH"], nodata=-99.0)
    with FileInputs({S1: [RasterInput(path, "2024-01-01")]}) as st:
        win = st.read(-2, -3, 10, 12)[S1][:, :, 0]  # starts above / left of the raster
        assert (win[:2] == MISSING_VALUE).all() and (win[:, :3] == MISSING_VALUE).all()
        assert (win[2 + 3, 3 + 4] == MISSING_VALUE).all()
        assert win[2 + 5, 3 + 6, 0] == MISSING_VALUE and win[2 + 5, 3 + 6, 1] == -12.0
        assert np.isfinite(win).all()
        edge = st.read(16, 20, 8, 8, valid_height=18)[S1][:, :, 0]
        assert (edge[:2, :4] == -12.0).all()
        assert (edge[2:] == MISSING_VALUE).all() and (edge[:, 4:] == MISSING_VALUE).all()
        assert (st.read(100, 100, 4, 4)[S1] == MISSING_VALUE).all()


def test_stack_equals_single_files(tmp_path) -> None:
    a, b = s2_values(seed=1), s2_values(seed=2)
    stack = write_tif(tmp_path / "stack.tif", np.concatenate([a, b]), descriptions=L1C_BANDS * 2)
    fa = write_tif(tmp_path / "a.tif", a, descriptions=L1C_BANDS)
    fb = write_tif(tmp_path / "b.tif", b, descriptions=L1C_BANDS)
    with FileInputs({S2: [RasterInput(stack, ["2024-03-01", "2024-01-01"])]}) as st:
        from_stack = st.read(0, 0, 20, 24)[S2]
        assert [d.isoformat() for d in st.dates] == ["2024-01-01", "2024-03-01"]
    # Files given in any order are sorted by date.
    inputs = [RasterInput(fb, "2024-01-01"), RasterInput(fa, "2024-03-01")]
    with FileInputs({S2: inputs}) as st:
        np.testing.assert_array_equal(st.read(0, 0, 20, 24)[S2], from_stack)
        assert st.timeline.timestamps.tolist() == [[1, 0, 2024], [1, 2, 2024]]
    mixed = write_tif(
        tmp_path / "mixed.tif", np.concatenate([a, b]), descriptions=L1C_BANDS + S2_BANDS + ["B10"]
    )
    with pytest.raises(RasterInputError, match="repeat the same band names"):
        FileInputs({S2: [RasterInput(mixed, ["2024-03-01", "2024-01-01"])]})


def test_time_alignment_by_date_and_month(tmp_path) -> None:
    s2 = write_tif(tmp_path / "s2.tif", s2_values(), descriptions=L1C_BANDS)
    s1 = write_tif(
        tmp_path / "s1.tif", np.full((2, 20, 24), -9.0, np.float32), descriptions=["vv", "vh"]
    )
    inputs = {S2: [RasterInput(s2, "2024-06-20")], S1: [RasterInput(s1, "2024-06-02")]}
    with FileInputs(inputs, align="date") as st:
        assert len(st.dates) == 2  # different days: separate timesteps
        w = st.read(0, 0, 4, 4)
        assert (w[S1][:, :, 1] == MISSING_VALUE).all() and (w[S1][:, :, 0] == -9.0).all()
        assert (w[S2][:, :, 0] == MISSING_VALUE).all() and (w[S2][:, :, 1] != MISSING_VALUE).all()
    with FileInputs(inputs, align="month") as st:
        assert st.dates == [dt.date(2024, 6, 2)]
        w = st.read(0, 0, 4, 4)
        assert (w[S1] == -9.0).all() and (w[S2] != MISSING_VALUE).all()
    same_month = {S2: [RasterInput(s2, "2024-06-20"), RasterInput(s2, "2024-06-25")]}
    with pytest.raises(RasterInputError, match="both give the month 2024-06"):
        FileInputs(same_month, align="month")
    many = {S1: [RasterInput(s1, dt.date(2024, 1, 1) + dt.timedelta(days=i)) for i in range(13)]}
    with pytest.raises(RasterInputError, match="13 timesteps, more than the model's 12"):
        FileInputs(many)


def test_dates() -> None:
    assert parse_date("2024-02-29") == dt.date(2024, 2, 29)
    assert parse_date("20240229") == dt.date(2024, 2, 29)
    with pytest.raises(RasterInputError, match="cannot parse date"):
        parse_date("29/02/2024")
    # Sentinel product names carry the sensing time: the date is found before the "T".
    assert date_from_filename("S2A_MSIL2A_20240115T101301_x.tif") == dt.date(2024, 1, 15)
    assert date_from_filename("scene_123.tif") is None
    assert date_from_filename("sentinel2_l2a_2024-01-15.tif") == dt.date(2024, 1, 15)
    assert date_from_filename("s1_20231231.tif") == dt.date(2023, 12, 31)
    assert date_from_filename("tile_99999999_2024-03-01.tif") == dt.date(2024, 3, 1)


def test_files_on_one_grid_of_different_sizes_are_read_as_they_are(tmp_path) -> None:
    rng = np.random.default_rng(1)
    s1 = rng.uniform(-20, -5, (2, 20, 24)).astype(np.float32)
    off = Affine(10.0, 0.0, 465_181.5, 0.0, -10.0, 5_080_254.5)  # off the global 10 m grid
    big = write_tif(tmp_path / "big.tif", s1, transform=off, descriptions=["vv", "vh"])
    small = write_tif(tmp_path / "small.tif", s1[:, :12, :16], transform=off,
                      descriptions=["vv", "vh"])
    inputs = {S1: [RasterInput(big, "2024-01-01"), RasterInput(small, "2024-02-01")]}
    with FileInputs(inputs) as st:
        assert st.grid.transform == off and (st.height, st.width) == (20, 24)  # no resampling
        w = st.read(0, 0, 20, 24)[S1]
    np.testing.assert_array_equal(w[:12, :16, 1], np.moveaxis(s1[:, :12, :16], 0, -1))
    assert (w[12:, :, 1] == MISSING_VALUE).all() and (w[:, 16:, 1] == MISSING_VALUE).all()
