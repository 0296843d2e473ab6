"""The FastAPI application: database upgrade on start, the first admin, routers, static UI."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import func, select

from geolatent.app.config import AppSettings
from geolatent.app.db import make_engine, session_factory, upgrade
from geolatent.app.models import User
from geolatent.app.routers import auth, features, imagery, jobs, projects, tasks, users
from geolatent.app.security import hash_password

STATIC = Path(__file__).with_name("static")  # the Vite build of frontend/ (see Makefile)
ADMIN_PASSWORD_FILE = "admin-password.txt"
CSP = ("default-src 'self'; img-src 'self' data: blob:; worker-src 'self' blob:; "
       "child-src blob:; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def ensure_admin(app: FastAPI) -> None:
    """On the first start, create the site admin: ``GEOLATENT_ADMIN_USER`` (default ``admin``)
    with ``GEOLATENT_ADMIN_PASSWORD``, or a random password written (mode 600) to
    ``<project>/admin-password.txt`` and printed once."""
    with app.state.sessions() as db:
        if db.scalar(select(func.count()).select_from(User)):
            return
        username = os.environ.get("GEOLATENT_ADMIN_USER", "admin")
        password = os.environ.get("GEOLATENT_ADMIN_PASSWORD")
        if not password:
            password = secrets.token_urlsafe(12)
            path = app.state.settings.project_dir / ADMIN_PASSWORD_FILE
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"{username}\n{password}\n")
            print(f"geolatent: created user {username!r}; its password is in {path}")
        db.add(User(username=username, password_hash=hash_password(password), is_admin=True))
        db.commit()


def create_app(settings: AppSettings | None = None) -> FastAPI:
    """The app for ``settings`` (default: from the ``GEOLATENT_APP_*`` environment)."""
    settings = settings or AppSettings.from_env()
    settings.project_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    app = FastAPI(title="geolatent", version="0.1.0",
                  description="Projects, labels, imagery tiles and runs of geolatent.",
                  docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    ensure_admin(app)

    @app.middleware("http")
    async def limits_and_headers(request: Request, call_next):  # noqa: ANN001, ANN202
        # refuse oversize bodies before reading them (uploads also count while streaming)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_upload_bytes + 65536:
            return JSONResponse(status_code=413, content={
                "detail": f"request larger than the limit of {settings.max_upload_bytes} bytes "
                          "(start the server with a larger --max-upload-mb)"})
        response = await call_next(request)
        if not request.url.path.startswith("/api/docs"):
            response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    for module in (auth, users, projects, features, tasks, imagery, jobs):
        app.include_router(module.router)

    @app.get("/api/health", tags=["meta"])
    def health() -> dict:
        return {"ok": True}

    if (STATIC / "index.html").exists():
        app.mount("/assets", StaticFiles(directory=STATIC / "assets"), name="assets")

        @app.get("/", include_in_schema=False)
        def index() -> FileResponse:
            return FileResponse(STATIC / "index.html")
    else:
        @app.get("/", include_in_schema=False)
        def no_ui() -> JSONResponse:
            return JSONResponse(status_code=503, content={
                "detail": "the web UI is not built: run `make frontend` (npm) and restart; "
                          "the API is at /api/docs"})

    return app
