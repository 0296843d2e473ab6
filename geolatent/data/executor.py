"""Pluggable executors that run one function over many windows.

``serial`` (in process, for debugging), ``process`` (a local process pool, the default) and
``dask`` (a ``dask.distributed`` cluster: a scheduler address, or a ``LocalCluster`` started
here). Every executor yields an :class:`Outcome` per item as soon as it finishes, in completion
order, and keeps at most a few items per worker in flight so that millions of windows never sit
in memory at once. A crash of the function (or of its worker) becomes the item's ``error``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Literal, Protocol

ExecutorKind = Literal["serial", "process", "dask"]


@dataclass
class Outcome:
    """The result of one item: ``value`` when the function returned, ``error`` when it raised."""

    item: Any
    value: Any = None
    error: str | None = None


class WindowExecutor(Protocol):
    """Runs ``fn`` over ``items``; yields one :class:`Outcome` per item, completion order."""

    workers: int

    def map_unordered(
        self, fn: Callable[[Any], Any], items: Iterable[Any]
    ) -> Iterator[Outcome]: ...

    def close(self) -> None: ...


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


class SerialExecutor:
    """Runs items one after the other in this process."""

    workers = 1

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Outcome]:
        for item in items:
            try:
                yield Outcome(item, fn(item))
            except Exception as e:  # one bad item must not stop the others
                yield Outcome(item, error=_describe(e))

    def close(self) -> None:
        pass


def _exit_with_parent(run_pid: int, poll_s: float = 0.5) -> None:
    """Worker initializer: end this worker when the run that started it dies, even by kill -9
    (which runs no cleanup): otherwise workers blocked on the task queue, and with them the
    forkserver, stay alive holding their memory. Linux also gets ``PR_SET_PDEATHSIG``."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass

    def watch() -> None:
        while True:
            try:
                os.kill(run_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass  # exists under another user: still alive
            time.sleep(poll_s)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class ProcessExecutor:
    """A local process pool (``forkserver`` on Linux: workers start from a clean process, which
    GDAL and threads in the parent are safe with, and heavy imports happen only once). Workers
    end when the run dies, however it dies (:func:`_exit_with_parent`)."""

    def __init__(self, workers: int | None = None, max_in_flight_per_worker: int = 4) -> None:
        self.workers = workers or max(1, (os.cpu_count() or 2) - 1)
        method = "forkserver" if sys.platform.startswith("linux") else "spawn"
        ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            ctx.set_forkserver_preload(["geolatent.data.build"])
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,
                                         initializer=_exit_with_parent, initargs=(os.getpid(),))
        self._limit = self.workers * max_in_flight_per_worker

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Outcome]:
        pending: dict[Future, Any] = {}
        it = iter(items)
        exhausted = False
        while True:
            while not exhausted and len(pending) < self._limit:
                try:
                    item = next(it)
                except StopIteration:
                    exhausted = True
                    break
                pending[self._pool.submit(fn, item)] = item
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                item = pending.pop(fut)
                try:
                    yield Outcome(item, fut.result())
                except Exception as e:  # includes a worker that died (BrokenProcessPool)
                    yield Outcome(item, error=_describe(e))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """Runs items on a ``dask.distributed`` cluster.

    Args:
        address: scheduler address (``tcp://host:8786``) of an existing cluster; when None a
            ``LocalCluster`` of ``workers`` workers is started and closed with the executor.
        workers: LocalCluster size (ignored with ``address``).
        processes: LocalCluster workers as processes (True) or threads in this process.
    """

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        processes: bool = True,
        max_in_flight_per_worker: int = 4,
    ) -> None:
        from dask.distributed import Client, LocalCluster

        self._cluster = None
        if address is None:
            self._cluster = LocalCluster(
                n_workers=workers or 2,
                threads_per_worker=1,
                processes=processes,
                dashboard_address=None,
            )
            self._client = Client(self._cluster)
        else:
            self._client = Client(address)
        self.workers = max(
            1, len(self._client.scheduler_info().get("workers", {})) or (workers or 1)
        )
        self._limit = self.workers * max_in_flight_per_worker

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Outcome]:
        from dask.distributed import as_completed

        it = iter(items)
        futures: dict[Any, Any] = {}

        def submit_next() -> bool:
            try:
                item = next(it)
            except StopIteration:
                return False
            # pure=False: identical items (a re-run) must still execute.
            fut = self._client.submit(fn, item, pure=False)
            futures[fut.key] = item
            queue.add(fut)
            return True

        queue = as_completed([])
        for _ in range(self._limit):
            if not submit_next():
                break
        for fut in queue:
            item = futures.pop(fut.key)
            try:
                yield Outcome(item, fut.result())
            except Exception as e:
                yield Outcome(item, error=_describe(e))
            fut.release()
            submit_next()

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def make_executor(
    kind: ExecutorKind = "process",
    workers: int | None = None,
    address: str | None = None,
    processes: bool = True,
) -> WindowExecutor:
    """Build an executor by name: ``serial``, ``process`` (default) or ``dask``."""
    if kind == "serial":
        return SerialExecutor()
    if kind == "process":
        return ProcessExecutor(workers)
    if kind == "dask":
        return DaskExecutor(address=address, workers=workers, processes=processes)
    raise ValueError(f"unknown executor {kind!r}; use serial, process or dask")
