"""PCA RGB overview of an archive zone, for viewing.

The stored coordinates of a PCA archive are already principal components (ordered by explained
variance), so the overview is the first three coordinates of each unit vector; other vectors (a
Matryoshka prefix of a distilled embedding) are first projected on the three principal axes of a
sample of the zone's vectors. Each channel is stretched linearly from its 2nd to its 98th
percentile to 1-255; 0 is nodata. Written as ``overview_rgb`` uint8
``[3, rows, cols]`` in the zone group, read one strip of tiles at a time.
"""

from __future__ import annotations

import numpy as np
import zarr

from geolatent.archive.quantize import decode


def zone_overview(zone: zarr.Group, principal: bool = True) -> None:
    """Write ``overview_rgb``; ``principal``: the stored coordinates are principal components."""
    emb = zone["embeddings"]
    step = emb.chunks[0]
    # Whole vectors are read: an int8 prefix cannot be renormalized without the full norm.
    samples = []
    for _, block in _strips_full(emb, step):
        v, ok = decode(block)
        samples.append(v[ok][::7])
    pts = np.concatenate(samples) if samples else np.zeros((0, emb.shape[-1]), np.float32)
    axes = np.eye(3, emb.shape[-1], dtype=np.float32)  # the first three coordinates
    if not principal and len(pts) >= 3:
        x = pts.astype(np.float64)
        axes = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)[2][:3].astype(np.float32)
    pts = pts @ axes.T
    if len(pts) == 0:
        lo, hi = np.zeros(3), np.ones(3)
    else:
        lo, hi = np.percentile(pts, 2, axis=0), np.percentile(pts, 98, axis=0)
    hi = np.where(hi > lo, hi, lo + 1e-6)
    rgb = np.zeros((3, *emb.shape[:2]), dtype=np.uint8)
    for r, block in _strips_full(emb, step):
        v, ok = decode(block)
        x = np.clip((v @ axes.T - lo) / (hi - lo), 0, 1) * 254 + 1
        x[~ok] = 0
        rgb[:, r:r + block.shape[0]] = np.moveaxis(x.round().astype(np.uint8), -1, 0)
    zone.create_array("overview_rgb", data=rgb, chunks=(3, step, step), overwrite=True,
                      dimension_names=("band", "y", "x"))  # fmt: skip


def _strips_full(arr: zarr.Array, step: int):
    for r in range(0, arr.shape[0], step):
        yield r, arr[r:r + step]


def write_overviews(root: zarr.Group) -> None:
    principal = (root.attrs.get("geoemb:reduction") or {}).get("method", "pca") == "pca"
    for name in root["zones"]:
        zone_overview(root["zones"][name], principal)
