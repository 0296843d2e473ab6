"""Storage encodings of unit embedding vectors: int8 (signed square root), float16, float32.

Every stored vector is L2-normalized first, so cosine similarity is a dot product.

int8 rule (the same as Google's Satellite Embedding / AlphaEarth COGs, so one dequantizer reads
both)::

    quantize:    q = clip(round(sign(x) * sqrt(|x|) * 127.5), -127, 127)      (int8)
    dequantize:  x = sign(q) * (q / 127.5) ** 2, then L2-normalize             (float32)
    nodata:      q = -128 in every dimension

The square root spends the 8 bits where unit-vector components live: a 128-d unit vector has
components of about ``1/sqrt(128) = 0.09``, which a linear ``x * 127`` code would squeeze into
about a dozen levels; after the square root they span about 40. The cosine similarity between
a dequantized vector and its float original is reported by :func:`dequantization_cosine`
(typically above 0.999 for 128 dims; measured figures in ``docs/archive.md``).

float16 / float32 store the unit vector as is; nodata is NaN.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Dtype = Literal["int8", "float16", "float32"]
DTYPES: tuple[str, ...] = ("int8", "float16", "float32")
INT8_NODATA = -128
INT8_SCALE = 127.5

INT8_RULE = "signed_square_root"
QUANTIZE_FORMULA = "q = clip(round(sign(x) * sqrt(abs(x)) * 127.5), -127, 127)"
DEQUANTIZE_FORMULA = "x = sign(q) * (q / 127.5) ** 2, then L2-normalize; q == -128 is nodata"


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return dtype


def unit(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """L2-normalize along ``axis`` (float32); all-zero or NaN vectors become NaN."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    bad = ~(np.isfinite(n) & (n > 0))
    out = x / np.where(bad, 1.0, n)
    return np.where(bad, np.float32(np.nan), out).astype(np.float32)


def encode(vectors: np.ndarray, dtype: str) -> np.ndarray:
    """Unit float vectors ``[..., D]`` (NaN = nodata) -> stored values ``[..., D]`` of ``dtype``."""
    check_dtype(dtype)
    v = unit(vectors)
    missing = np.isnan(v).any(axis=-1)
    if dtype == "int8":
        q = np.clip(np.rint(np.sign(v) * np.sqrt(np.abs(v)) * INT8_SCALE), -127, 127)
        q[missing] = INT8_NODATA
        return q.astype(np.int8)
    out = v.astype(dtype)
    out[missing] = np.nan
    return out


def decode(stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stored values ``[..., D]`` -> (unit float32 vectors ``[..., D]``, valid bool ``[...]``).

    Invalid vectors come back as zeros (they score 0 against any query) with ``valid`` False.
    """
    a = np.asarray(stored)
    if a.dtype == np.int8:
        valid = ~(a == INT8_NODATA).all(axis=-1)
        x = a.astype(np.float32) / INT8_SCALE
        x = np.sign(x) * x * x
    else:
        x = a.astype(np.float32)
        valid = ~np.isnan(x).any(axis=-1)
    x[~valid] = 0.0
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    x = np.divide(x, n, out=np.zeros_like(x), where=n > 0)
    return x, valid & (n[..., 0] > 0)


def dequantization_cosine(vectors: np.ndarray, dtype: str) -> float:
    """Mean cosine similarity of ``decode(encode(v))`` to ``v`` over valid vectors ``[N, D]``."""
    v = unit(vectors.reshape(-1, vectors.shape[-1]))
    ok = ~np.isnan(v).any(axis=-1)
    if not ok.any():
        return float("nan")
    d, _ = decode(encode(v[ok], dtype))
    return float((d * v[ok]).sum(-1).mean())


def quantization_attrs(dtype: str) -> dict:
    """The ``geoemb:quantization`` attribute for ``dtype`` (the rule and its inverse)."""
    if dtype == "int8":
        return {"dtype": "int8", "rule": INT8_RULE, "scale": INT8_SCALE,
                "nodata": INT8_NODATA, "quantize": QUANTIZE_FORMULA,
                "dequantize": DEQUANTIZE_FORMULA, "unit_vectors": True}  # fmt: skip
    return {"dtype": dtype, "rule": "none", "nodata": "NaN", "unit_vectors": True,
            "dequantize": "x (already unit length); NaN is nodata"}  # fmt: skip
