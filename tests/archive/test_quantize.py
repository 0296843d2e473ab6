"""The int8 rule (signed square root of unit vectors, the Satellite Embedding rule)."""

from __future__ import annotations

import numpy as np
import pytest

from geolatent.archive.quantize import decode, dequantization_cosine, encode, quantization_attrs


def _unit(n, d, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_int8_rule_matches_the_published_dequantization():
    q = np.array([[-127, -64, -1, 0, 1, 64, 127]], dtype=np.int8)
    x, ok = decode(q)
    raw = np.sign(q / 127.5) * (q / 127.5) ** 2  # sign(q) * (q / 127.5)^2
    np.testing.assert_allclose(x[0], raw[0] / np.linalg.norm(raw[0]), rtol=1e-6)
    assert ok.all()


@pytest.mark.parametrize("dims", [64, 128])
def test_int8_round_trip_cosine(dims):
    v = _unit(5000, dims)
    cos = dequantization_cosine(v, "int8")
    print(f"\nint8 dequantized vs float cosine ({dims} dims, Gaussian unit vectors): {cos:.6f}")
    assert cos > 0.999
    # the signed square root beats a linear code of the same width on unit vectors
    lin = np.clip(np.rint(v * 127), -127, 127) / 127
    lin /= np.linalg.norm(lin, axis=1, keepdims=True)
    assert cos > float((lin * v).sum(1).mean())
    assert dequantization_cosine(v, "float16") > 0.99999


def test_nodata_is_minus_128_and_nan():
    v = _unit(3, 16)
    v[1] = np.nan
    q = encode(v, "int8")
    assert (q[1] == -128).all() and (q[[0, 2]] > -128).all()
    _, ok = decode(q)
    assert ok.tolist() == [True, False, True]
    f = encode(v, "float16")
    assert np.isnan(f[1]).all() and decode(f)[1].tolist() == [True, False, True]


def test_bad_dtype_and_attrs():
    with pytest.raises(ValueError, match="dtype must be one of int8, float16, float32"):
        encode(_unit(2, 4), "int4")
    a = quantization_attrs("int8")
    assert a["nodata"] == -128 and a["scale"] == 127.5 and "sign(q)" in a["dequantize"]
