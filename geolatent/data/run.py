"""The tiled-run driver's safety and resume layer: one scheme for every long job.

Every command that works tile by tile or window by window (``data build``, fine-tuning window
preparation, ``predict``, ``embed``) follows the same steps::

    plan (tiles on the global grid, with a fingerprint of everything that shapes the result)
      -> OutputLock(output)                  one run per output, "already running (pid N)"
      -> WorkStore(output's .work area, fingerprint)
           store.pending(keys)               what is left (completed keys carry a marker)
           executor.map_unordered(...)       serial / process pool / Dask (data.executor)
           store.put(key, array, record)     atomic: temp file -> os.replace, then the marker
      -> wait_for_ranks(store, keys by rank) torchrun ranks; timeout naming the missing rank
      -> writer (COG, HDF5 samples, archive)  published atomically at the final path
      -> store.discard()                     the .work area goes once the output is complete

Resume: a rerun with the same fingerprint skips keys whose marker exists; a different
fingerprint empties the work area (never anything outside it). Temporary files (``.tmp-*``)
left by a killed run are removed when the store is opened again. Markers are written after
the data they describe, so a key is either complete or absent, whatever point a kill -9 hits.

A writer plugs in by reading the store: ``store.keys()``, ``store.get_array(key)``,
``store.get_record(key)`` (see ``docs`` in the handoff for the archive writer).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

WORK_SUFFIX = ".work"
TMP_TAG = ".tmp-"
STORE_FILE = "store.json"
LOCK_FILE = "lock"


class RunLockedError(RuntimeError):
    """Another process is writing the same output."""


class OutputConflictError(ValueError):
    """An output would overwrite an input or a user's file."""


class DiskFullError(RuntimeError):
    """The disk filled up; the message names the path and the free space."""


class OutputNotWritableError(ValueError):
    """An output sits on a read-only file system or in a folder this user cannot write."""


# -- paths --------------------------------------------------------------------------------------
def work_dir_for(output: str | os.PathLike) -> Path:
    """The ``.work`` area of an output: ``<out>.work`` beside a file output, ``<dir>/.work``
    inside a folder output (a path without a suffix, or an existing folder)."""
    out = Path(output)
    if out.is_dir() or not out.suffix:
        return out / WORK_SUFFIX
    return out.with_name(out.name + WORK_SUFFIX)


def temp_path(final: str | os.PathLike) -> Path:
    """A temporary sibling of ``final`` (same folder, so ``os.replace`` is atomic)."""
    final = Path(final)
    return final.with_name(f".{final.name}{TMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def write_atomic(final: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` then move ``tmp`` onto ``final``: readers see the old or the complete
    new file, never a partial one. A failure removes ``tmp`` and re-raises (a full disk as
    :class:`DiskFullError`)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        write(tmp)
        os.replace(tmp, final)
    except OSError as e:
        _remove(tmp)
        clear = output_error(e, final)
        if clear is e:
            raise
        raise clear from e
    except BaseException:
        _remove(tmp)
        raise
    return final


def write_json_atomic(final: str | os.PathLike, payload: Any) -> Path:
    """``payload`` as JSON at ``final``, atomically."""
    return write_atomic(final, lambda p: p.write_text(json.dumps(payload, indent=1)))


def _remove(path: Path) -> None:
    """Best-effort removal of a temporary (on a read-only file system it never existed)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def clean_temporaries(folder: str | os.PathLike) -> int:
    """Remove ``.*.tmp-*`` files and folders left in ``folder`` (not recursive) by a killed
    run; returns how many. Only this module's temp-name pattern is touched."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for p in folder.glob(f".*{TMP_TAG}*"):
        _remove(p)
        n += 1
    return n


# -- disk ---------------------------------------------------------------------------------------
def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    p = Path(path).resolve()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def disk_error(e: OSError, path: str | os.PathLike) -> Exception:
    """A full-disk ``OSError`` as one line naming the path and the free space; others as is."""
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return e
    free = free_bytes(path)
    return DiskFullError(
        f"disk full while writing {path} ({free / 2**20:.1f} MiB free); free space and rerun "
        "the same command to resume",
    )


def check_free_space(path: str | os.PathLike, needed_bytes: int, what: str = "the output") -> None:
    """Raise :class:`DiskFullError` before a run when ``needed_bytes`` do not fit at ``path``."""
    free = free_bytes(path)
    if needed_bytes > free:
        raise DiskFullError(
            f"{what} needs about {needed_bytes / 2**20:.1f} MiB but only {free / 2**20:.1f} MiB "
            f"are free at {Path(path).resolve().parent}; free space or choose another output",
        )


# -- outputs must be writable -------------------------------------------------------------------
def _nearest_folder(path: Path) -> Path:
    """The folder a write to ``path`` lands in: ``path`` itself when it is a folder, else its
    nearest existing parent (an output file is replaced through a temp file beside it; that
    parent may turn out to be a file)."""
    p = path.absolute()
    if p.is_dir():
        return p
    p = p.parent
    while not p.exists():
        p = p.parent
    return p


def _why_not_writable(folder: Path) -> str:
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"{folder} is on a read-only file system"
    except OSError:
        pass
    return f"{folder} is not writable by this user"


def check_writable(path: str | os.PathLike, option: str = "output") -> None:
    """Refuse an output that cannot be written, before any work (one line, no traceback).

    Checks the folder the output's files land in (``path`` if it is a folder, else its nearest
    existing parent) for a read-only file system (a read-only mount refuses even root) and
    for write permission.

    Args:
        path: the output file or folder (it need not exist yet).
        option: how the user named the output (``--out`` in the CLI, ``out_path`` in Python,
            ``output_dir`` in a config).

    Raises:
        OutputNotWritableError: naming ``path``, the folder that blocks it and what to change.
    """
    folder = _nearest_folder(Path(path))
    if not folder.is_dir():  # e.g. notes.txt/out/map.tif
        raise OutputNotWritableError(
            f"{option} {path} cannot be written: {folder} is a file, not a folder; give "
            f"{option} a path in a folder"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputNotWritableError(
            f"{option} {path} cannot be written: {_why_not_writable(folder)}; give {option} a "
            "path on a writable disk"
        )


def not_writable_error(e: OSError, path: str | os.PathLike) -> OutputNotWritableError | None:
    """A read-only-file-system or permission ``OSError`` met while writing ``path`` as the same
    one-line error :func:`check_writable` gives; ``None`` for other errors."""
    if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
        return None
    folder = _nearest_folder(Path(path))
    return OutputNotWritableError(
        f"cannot write {path}: {_why_not_writable(folder)}; choose an output on a writable disk"
    )


def output_error(e: OSError, path: str | os.PathLike) -> Exception:
    """An ``OSError`` met while writing ``path`` as one line saying what to change: a read-only
    file system or no permission (:class:`OutputNotWritableError`), a full disk
    (:class:`DiskFullError`, naming the free space); any other error as it is."""
    return not_writable_error(e, path) or disk_error(e, path)


# -- outputs never destroy inputs ---------------------------------------------------------------
def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_not_input(
    output: str | os.PathLike, inputs: Iterable[str | os.PathLike], option: str = "output"
) -> None:
    """Refuse an output that is one of the inputs (it would be overwritten).

    Args:
        output: the output path.
        inputs: every input file (URLs are ignored).
        option: how the user named the output (``--out`` in the CLI, ``out_path`` in Python).
    """
    out = Path(output)
    for src in inputs:
        s = str(src)
        if "://" in s:
            continue
        if _same_file(out, Path(s)):
            raise OutputConflictError(
                f"{option} {out} is also an input; writing it would destroy the input. "
                f"Choose another {option}."
            )


def marker_name(kind: str) -> str:
    """The marker file that says a folder holds a geolatent artefact of ``kind``."""
    return f".geolatent-{kind}"


def prepare_output_dir(path: str | os.PathLike, kind: str, option: str = "output") -> Path:
    """Make ``path`` a folder geolatent may write a ``kind`` artefact into, and mark it.

    A new folder, an empty folder or a folder that already holds a ``kind`` artefact (its
    marker file) is accepted; a file, or a folder holding anything else (the user's data), is
    an error naming the path: nothing of the user's is ever replaced or deleted. An output that
    cannot be written (read-only file system, no permission) is an error before anything else.
    """
    p = Path(path)
    check_writable(p, option)
    marker = p / marker_name(kind)
    if p.exists() and not p.is_dir():
        raise OutputConflictError(
            f"{option} {p} is an existing file, not a folder; choose a new folder for the {kind}"
        )
    if p.is_dir() and not marker.exists():
        other = [c.name for c in p.iterdir() if c.name != WORK_SUFFIX]
        if other:
            raise OutputConflictError(
                f"{option} {p} is a folder with other files ({', '.join(sorted(other)[:3])}"
                f"{', ...' if len(other) > 3 else ''}) and no geolatent {kind} in it; choose a "
                "new folder (nothing there is changed)"
            )
    p.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        write_json_atomic(marker, {"kind": kind})
    return p


# -- one run per output -------------------------------------------------------------------------
class OutputLock:
    """An exclusive lock on an output for the life of a run (``fcntl.flock``, released by the OS
    when the process dies, so a kill -9 never leaves a stale lock).

    Entering it first checks that the output can be written (:func:`check_writable`), so every
    run that locks its output refuses a read-only one with one line before any work; once
    locked, the output's own temporaries left by a killed run (``.<name>.tmp-*`` beside it) are
    removed.

    Args:
        output: the output file or folder; the lock file lives in its ``.work`` area.
        what: how the error names the run (``predict``, ``data build``, ...).
        option: how the user named the output, for the not-writable error.
    """

    def __init__(
        self, output: str | os.PathLike, what: str = "a run", name: str = LOCK_FILE,
        option: str = "output",
    ) -> None:  # fmt: skip
        self.output = Path(output)
        self.what = what
        self.option = option
        self.path = work_dir_for(output) / name
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        check_writable(self.output, self.option)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a full disk cannot even hold the lock file
            raise output_error(e, self.path) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.read(fd, 32).decode().strip() or "?"
            finally:
                os.close(fd)
            raise RunLockedError(
                f"{self.what} on {self.output} is already running (pid {pid}); wait for it to "
                "finish or stop it, or choose another output"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError as e:
            os.close(fd)
            raise output_error(e, self.path) from e
        self._fd = fd
        if self.path.name == LOCK_FILE:  # the run that publishes the output (not a rank > 0)
            self._clean_output_temporaries()
        return self

    def _clean_output_temporaries(self) -> None:
        """Remove what a killed run left while publishing this output (its ``temp_path``
        siblings): only runs holding this lock write them, so none is being written now."""
        for p in self.output.parent.glob(f".{self.output.name}{TMP_TAG}*"):
            _remove(p)

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


# -- the window store ---------------------------------------------------------------------------
class WorkStore:
    """Finished work items of one run, keyed by name, each with a completion marker.

    Layout of ``root`` (an output's ``.work`` area, or a folder of its own)::

        store.json            {"fingerprint": ...}: the plan the items belong to
        <key>.npy             the item's array (optional)
        <key>.json            the completion marker (written last) with the item's record

    Args:
        root: the folder.
        fingerprint: identifies the plan; items of another fingerprint are discarded.
        create: prepare the folder (rank 0); other ranks open it with ``create=False`` after
            :meth:`wait_ready`.
    """

    def __init__(self, root: str | os.PathLike, fingerprint: str, *, create: bool = True) -> None:
        self.root = Path(root)
        self.fingerprint = fingerprint
        if create:
            self._prepare()

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        clean_temporaries(self.root)
        if self._stored_fingerprint() != self.fingerprint:
            for p in self.root.iterdir():  # another plan's items: only the store's own files
                if p.suffix in (".npy", ".json"):
                    p.unlink(missing_ok=True)
            write_json_atomic(self.root / STORE_FILE, {"fingerprint": self.fingerprint})

    def _stored_fingerprint(self) -> str | None:
        try:
            return json.loads((self.root / STORE_FILE).read_text()).get("fingerprint")
        except (OSError, ValueError):
            return None

    def wait_ready(self, timeout_s: float, poll_s: float = 0.2) -> None:
        """Wait until rank 0 has prepared the store for this fingerprint."""
        deadline = time.monotonic() + timeout_s
        while self._stored_fingerprint() != self.fingerprint:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"rank 0 did not prepare {self.root} within {timeout_s:.0f} s; check rank 0's "
                    "log (it may have failed before starting)"
                )
            time.sleep(poll_s)

    def _marker(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def done(self, key: str) -> bool:
        """Whether ``key`` is complete."""
        return self._marker(key).exists()

    def pending(self, keys: Iterable[str]) -> list[str]:
        """The keys not complete yet, in the given order."""
        return [k for k in keys if not self.done(k)]

    def keys(self) -> list[str]:
        """Every complete key, sorted."""
        return sorted(
            p.stem for p in self.root.glob("*.json")
            if p.name != STORE_FILE and not p.name.startswith(".")
        )  # fmt: skip

    def put(self, key: str, array: np.ndarray | None = None, record: Mapping | None = None) -> None:
        """Store ``key``'s array (if any) then its marker; each write is atomic."""
        if array is not None:
            write_atomic(self.root / f"{key}.npy", lambda p: _save_npy(p, array))
        write_json_atomic(self._marker(key), dict(record or {}))

    def get_array(self, key: str) -> np.ndarray:
        """The array stored under ``key``."""
        return np.load(self.root / f"{key}.npy")

    def get_record(self, key: str) -> dict:
        """The record of ``key``'s marker."""
        return json.loads(self._marker(key).read_text())

    def forget(self, key: str) -> None:
        """Drop ``key`` (marker first, so it is never half-present)."""
        self._marker(key).unlink(missing_ok=True)
        (self.root / f"{key}.npy").unlink(missing_ok=True)

    def clear(self) -> None:
        """Forget every item (a run that must not resume)."""
        for key in self.keys():
            self.forget(key)

    def discard(self) -> None:
        """Remove the whole store (after the final output is published)."""
        shutil.rmtree(self.root, ignore_errors=True)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


@contextlib.contextmanager
def drop_empty_work_on_error(work: str | os.PathLike) -> Iterator[None]:
    """On an error inside the block, remove the ``.work`` area ``work`` if it holds no finished
    item (nothing to resume, so nothing is left behind); with finished items it stays for the
    resume. Enter it after the :class:`OutputLock`, so only the run owning the area cleans it."""
    try:
        yield
    except BaseException:
        root = Path(work)
        if root.is_dir() and not any(
            p.suffix == ".json" and p.name != STORE_FILE for p in root.iterdir()
        ):
            shutil.rmtree(root, ignore_errors=True)
        raise


# -- ranks --------------------------------------------------------------------------------------
def wait_for_ranks(
    store: WorkStore,
    keys_by_rank: Mapping[int, Sequence[str]],
    timeout_s: float,
    poll_s: float = 1.0,
) -> None:
    """Wait until every rank's keys are complete in ``store``; on timeout raise naming each rank
    still missing work and how much (a rank that died never completes its keys)."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = {r: len(store.pending(ks)) for r, ks in keys_by_rank.items()}
        missing = {r: n for r, n in missing.items() if n}
        if not missing:
            return
        if time.monotonic() > deadline:
            ranks = ", ".join(f"rank {r} ({n} items left)" for r, n in sorted(missing.items()))
            raise TimeoutError(
                f"{ranks} did not finish within {timeout_s:.0f} s in {store.root}; check those "
                "ranks' logs, then rerun to resume (finished items are kept)"
            )
        time.sleep(poll_s)
