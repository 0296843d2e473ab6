"""Login rate limit against real servers (uvicorn subprocess, SQLite file and PostgreSQL):
failed logins per username and per client address get 429 with Retry-After, the right
password does not get through while throttled, a successful login resets the count, and the
state lives in the database (it survives a server restart)."""

from __future__ import annotations

import time
import uuid

import pytest

from .servers import ADMIN, Client, start_server

pytestmark = pytest.mark.slow
WINDOW_S = 8
LIMITS = {"GEOLATENT_LOGIN_MAX_FAILURES": "3", "GEOLATENT_LOGIN_MAX_FAILURES_PER_ADDRESS": "5",
          "GEOLATENT_LOGIN_WINDOW_S": str(WINDOW_S)}
LONG_S = 300  # outlasts a server restart on a loaded machine
LIMITS_LONG = {**LIMITS, "GEOLATENT_LOGIN_WINDOW_S": str(LONG_S)}


@pytest.fixture(params=["sqlite", "postgresql"])
def limited_any(request, tmp_path):
    """A server with small limits (3 per username, 5 per address, 300 s) on each database."""
    database = ""
    if request.param == "postgresql":
        database = request.getfixturevalue("postgres").create_database(
            f"limit_{uuid.uuid4().hex[:8]}")
    server = start_server(tmp_path / "project", database, env=LIMITS_LONG)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """The same limits with an 8 s window on SQLite, for the tests of the rules."""
    server = start_server(tmp_path_factory.mktemp("limited") / "project", env=LIMITS)
    yield server
    server.stop()


def login(c: Client, username: str, password: str, address: str):  # noqa: ANN201
    # uvicorn takes the client address from X-Forwarded-For sent by a trusted proxy (loopback)
    return c.post("/api/auth/login", json={"username": username, "password": password},
                  headers={"X-Forwarded-For": address})


def make_user(url: str, name: str, password: str) -> None:
    with Client(url, *ADMIN) as admin:
        r = admin.post("/api/users", json={"username": name, "password": password})
        assert r.status_code == 201, r.text


def test_failed_logins_per_username_are_throttled_and_survive_a_restart(limited_any):
    make_user(limited_any.url, "alice", "alice-password-1")
    with Client(limited_any.url) as c:
        for i in range(3):  # three different addresses: the username's count is what trips
            assert login(c, "alice", "wrong", f"198.51.100.{i}").status_code == 401
        r = login(c, "alice", "alice-password-1", "198.51.100.9")
        assert r.status_code == 429, r.text
        wait = int(r.headers["Retry-After"])
        assert 0 < wait <= LONG_S and "try again in" in r.json()["detail"]
        # another user from the same addresses is not affected
        assert login(c, ADMIN[0], ADMIN[1], "198.51.100.0").status_code == 200
    limited_any.stop()  # the block is in the database: a new server process still refuses
    restarted = start_server(limited_any.project, _database(limited_any), env=LIMITS_LONG)
    try:
        with Client(restarted.url) as c:
            r = login(c, "alice", "alice-password-1", "198.51.100.9")
            assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= wait
    finally:
        restarted.stop()


def test_success_resets_the_username_count(limited):
    make_user(limited.url, "bob", "bob-password-12")
    with Client(limited.url) as c:
        for _round in range(3):  # 2 failures + 1 success, three times: never throttled
            for i in range(2):
                assert login(c, "bob", "wrong", f"203.0.113.{_round * 2 + i}").status_code == 401
            assert login(c, "bob", "bob-password-12", "192.0.2.200").status_code == 200


def test_failed_logins_per_address_across_usernames_are_throttled_then_expire(limited):
    with Client(limited.url) as c:
        for i in range(5):  # five unknown usernames, one address
            assert login(c, f"nobody{i}", "wrong", "192.0.2.7").status_code == 401
        r = login(c, ADMIN[0], ADMIN[1], "192.0.2.7")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        assert login(c, ADMIN[0], ADMIN[1], "192.0.2.8").status_code == 200  # another address
        time.sleep(int(r.headers["Retry-After"]) + 0.5)
        assert login(c, ADMIN[0], ADMIN[1], "192.0.2.7").status_code == 200  # waited it out
        # a failure deletes the rows of finished windows: random usernames do not pile up
        assert login(c, "later", "wrong", "192.0.2.7").status_code == 401
    import sqlite3

    with sqlite3.connect(limited.project / "geolatent.db") as db:
        keys = {k for (k,) in db.execute("SELECT key FROM login_throttle")}
    assert keys == {"user:later", "addr:192.0.2.7"}


def _database(server) -> str:  # noqa: ANN001
    """The --database a test server was started with ('' = SQLite in its project)."""
    args = server.process.args
    return args[args.index("--database") + 1] if "--database" in args else ""
