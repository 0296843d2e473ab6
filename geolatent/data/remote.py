"""Robust windowed reads of remote (STAC API) assets: signing, retries, a window cache.

GDAL reads only the COG tiles under a window (HTTP range requests); this module wraps one such
read of one asset for one window:

- **signing**: Planetary Computer SAS tokens from the ``planetary-computer`` package (its token
  cache, ``PC_SDK_SAS_URL`` / ``PC_SDK_SUBSCRIPTION_KEY`` settings); a 403 drops the cached
  token and re-signs before the next attempt.
- **retries**: GDAL retries 5xx itself (``GDAL_HTTP_MAX_RETRY``; a dropped connection is
  re-read); 429 surfaces here and waits the server's ``Retry-After`` (at least the backoff);
  other transient failures are retried with exponential backoff; 404 is final.
- **cache**: each finished (asset, window) read is stored under ``cache_dir/windows`` (atomic
  write), so a rerun after an interruption fetches nothing twice; the cache is bounded by
  ``cache_max_mb`` (least recently used entries evicted); ``offline`` reads only the cache and
  names what is missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import glob
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from geolatent.data.config import StacApiSourceConfig
from geolatent.data.window import Window

BLOB_STORAGE_DOMAIN = ".blob.core.windows.net"


class _Stats:
    """Process-wide counters of asset windows: fetched over HTTP, served from the cache, and
    the bytes of fetched window data (decoded float32 arrays; for progress bars)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fetched = 0
        self.cache_hits = 0
        self.fetched_bytes = 0

    def add(self, *, fetched: int = 0, cache_hits: int = 0, fetched_bytes: int = 0) -> None:
        with self._lock:
            self.fetched += fetched
            self.cache_hits += cache_hits
            self.fetched_bytes += fetched_bytes

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"fetched": self.fetched, "cache_hits": self.cache_hits,
                    "fetched_bytes": self.fetched_bytes}


STATS = _Stats()


class AssetReadError(RuntimeError):
    """An asset window could not be read (after retries); the message names the asset."""


# -- signing ------------------------------------------------------------------------------------
def _blob_account_container(url: str) -> tuple[str, str] | None:
    """(account, container) of an Azure Blob URL: virtual-host style
    ``https://ACCOUNT.blob.core.windows.net/CONTAINER/...`` or path style
    ``http://HOST:PORT/ACCOUNT/CONTAINER/...`` (the storage emulator's layout)."""
    u = urlparse(url)
    parts = [p for p in u.path.split("/") if p]
    if u.netloc.endswith(BLOB_STORAGE_DOMAIN):
        return (u.netloc.split(".")[0], parts[0]) if parts else None
    if len(parts) >= 3:
        return parts[0], parts[1]
    return None


_sign_lock = threading.Lock()


def sign_href(href: str, *, refresh: bool = False) -> str:
    """``href`` signed with a Planetary Computer SAS token for its account and container.

    ``refresh`` drops the cached token first (the storage answered 403: expired or revoked).
    """
    import planetary_computer.sas as sas
    from planetary_computer.settings import Settings

    ac = _blob_account_container(href)
    if ac is None:
        raise AssetReadError(f"{href}: not an Azure Blob URL; cannot sign it")
    base = href.split("?", 1)[0]
    with _sign_lock:
        if refresh:
            sas.TOKEN_CACHE.pop(f"{Settings.get().sas_url}/{ac[0]}/{ac[1]}", None)
        token = sas.get_token(*ac, retry_total=3, retry_backoff_factor=0.5)
    return token.sign(base).href


# -- GDAL HTTP settings -------------------------------------------------------------------------
def gdal_http_options(cfg: StacApiSourceConfig) -> dict[str, str]:
    """GDAL configuration for robust range reads of COGs over HTTP."""
    return {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per file
        "GDAL_HTTP_TIMEOUT": str(int(max(1, cfg.timeout_s))),
        "GDAL_HTTP_CONNECTTIMEOUT": str(int(max(1, min(cfg.timeout_s, 10)))),
        "GDAL_HTTP_MAX_RETRY": str(cfg.retries),
        "GDAL_HTTP_RETRY_DELAY": str(max(cfg.backoff_s, 0.05)),
        # 429 is left to us: GDAL does not wait for Retry-After.
        "GDAL_HTTP_RETRY_CODES": "500,502,503,504",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_MULTIPLEX": "YES",
        "VSI_CACHE": "FALSE",
    }


@functools.lru_cache(maxsize=1)
def _gdal_lib() -> ctypes.CDLL | None:
    """The GDAL library rasterio runs on (its bundled copy in wheels), or None."""
    import rasterio

    here = Path(rasterio.__file__).parent
    found = sorted(glob.glob(str(here.parent / "rasterio.libs" / "libgdal*.so*")))
    name = found[0] if found else ctypes.util.find_library("gdal")
    if not name:
        return None
    lib = ctypes.CDLL(name)
    lib.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
    return lib


def forget_http_state(href: str) -> None:
    """Drop what GDAL cached about ``href`` (size, a failed status): GDAL re-emits the error of
    a failed open without asking the server again, so a retry must clear it first."""
    lib = _gdal_lib()
    if lib is not None:
        lib.VSICurlPartialClearCache(f"/vsicurl/{href}".encode())


def clear_http_cache() -> None:
    """Drop everything GDAL cached of remote files in this process (headers, blocks, failed
    opens): the next reads go to the servers again."""
    lib = _gdal_lib()
    if lib is not None:
        lib.VSICurlClearCache()


_STATUS = re.compile(r"HTTP response code: (\d{3})")


def http_status(message: str) -> int | None:
    m = _STATUS.search(message)
    return int(m.group(1)) if m else None


def retry_after_s(url: str, timeout: float) -> float | None:
    """The server's Retry-After (seconds) for ``url``: one HEAD, as GDAL does not report it."""
    import requests

    try:
        r = requests.head(url, timeout=timeout, allow_redirects=True)
    except requests.RequestException:
        return None
    if r.status_code in (429, 503) and r.headers.get("Retry-After", "").strip().isdigit():
        return float(r.headers["Retry-After"])
    return None


# -- the window cache ---------------------------------------------------------------------------
STALE_TMP_S = 600.0  # a cache temp file this old was left by a killed run


class WindowCache:
    """Fetched asset windows on disk: ``root/windows/<key>.npz``, bounded by ``max_mb``."""

    def __init__(self, root: Path, max_mb: float) -> None:
        self.dir = Path(root) / "windows"
        self.max_bytes = int(max_mb * 1024 * 1024)

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        p = self.path(key)
        try:
            with np.load(p) as z:
                out = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError):
            return None
        os.utime(p)  # recently used
        return out

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        p = self.path(key)
        tmp = p.with_name(f".{p.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, p)
        self.evict()

    def evict(self) -> None:
        """Remove least recently used entries until the cache fits ``max_bytes``."""
        entries = []
        for p in self.dir.glob("*.npz"):
            if p.name.startswith("."):
                # another writer's file in progress, or left by a killed run (then old)
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - p.stat().st_mtime > STALE_TMP_S:
                        p.unlink()
                continue
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime, st.st_size, p))
        total = sum(e[1] for e in entries)
        for _, size, p in sorted(entries):
            if total <= self.max_bytes:
                break
            p.unlink(missing_ok=True)
            total -= size


def window_key(uri: str, indexes: list[int], window: Window, extra: dict) -> str:
    """Stable cache key of one asset window (the unsigned URL, bands, grid, read settings)."""
    payload = {
        "uri": uri.split("?", 1)[0] if "sig=" in uri else uri,
        "indexes": indexes, "crs": window.crs, "pixel_bounds": list(window.pixel_bounds),
        "resolution": window.resolution, **extra,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def fetch_window(
    cfg: StacApiSourceConfig,
    cache: WindowCache,
    key: str,
    uri: str,
    read: Callable[[str], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """One asset window, from the cache or read with signing and retries, then cached.

    Args:
        read: reads the window from a (signed) href; raises an exception whose message holds
            GDAL's error (``HTTP response code: NNN`` for HTTP errors).

    Raises:
        AssetReadError: offline and not cached, or the read failed after ``cfg.retries``
            retries (the message names the asset and the last error).
    """
    hit = cache.get(key)
    if hit is not None:
        STATS.add(cache_hits=1)
        return hit
    if cfg.offline:
        raise AssetReadError(f"{uri}: offline and this window is not in the cache ({cache.dir})")
    href = sign_href(uri) if cfg.signing == "planetary-computer" else uri
    last = ""
    for attempt in range(cfg.retries + 1):
        try:
            arrays = read(href)
        except Exception as e:  # GDAL / rasterio errors of many types; classified by message
            last = str(e)
            status = http_status(last)
            if status == 404 or attempt == cfg.retries:
                break
            wait = cfg.backoff_s * (2**attempt)
            if status == 403 and cfg.signing == "planetary-computer":
                href = sign_href(uri, refresh=True)
                continue
            if status == 403:
                break
            if status == 429:
                wait = max(wait, retry_after_s(href, cfg.timeout_s) or 0.0)
            time.sleep(min(wait, 120.0))
            forget_http_state(href)
            continue
        cache.put(key, arrays)
        STATS.add(fetched=1, fetched_bytes=sum(int(a.nbytes) for a in arrays.values()))
        return arrays
    raise AssetReadError(f"{uri}: {last}")
