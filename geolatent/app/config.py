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
        login_max_failures: failed logins of one username within ``login_window_s`` after
            which that username is refused (429 with Retry-After) for ``login_window_s``;
            ``login_max_failures_per_address`` the same for one client address (across
            usernames). A successful login resets the username's count. Environment:
            ``GEOLATENT_LOGIN_MAX_FAILURES``, ``GEOLATENT_LOGIN_MAX_FAILURES_PER_ADDRESS``,
            ``GEOLATENT_LOGIN_WINDOW_S``.
    """

    project_dir: Path
    database_url: str = ""
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024 * 1024
    secure_cookies: bool = False
    session_hours: float = 12.0
    login_max_failures: int = 5
    login_max_failures_per_address: int = 20
    login_window_s: float = 900.0
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
            login_max_failures=_positive("GEOLATENT_LOGIN_MAX_FAILURES", 5),
            login_max_failures_per_address=_positive("GEOLATENT_LOGIN_MAX_FAILURES_PER_ADDRESS",
                                                     20),
            login_window_s=_positive("GEOLATENT_LOGIN_WINDOW_S", 900),
        )


def _positive(name: str, default: float) -> int | float:
    """A positive number from the environment variable ``name`` (or ``default``)."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise RuntimeError(f"{name}={text!r}: set it to a positive number (or unset it)")
    return int(value) if isinstance(default, int) else value
