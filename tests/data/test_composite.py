"""Pixel arithmetic: median composites, first-valid mosaics, cloud masks, dB conversion."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from geolatent.data.composite import (
    cloud_invalid,
    linear_to_db,
    mosaic_first_valid,
    nanmedian_stack,
)
from geolatent.data.config import CloudMaskConfig

values = st.one_of(st.just(np.nan), st.floats(-1e4, 1e4, allow_nan=False, width=32))


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 7), st.integers(1, 3), st.integers(1, 4)),
        elements=values,
    )
)
def test_nanmedian_stack_matches_numpy(stack):
    got = nanmedian_stack(stack)
    all_nan = np.isnan(stack).all(axis=0)
    assert np.array_equal(np.isnan(got), all_nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        want = np.nanmedian(stack.astype(np.float64), axis=0)
    np.testing.assert_allclose(got[~all_nan], want[~all_nan], rtol=1e-6, atol=1e-3)


def test_mosaic_takes_first_valid_and_stops_early():
    a = np.array([[[1.0, np.nan], [np.nan, np.nan]]], np.float32)
    b = np.array([[[9.0, 2.0], [3.0, np.nan]]], np.float32)
    c = np.array([[[9.0, 9.0], [9.0, 4.0]]], np.float32)
    reads = []

    def layers():
        for x in (a, b, c, c):
            reads.append(1)
            yield x

    out = mosaic_first_valid(layers())
    assert out.tolist() == [[[1.0, 2.0], [3.0, 4.0]]]
    assert len(reads) == 3  # the fourth layer was never read
    assert mosaic_first_valid([]) is None


def test_scl_cloud_mask():
    scl = np.array([[4, 5, 8, 9], [3, 10, 11, np.nan]], np.float32)
    invalid = cloud_invalid(scl, CloudMaskConfig(band="SCL"))
    assert invalid.tolist() == [[False, False, True, True], [True, True, False, True]]
    binary = cloud_invalid(
        np.array([[0, 1, 255]], np.float32), CloudMaskConfig(band="m", kind="binary")
    )
    assert binary.tolist() == [[False, True, True]]
    values = CloudMaskConfig(band="m", kind="values", invalid_values=[2])
    assert cloud_invalid(np.array([[1, 2]], np.float32), values).tolist() == [[False, True]]


def test_linear_to_db():
    out = linear_to_db(np.array([1.0, 0.1, 0.0, -1.0, np.nan], np.float32))
    np.testing.assert_allclose(out[:2], [0.0, -10.0], atol=1e-6)
    assert np.isnan(out[2:]).all()
