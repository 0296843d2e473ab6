"""The geolatent web app: projects, labeling, imagery tiles and runs in the browser.

``geolatent serve --project DIR`` starts it (see :mod:`geolatent.app.cli`). Layout (FastAPI's
"bigger applications" pattern): :mod:`.config` (settings), :mod:`.db` (engine, sessions, Alembic
upgrade on start), :mod:`.models` (SQLAlchemy tables), :mod:`.schemas` (pydantic at the edge),
:mod:`.security` (passwords, sessions, API tokens, CSRF, roles), :mod:`.uploads` (size limits,
safe names, archives, AOI files), :mod:`.imagery` (COG tiles with rio-tiler), :mod:`.sample`
(the built-in sample project), :mod:`.routers` (one module per resource), :mod:`.main`.
"""

from geolatent.app.config import AppSettings

__all__ = ["AppSettings", "create_app"]


def __getattr__(name: str):  # noqa: ANN202 - lazy: `geolatent --help` need not import FastAPI
    if name == "create_app":
        from geolatent.app.main import create_app

        return create_app
    raise AttributeError(name)
