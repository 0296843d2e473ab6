"""Kill -9 at a reproducible "random point" of a child's progress (the resume tests).

A helper module beside ``shared_data.py`` (``tests/`` is on ``sys.path``): the embed and
predict resume tests start a child that prints its finished-tile count, one per line, and kill
it part-way with the same code.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time


def start_child(args: list[str]) -> subprocess.Popen:
    """``python ARGS`` with this test process's ``sys.path``, its stdout piped as text."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True, env=env)


def kill_after(proc: subprocess.Popen, stop_at: int, max_sleep_s: float) -> None:
    """Read ``proc``'s counts until one reaches ``stop_at``, wait a reproducible moment of up
    to ``max_sleep_s`` (so the kill lands anywhere in the next tile), then SIGKILL and reap it."""
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if int(line) >= stop_at:
                time.sleep(random.Random(1).uniform(0.0, max_sleep_s))
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
