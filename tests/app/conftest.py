"""Fixtures: an app server on SQLite and one on PostgreSQL (both real, on loopback)."""

from __future__ import annotations

import pytest

from .servers import ADMIN, Client, pg_bin, start_postgres, start_server


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("app-sqlite") / "project")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL cluster for the session (``create_database`` for more)."""
    if pg_bin() is None:
        pytest.skip("PostgreSQL binaries not found: apt-get install -y postgresql (make test "
                    "installs it)")
    pg = start_postgres()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def postgresql_server(postgres, tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("app-pg-project") / "project", postgres.url)
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def server(request):
    """The same API tests run against both databases."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture
def admin(server):
    with Client(server.url, *ADMIN) as c:
        yield c


@pytest.fixture(scope="session")
def sample_project(server):
    """One project on the built-in sample per server."""
    import uuid

    with Client(server.url, *ADMIN) as c:
        r = c.post("/api/projects", json={"name": f"sample-{uuid.uuid4().hex[:8]}",
                                          "imagery": {"type": "sample"}})
        assert r.status_code == 201, r.text
        return r.json()
