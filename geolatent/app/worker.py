"""The job worker: a separate process started by ``geolatent serve`` that runs queued jobs.

It claims one queued job at a time with a conditional UPDATE (``status='queued'`` ->
``running``), so several workers never run the same job; it writes a heartbeat every few
seconds while a job runs, appends the job's log and progress, and stops a job whose cancel flag
is set at its next progress or log line. On start (and periodically) it queues again the
``running`` jobs whose heartbeat is stale: the server was stopped mid-run, and the run resumes
(prediction from its finished parts, fine-tuning from its last finished epoch on the inputs the
job started with: :mod:`geolatent.app.runs`). The worker exits when its parent (the server) is
gone.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from geolatent.app.db import make_engine, session_factory
from geolatent.app.models import Feature, Job, Project, utcnow

HEARTBEAT_S = 2.0
STALE_S = 10.0
MAX_LOG_CHARS = 200_000


class Cancelled(Exception):
    """The job's cancel flag was set."""


def requeue_stale(sessions) -> int:  # noqa: ANN001
    """Queue again the running jobs whose worker stopped sending heartbeats."""
    with sessions() as db:
        cutoff = utcnow() - timedelta(seconds=STALE_S)
        res = db.execute(update(Job).where(Job.status == "running", (Job.heartbeat_at.is_(None))
                                           | (Job.heartbeat_at < cutoff))
                         .values(status="queued", log=Job.log + "[worker] requeued after a "
                                 "restart; resuming\n"))
        db.commit()
        return res.rowcount


def claim(sessions) -> int | None:  # noqa: ANN001
    with sessions() as db:
        for job_id in db.scalars(select(Job.id).where(Job.status == "queued")
                                 .order_by(Job.id).limit(5)):
            res = db.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                             .values(status="running", heartbeat_at=utcnow(),
                                     attempts=Job.attempts + 1))
            db.commit()
            if res.rowcount == 1:
                return job_id
    return None


class JobContext:
    """Progress, log and cancel checks of one running job, written to its row."""

    def __init__(self, sessions, job_id: int, parent_pid: int | None = None) -> None:  # noqa: ANN001
        self.sessions, self.job_id, self.parent_pid = sessions, job_id, parent_pid
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.cancelled = False
        self.beat = threading.Thread(target=self._heartbeat, daemon=True)
        self.beat.start()

    def _heartbeat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            if self.parent_pid is not None and not _alive(self.parent_pid):
                os._exit(1)  # the server is gone: stop; the job is requeued on the next start
            with self.sessions() as db:
                db.execute(update(Job).where(Job.id == self.job_id)
                           .values(heartbeat_at=utcnow()))
                db.commit()
                self.cancelled = bool(db.scalar(select(Job.cancel_requested)
                                                .where(Job.id == self.job_id)))

    def check(self) -> None:
        if self.cancelled:
            raise Cancelled

    def log(self, line: str) -> None:
        with self.lock, self.sessions() as db:
            job = db.get(Job, self.job_id)
            job.log = (job.log + line.rstrip() + "\n")[-MAX_LOG_CHARS:]
            self.cancelled = self.cancelled or job.cancel_requested
            db.commit()
        self.check()

    def progress(self, fraction: float) -> None:
        with self.lock, self.sessions() as db:
            db.execute(update(Job).where(Job.id == self.job_id)
                       .values(progress=max(0.0, min(1.0, float(fraction)))))
            db.commit()
        self.check()

    def close(self) -> None:
        self.stop.set()
        self.beat.join(5)


def job_folder(project_dir: Path, project: Project, job_id: int) -> Path:
    return project_dir / "projects" / project.slug / "jobs" / str(job_id)


def run_job(sessions, project_dir: Path, job_id: int,  # noqa: ANN001
            parent_pid: int | None = None, dask_scheduler: str | None = None) -> None:
    """Run one claimed job to its end state (succeeded / failed / cancelled)."""
    import json

    from geolatent.app import runs

    ctx = JobContext(sessions, job_id, parent_pid)
    status, result, error = "failed", {}, None
    try:
        with sessions() as db:
            job = db.get(Job, job_id)
            project = db.get(Project, job.project_id)
            params = dict(job.params or {})
            kind = job.kind
            folder = job_folder(project_dir, project, job_id)
            pfolder = project_dir / "projects" / project.slug
            start = params.get("start") or project.start_date
            end = params.get("end") or project.end_date
            features = [{"geometry": json.loads(f.geometry), "label": f.label} for f in
                        db.scalars(select(Feature).where(Feature.project_id == project.id,
                                                         Feature.deleted.is_(False)))]
            aoi = json.loads(project.aoi_geojson) if project.aoi_geojson else None
            schema = dict(project.label_schema or {})
            imagery = dict(project.imagery or {})
            encoder = params.get("encoder") or project.model
            model_job = params.get("model_job")
            model_dir = None
            if model_job is not None:
                mj = db.get(Job, int(model_job))
                if mj is None or mj.project_id != project.id or mj.kind != "finetune" or \
                        mj.status != "succeeded":
                    raise runs.JobError(f"params.model_job {model_job} is not a finished "
                                        "fine-tuning job of this project")
                model_dir = job_folder(project_dir, project, mj.id) / "model"
        ctx.log(f"[worker] {kind} job {job_id} started (attempt {job.attempts})")
        if not start or not end:
            raise runs.JobError("the project has no date range: set start_date and end_date")
        if kind == "finetune":
            if not encoder:
                raise runs.JobError("no model: set the project's model (a checkpoint folder or "
                                    "release id) or params.encoder")
            result = runs.run_finetune(folder, features=features, label_schema=schema,
                                       imagery_dir=pfolder / "imagery", encoder=encoder,
                                       start=start, end=end, params=params, log=ctx.log,
                                       progress=ctx.progress)
        elif kind == "predict":
            if aoi is None:
                raise runs.JobError("the project has no area of interest")
            if model_dir is None:
                raise runs.JobError("params.model_job: the id of a finished fine-tuning job")
            result = runs.run_predict(folder, model_dir=model_dir, aoi=aoi, start=start, end=end,
                                      label_schema=schema, log=ctx.log, progress=ctx.progress,
                                      dask_scheduler=dask_scheduler)
        elif kind == "imagery":  # STAC presets / catalogs: geolatent.app.imagery
            from geolatent.app.imagery import fetch_project_imagery

            if aoi is None:
                raise runs.JobError("the project has no area of interest")
            result = fetch_project_imagery(pfolder, imagery, aoi, start, end, log=ctx.log,
                                           progress=ctx.progress)
        else:
            raise runs.JobError(f"unknown job kind {kind!r}")
        status = "succeeded"
        ctx.log(f"[worker] {kind} job {job_id} finished")
    except Cancelled:
        status, error = "cancelled", "cancelled by a user"
    except runs.JobError as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure of the run ends up in the job row
        error = f"{type(exc).__name__}: {exc}"
        tb = traceback.format_exc()
        try:
            ctx.log(tb)
        except Cancelled:
            pass
    finally:
        ctx.close()
    with sessions() as db:
        job = db.get(Job, job_id)
        job.status, job.result, job.error, job.finished_at = status, result, error, utcnow()
        if status == "succeeded":
            job.progress = 1.0
        db.commit()


def serve_forever(database_url: str, project_dir: Path, parent_pid: int | None,
                  poll_s: float = 0.5, dask_scheduler: str | None = None) -> None:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    sessions = session_factory(make_engine(database_url))
    requeue_stale(sessions)
    last_requeue = time.monotonic()
    while parent_pid is None or _alive(parent_pid):
        job_id = claim(sessions)
        if job_id is not None:
            run_job(sessions, project_dir, job_id, parent_pid, dask_scheduler)
            continue
        if time.monotonic() - last_requeue > STALE_S:
            requeue_stale(sessions)
            last_requeue = time.monotonic()
        time.sleep(poll_s)


def _alive(pid: int) -> bool:
    return os.getppid() == pid


def main() -> None:
    ap = argparse.ArgumentParser(description="geolatent app job worker")
    ap.add_argument("--project", required=True, type=Path)
    ap.add_argument("--database", required=True)
    ap.add_argument("--parent", type=int, default=None)
    ap.add_argument("--dask-scheduler", default=None,
                    help="send prediction runs to this Dask scheduler (the run driver's executor)")
    a = ap.parse_args()
    serve_forever(a.database, a.project.resolve(), a.parent, dask_scheduler=a.dask_scheduler)


if __name__ == "__main__":
    main()
