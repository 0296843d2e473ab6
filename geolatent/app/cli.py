"""``geolatent serve``: the web app on uvicorn."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def serve(
    project: Path = typer.Option(..., "--project", help="Folder holding the app's database, "
                                 "uploads and imagery (created if missing)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    database: str = typer.Option("", "--database", help="SQLAlchemy URL, e.g. "
                                 "postgresql://user@host/db; default SQLite in --project."),
    max_upload_mb: float = typer.Option(50, "--max-upload-mb", help="Largest upload accepted."),
) -> None:
    """Serve the geolatent web app (projects, labeling, imagery) and its API (/api/docs)."""
    import uvicorn

    if port < 0 or port > 65535:
        raise typer.BadParameter("a TCP port 0-65535", param_hint="--port")
    if project.exists() and not project.is_dir():
        raise typer.BadParameter(f"{project} is a file; name a folder", param_hint="--project")
    if max_upload_mb <= 0:
        raise typer.BadParameter("must be > 0", param_hint="--max-upload-mb")
    if database and "://" not in database:
        raise typer.BadParameter("a URL like postgresql://user@host:5432/db or "
                                 "sqlite:////path/app.db", param_hint="--database")
    project.mkdir(parents=True, exist_ok=True)
    os.environ["GEOLATENT_APP_PROJECT"] = str(project.resolve())
    os.environ["GEOLATENT_APP_DATABASE"] = database
    os.environ["GEOLATENT_APP_MAX_UPLOAD_BYTES"] = str(int(max_upload_mb * 1024 * 1024))
    uvicorn.run("geolatent.app.main:create_app", factory=True, host=host, port=port,
                log_level="info")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
