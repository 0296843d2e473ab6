"""``geolatent serve``: the web app on uvicorn."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

import typer

from geolatent.app.config import AppSettings


def serve(
    project: Path = typer.Option(..., "--project", help="Folder holding the app's database, "
                                 "uploads and imagery (created if missing)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    database: str = typer.Option("", "--database", help="SQLAlchemy URL, e.g. "
                                 "postgresql://user@host/db; default SQLite in --project."),
    max_upload_mb: float = typer.Option(50, "--max-upload-mb", help="Largest upload accepted."),
    dask_scheduler: str = typer.Option("", "--dask-scheduler", help="Address of an existing "
                                       "Dask cluster (tcp://host:8786) for prediction runs."),
) -> None:
    """Serve the geolatent web app (projects, labeling, imagery) and its API (/api/docs)."""
    import uvicorn

    from geolatent.app.db import upgrade

    if port < 0 or port > 65535:
        raise typer.BadParameter("a TCP port 0-65535", param_hint="--port")
    if project.exists() and not project.is_dir():
        raise typer.BadParameter(f"{project} is a file; name a folder", param_hint="--project")
    if max_upload_mb <= 0:
        raise typer.BadParameter("must be > 0", param_hint="--max-upload-mb")
    if dask_scheduler and "://" not in dask_scheduler:
        raise typer.BadParameter("a scheduler address like tcp://127.0.0.1:8786",
                                 param_hint="--dask-scheduler")
    if database and "://" not in database:
        raise typer.BadParameter("a URL like postgresql://user@host:5432/db or "
                                 "sqlite:////path/app.db", param_hint="--database")
    project.mkdir(parents=True, exist_ok=True)
    settings = AppSettings(project_dir=project, database_url=database)
    os.environ["GEOLATENT_APP_PROJECT"] = str(settings.project_dir)
    os.environ["GEOLATENT_APP_DATABASE"] = settings.database_url
    os.environ["GEOLATENT_APP_MAX_UPLOAD_BYTES"] = str(int(max_upload_mb * 1024 * 1024))
    upgrade(settings.database_url)  # before the worker starts: one migration, no race
    worker = start_worker(settings, dask_scheduler)
    try:
        uvicorn.run("geolatent.app.main:create_app", factory=True, host=host, port=port,
                    log_level="info")
    finally:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()


def start_worker(settings: AppSettings, dask_scheduler: str = "") -> subprocess.Popen:
    """The job worker process (:mod:`geolatent.app.worker`); it dies with this process."""

    def die_with_parent() -> None:  # Linux: SIGTERM when the server process ends
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)

    return subprocess.Popen(
        [sys.executable, "-m", "geolatent.app.worker", "--project", str(settings.project_dir),
         "--database", settings.database_url, "--parent", str(os.getpid()),
         *(["--dask-scheduler", dask_scheduler] if dask_scheduler else [])],
        preexec_fn=die_with_parent)  # noqa: PLW1509


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
