"""A FAISS index of an archive's vectors, built once and stored beside the archive.

Kind: ``IVF{nlist}_HNSW32,SQ8`` with inner-product metric (faiss ``index_factory``): vectors are
grouped into ``nlist`` inverted lists around k-means centroids (found by an HNSW graph over the
centroids, so adding millions of vectors stays fast) and stored as 8-bit scalar-quantized codes
(``dims`` bytes per vector plus an 8-byte id). A search scans the ``nprobe`` lists nearest the
query. ``nlist`` defaults to ``4 * sqrt(N)`` rounded to a power of two (16 ... 16384).

Files, for an archive ``region.zarr``: ``region.faiss`` (the index) and ``region.faiss.json``
(what it was built from: model, dims, zones and their grid sizes, vector count, nlist, nprobe).
An index whose record does not match the archive is rebuilt (atomically) on the next search.

Ids: ``zone_offset + row * cols + col`` over the archive's zones in order.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_NPROBE = 48
TRAIN_MAX = 131_072
ADD_BATCH = 1 << 20


def index_paths(archive_path: Path) -> tuple[Path, Path]:
    from geolatent.archive.store import beside

    return beside(archive_path, ".faiss"), beside(archive_path, ".faiss.json")


def _record(archive) -> dict:
    return {"model": archive.model, "dims": archive.dims,
            "zones": [[z.crs, list(z.shape)] for z in archive.zones],
            "build": archive.info.attrs.get("geolatent:build")}  # fmt: skip


def default_nlist(n: int) -> int:
    return int(min(16384, max(16, 2 ** round(math.log2(max(4 * math.sqrt(max(n, 1)), 1))))))


@dataclass
class VectorIndex:
    """An opened index and the zone grid it maps ids onto."""

    index: object
    meta: dict
    offsets: np.ndarray  # [Z + 1] id offsets of the zones
    cols: np.ndarray  # [Z] columns of each zone

    def search(self, w: np.ndarray, b: float, kind: str, top: int, skip: set,
               nprobe: int | None = None) -> list:
        import faiss

        from geolatent.archive.search import Match

        if w.shape != (self.meta["dims"],):
            raise ValueError(f"query has {w.shape[-1]} dims; the index holds "
                             f"{self.meta['dims']}-d vectors (wrong dims)")  # fmt: skip
        ivf = faiss.extract_index_ivf(self.index)
        ivf.nprobe = int(nprobe or self.meta.get("nprobe", DEFAULT_NPROBE))
        k = top + len(skip)
        scores, ids = self.index.search(w[None].astype(np.float32), k)
        out = []
        for s, i in zip(scores[0], ids[0], strict=True):
            if i < 0:
                continue
            zi = int(np.searchsorted(self.offsets, i, side="right") - 1)
            r, c = divmod(int(i - self.offsets[zi]), int(self.cols[zi]))
            if (zi, r, c) in skip:
                continue
            s = float(s) + b
            if kind == "classifier":
                s = 1.0 / (1.0 + math.exp(-s))
            out.append(Match(zi, r, c, s))
            if len(out) == top:
                break
        return out


def build_index(archive, nlist: int | None = None, nprobe: int = DEFAULT_NPROBE,
                seed: int = 0) -> VectorIndex:
    """Build the index from every valid vector of ``archive`` and store it beside it."""
    import faiss

    t0 = time.perf_counter()
    sizes = np.array([z.shape[0] * z.shape[1] for z in archive.zones], np.int64)
    offsets = np.r_[0, np.cumsum(sizes)]
    cols = np.array([z.shape[1] for z in archive.zones], np.int64)
    # Training sample: a fixed fraction of every strip (deterministic).
    rng = np.random.default_rng(seed)
    frac = min(1.0, 2.0 * TRAIN_MAX / max(int(sizes.sum()), 1))
    train, n_valid = [], 0
    for _, _, v, ok in archive.iter_vectors():
        vv = v[ok]
        n_valid += len(vv)
        if len(vv):
            train.append(vv[rng.random(len(vv)) < frac])
    x = np.concatenate(train) if train else np.zeros((0, archive.dims), np.float32)
    if n_valid == 0:
        raise ValueError(f"{archive.path}: no valid vectors to index")
    x = x[rng.permutation(len(x))[:TRAIN_MAX]]
    nlist = nlist or default_nlist(n_valid)
    nlist = max(1, min(nlist, len(x) // 39))  # faiss wants >= 39 training points per list
    index = faiss.index_factory(archive.dims, f"IVF{nlist}_HNSW32,SQ8",
                                faiss.METRIC_INNER_PRODUCT)
    index.train(np.ascontiguousarray(x, dtype=np.float32))
    t_train = time.perf_counter() - t0
    buf_v, buf_i, nbuf = [], [], 0
    for zi, r0, v, ok in archive.iter_vectors():
        rows, cc = np.nonzero(ok)
        if not len(rows):
            continue
        buf_v.append(v[rows, cc])
        buf_i.append(offsets[zi] + (rows + r0).astype(np.int64) * cols[zi] + cc)
        nbuf += len(rows)
        if nbuf >= ADD_BATCH:
            index.add_with_ids(np.concatenate(buf_v), np.concatenate(buf_i))
            buf_v, buf_i, nbuf = [], [], 0
    if nbuf:
        index.add_with_ids(np.concatenate(buf_v), np.concatenate(buf_i))
    meta = dict(_record(archive), vectors=int(index.ntotal), nlist=int(nlist),
                nprobe=int(nprobe), kind=f"IVF{nlist}_HNSW32,SQ8", metric="inner_product",
                train_vectors=int(len(x)), train_seconds=round(t_train, 2),
                build_seconds=round(time.perf_counter() - t0, 2))  # fmt: skip
    ipath, mpath = index_paths(archive.path)
    tmp = ipath.with_name(f".{ipath.name}.part")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, ipath)
    tmpm = mpath.with_name(f".{mpath.name}.part")
    tmpm.write_text(json.dumps(meta, indent=1))
    os.replace(tmpm, mpath)
    return VectorIndex(index, meta, offsets, cols)


def open_index(archive) -> VectorIndex | None:
    """The stored index if it matches the archive, else None."""
    import faiss

    ipath, mpath = index_paths(archive.path)
    if not (ipath.exists() and mpath.exists()):
        return None
    meta = json.loads(mpath.read_text())
    rec = json.loads(json.dumps(_record(archive)))
    if any(meta.get(k) != v for k, v in rec.items()):
        return None
    sizes = np.array([z.shape[0] * z.shape[1] for z in archive.zones], np.int64)
    cols = np.array([z.shape[1] for z in archive.zones], np.int64)
    return VectorIndex(faiss.read_index(str(ipath)), meta, np.r_[0, np.cumsum(sizes)], cols)


def open_or_build_index(archive) -> VectorIndex:
    if getattr(archive.info, "complete", True) is False:
        from geolatent.archive.store import ArchiveError

        raise ArchiveError(f"{archive.path} is not complete (its build was interrupted); rerun "
                           f"`geolatent archive build` with the same arguments to finish it")
    return open_index(archive) or build_index(archive)
