"""App settings: where the project folder and the database are, and the upload limits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MAX_UPLOAD_MB = 50


@dataclass(frozen=True)
class AppSettings:
    """Settings of one app instance.

    Attributes:
        project_dir: the folder holding everything of this instance (database, uploads, imagery,
            exports); nothing is ever written outside it.
        database_url: SQLAlchemy URL; default ``sqlite:///<project_dir>/geolatent.db`` (WAL).
        max_upload_bytes: uploads larger than this are refused with 413.
        secure_cookies: set the cookie ``Secure`` flag (behind HTTPS).
        session_hours: lifetime of a login session.
    """

    project_dir: Path
    database_url: str = ""
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024 * 1024
    secure_cookies: bool = False
    session_hours: float = 12.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "project_dir", Path(self.project_dir).resolve())
        if not self.database_url:
            url = f"sqlite:///{self.project_dir / 'geolatent.db'}"
            object.__setattr__(self, "database_url", url)

    @classmethod
    def from_env(cls) -> AppSettings:
        """Settings from ``GEOLATENT_APP_*`` variables (how the uvicorn factory gets them)."""
        project = os.environ.get("GEOLATENT_APP_PROJECT")
        if not project:
            raise RuntimeError("GEOLATENT_APP_PROJECT is not set: start the app with "
                               "`geolatent serve --project DIR`")
        return cls(
            project_dir=Path(project),
            database_url=os.environ.get("GEOLATENT_APP_DATABASE", ""),
            max_upload_bytes=int(os.environ.get("GEOLATENT_APP_MAX_UPLOAD_BYTES",
                                                DEFAULT_MAX_UPLOAD_MB * 1024 * 1024)),
        )
