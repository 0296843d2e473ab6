"""The Alembic migrations give exactly the schema of the models (SQLite file and PostgreSQL),
and go down to nothing and up again."""

from __future__ import annotations

import uuid

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from geolatent.app.db import MIGRATIONS, normalize_url, upgrade
from geolatent.app.models import Base

TABLES = {"users", "sessions", "api_tokens", "projects", "memberships", "tasks", "features",
          "jobs", "login_throttle"}


def _diff(url: str) -> list:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(normalize_url(url))
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _check(url: str) -> None:
    upgrade(url)
    assert _tables(url) == TABLES
    assert _diff(url) == []  # columns, types, nullability, keys and indexes as in the models
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url))
    command.downgrade(cfg, "base")
    assert _tables(url) == set()
    upgrade(url)
    assert _diff(url) == []


def test_sqlite_schema_equals_the_models(tmp_path):
    _check(f"sqlite:///{tmp_path / 'app.db'}")


@pytest.mark.slow
def test_postgresql_schema_equals_the_models(postgres):
    _check(postgres.create_database(f"mig_{uuid.uuid4().hex[:8]}"))
