"""Training output: ``metrics.jsonl`` (every step), TensorBoard if installed, a progress bar."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of ``<run_dir>/metrics.jsonl`` (a torn last line from a kill is ignored)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class Monitor:
    """Writes metrics of the main rank.

    Args:
        run_dir: where ``metrics.jsonl`` (and ``tensorboard/``) go.
        total_steps: length of the run, for the progress bar.
        start_step: first step of this (possibly resumed) session; metric records after it, left
            by an interrupted session, are dropped so the file tells one consistent story.
        progress: show the progress bar.
        tensorboard: also write TensorBoard events (skipped when the package is missing).
        every: progress / TensorBoard update period in steps.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        total_steps: int,
        start_step: int = 0,
        progress: bool = True,
        tensorboard: bool = True,
        every: int = 1,
        console: Console | None = None,
    ):
        self.path = Path(run_dir) / METRICS_FILE
        kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= start_step]
        tmp = self.path.with_name(f".{METRICS_FILE}.tmp-{os.getpid()}")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)
        self._file = open(self.path, "a")
        self.every = every
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(
                    str(Path(run_dir) / "tensorboard"), purge_step=start_step + 1
                )
            except ImportError:
                log.info("tensorboard is not installed; metrics go to %s only", self.path)
        self._progress = None
        if progress:
            self._progress = Progress(
                TextColumn("[bold]pretrain"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[speed]} samples/s"),
                TimeRemainingColumn(),
                console=console or Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task(
                "pretrain", total=total_steps, completed=start_step, loss="-", speed="-"
            )
            self._progress.start()

    def log(self, record: dict) -> None:
        """Append one step's record (``step`` = completed optimizer steps)."""
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        step = record["step"]
        if self._tb is not None and step % self.every == 0:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float):
                    self._tb.add_scalar(f"pretrain/{k}", v, step)
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=step,
                loss=f"{record['loss']:.4f}",
                speed=f"{record['samples_per_s']:.2f}",
                refresh=step % self.every == 0,
            )

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._progress is not None:
            self._progress.stop()
