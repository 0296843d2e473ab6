"""On-disk cache of frozen embeddings, so a sweep (seeds, label fractions, kNN and linear probes)
encodes each split once.

One ``<key>.npy`` per (model weights, dataset content, split, patch size, pooled / feature map),
written in chunks into a memory-mapped ``.npy`` and renamed into place when complete (a crash
never leaves a truncated entry), read back with ``mmap_mode="r"``. A ``<key>.json`` beside it
records what the key stands for. The key hashes the encoder's weights, not the checkpoint path,
so a moved checkpoint still hits and a changed one never does.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

CACHE_ENV = "GEOLATENT_CACHE_DIR"


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "geolatent" / "embeddings"


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the encoder's state dict (names, shapes, dtypes, bytes). Memoized per model
    object (weights are assumed not to change while cached embeddings are in use)."""
    cached = getattr(model, "_geolatent_fingerprint", None)
    if cached:
        return cached
    enc = getattr(model, "encoder", model)
    h = hashlib.sha256()
    for name, t in sorted(enc.state_dict().items()):
        a = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(a.shape)}:{a.dtype}".encode())
        h.update(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    fp = h.hexdigest()
    model._geolatent_fingerprint = fp  # type: ignore[attr-defined]
    return fp


def cache_key(model_fp: str, dataset_fp: str, split: str, patch_size: int, kind: str) -> str:
    text = json.dumps([model_fp, dataset_fp, split, int(patch_size), kind, "v1"])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class EmbeddingCache:
    """Embeddings on disk, memory-mapped on read.

    Args:
        root: cache folder (default ``$GEOLATENT_CACHE_DIR`` or ``~/.cache/geolatent/embeddings``);
            ``enabled=False`` computes every time and stores nothing.
    """

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        p = self.path(key)
        if self.enabled and p.exists():
            self.hits += 1
            return np.load(p, mmap_mode="r")
        return None

    def get_or_compute(self, key: str, n: int, chunks: Iterable[np.ndarray],
                       meta: dict | None = None) -> np.ndarray:  # fmt: skip
        """The cached array for ``key``; on a miss, consume ``chunks`` (consecutive rows,
        ``n`` in total) into a memory-mapped file first.

        Returns:
            ``[n, ...]`` float32, memory-mapped (read-only) when the cache is enabled.
        """
        hit = self.get(key)
        if hit is not None:
            return hit
        self.misses += 1
        it = iter(chunks)
        if not self.enabled:
            return np.concatenate(list(it)) if n else np.zeros((0,), np.float32)
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(key)
        tmp = final.with_name(f".{key}.{os.getpid()}.tmp.npy")
        out = None
        row = 0
        try:
            for chunk in it:
                if out is None:
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                                    shape=(n, *chunk.shape[1:]))  # fmt: skip
                out[row : row + len(chunk)] = chunk
                row += len(chunk)
            if out is None or row != n:
                raise RuntimeError(f"embedding produced {row} rows, expected {n}")
            out.flush()
            del out
            os.replace(tmp, final)
            (self.root / f"{key}.json").write_text(json.dumps(meta or {}, indent=1, default=str))
        finally:
            if tmp.exists():
                tmp.unlink()
        return np.load(final, mmap_mode="r")
