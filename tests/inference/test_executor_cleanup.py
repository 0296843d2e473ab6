"""kill -9 of a run using the process executor leaves no forkserver or worker behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from geolatent.data.executor import ProcessExecutor

    def work(i):
        print(os.getpid(), flush=True)  # the worker's stdout is the run's
        time.sleep(60)  # busy worker: the run is killed in the middle of it
        return i

    if __name__ == "__main__":
        ex = ProcessExecutor(workers=2)
        next(ex.map_unordered(work, range(2)))
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state  # a zombie is dead, only not reaped yet


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forkserver / prctl are Linux")
def test_kill9_leaves_no_workers(tmp_path) -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        workers = [int(proc.stdout.readline()) for _ in range(2)]  # type: ignore[union-attr]
        server = {int(Path(f"/proc/{w}/stat").read_text().split()[3]) for w in workers}
        assert all(_alive(p) for p in [*workers, *server])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in [*workers, *server]):
        time.sleep(0.2)
    left = [p for p in [*workers, *server] if _alive(p)]
    for p in left:  # never leave them running on the machine, even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not left, f"processes still alive 15 s after kill -9 of the run: {left}"
