"""Quick-look images of embeddings: PCA to RGB and a dependency-free PNG writer."""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np


def pca_rgb(features: np.ndarray, percentiles: tuple[float, float] = (2.0, 98.0)) -> np.ndarray:
    """Map a feature map to colours with its first three principal components.

    Args:
        features: float ``[H, W, D]``; pixels with any NaN are nodata.
        percentiles: per component, values are stretched linearly between these percentiles.

    Returns:
        uint8 ``[H, W, 3]`` (component 1 = red, 2 = green, 3 = blue); nodata pixels are black.
    """
    h, w, d = features.shape
    flat = features.reshape(-1, d).astype(np.float64)
    valid = ~np.isnan(flat).any(axis=1)
    rgb = np.zeros((h * w, 3), dtype=np.uint8)
    if valid.sum() < 2:
        return rgb.reshape(h, w, 3)
    x = flat[valid] - flat[valid].mean(axis=0)
    # Right singular vectors = principal axes; an economy SVD of [N, D] is cheap for D <= 1024.
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    k = min(3, vt.shape[0])
    comps = x @ vt[:k].T
    # Fix the sign of each component so the picture is deterministic (largest loading > 0).
    signs = np.sign(vt[:k][np.arange(k), np.abs(vt[:k]).argmax(axis=1)])
    comps *= signs
    lo, hi = np.percentile(comps, percentiles, axis=0)
    scaled = np.clip((comps - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)
    out = np.zeros((int(valid.sum()), 3))
    out[:, :k] = scaled
    rgb[valid] = np.rint(out * 255).astype(np.uint8)
    return rgb.reshape(h, w, 3)


def true_colour(s2: np.ndarray, bands: list[str] | tuple[str, ...], *,
                white_dn: float = 3000.0) -> np.ndarray:
    """A true-colour picture of Sentinel-2 L2A DN.

    Args:
        s2: ``[H, W, T, C]`` DN (reflectance x 10000); -99999 / NaN / 0 are missing.
        bands: the band names of ``C`` (must hold B04, B03, B02).
        white_dn: DN shown as full brightness (3000 = reflectance 0.3, a usual land stretch).

    Returns:
        uint8 ``[H, W, 3]``: the per-pixel median over time of B04, B03, B02, scaled linearly
        from 0 to ``white_dn``; pixels without any valid value are black.
    """
    idx = [list(bands).index(b) for b in ("B04", "B03", "B02")]
    x = s2[..., idx].astype(np.float64)
    x[(x == -99999.0) | (x <= 0)] = np.nan
    with warnings.catch_warnings():  # all-NaN pixels (no valid date) are expected: black
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(x, axis=2)  # [H, W, 3]
    rgb = np.clip(np.nan_to_num(med / white_dn, nan=0.0), 0.0, 1.0)
    return np.rint(rgb * 255).astype(np.uint8)


def position_variance_share(features: np.ndarray) -> float:
    """Share of an embedding map's variance explained by pixel position alone.

    Fits each feature as ``row effect + column effect`` (an additive two-way layout, by the
    row and column means) and returns ``1 - residual variance / total variance`` over valid
    pixels of ``features`` ``[H, W, D]``. Near 1: the map shows the grid, not the scene (what
    random weights give); trained encoders depend on the content.
    """
    x = features.astype(np.float64)
    if np.isnan(x).any():
        x = np.where(np.isnan(x), np.nanmean(x, axis=(0, 1), keepdims=True), x)
    mean = x.mean(axis=(0, 1), keepdims=True)
    fit = x.mean(axis=1, keepdims=True) + x.mean(axis=0, keepdims=True) - mean
    total = float(((x - mean) ** 2).sum())
    return 1.0 - float(((x - fit) ** 2).sum()) / total if total > 0 else 0.0


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of ``[H, W, ...]`` by an integer ``factor``."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an 8-bit RGB ``[H, W, 3]`` or grayscale ``[H, W]`` image as a PNG (zlib + struct)."""
    img = np.ascontiguousarray(image, dtype=np.uint8)
    if img.ndim == 2:
        color_type, channels = 0, 1
    elif img.ndim == 3 and img.shape[2] == 3:
        color_type, channels = 2, 3
    else:
        raise ValueError(f"expected [H, W] or [H, W, 3] uint8, got shape {image.shape}")
    h, w = img.shape[:2]
    # Each scanline is prefixed with filter type 0 (None).
    raw = np.zeros((h, 1 + w * channels), dtype=np.uint8)
    raw[:, 1:] = img.reshape(h, w * channels)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    png += chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b"")
    path = Path(path)
    path.write_bytes(png)
    return path


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Read back a PNG written by :func:`write_png` (8-bit, unfiltered); for tests and tools."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if (
            zlib.crc32(tag + body)
            != struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0]
        ):
            raise ValueError(f"{path}: CRC mismatch in {tag!r} chunk")
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    if header is None:
        raise ValueError(f"{path}: no IHDR chunk")
    w, h, depth, color_type = header[:4]
    channels = {0: 1, 2: 3}.get(color_type)
    if depth != 8 or channels is None:
        raise ValueError(f"{path}: only 8-bit gray/RGB PNGs are supported")
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + w * channels)
    if raw[:, 0].any():
        raise ValueError(f"{path}: filtered scanlines are not supported")
    img = raw[:, 1:].reshape(h, w, channels)
    return img[..., 0] if channels == 1 else img
