"""Real servers for the app tests: ``geolatent serve`` (uvicorn) in a subprocess on loopback,
and a throwaway PostgreSQL cluster (initdb + pg_ctl), both stopped by the tests."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from data.stac_servers import stop_process

REPO = Path(__file__).resolve().parents[2]
ADMIN = ("admin", "admin-password-123")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    project: Path
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        stop_process(self.process, 10)


def start_server(project: Path, database: str = "", max_upload_mb: float = 2,
                 extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Server:
    """``geolatent serve`` on a free loopback port (with ``env`` added to the environment);
    waits until /api/health answers."""
    port = free_port()
    log = project.parent / f"{project.name}-server.log"
    env = dict(os.environ, GEOLATENT_ADMIN_USER=ADMIN[0], GEOLATENT_ADMIN_PASSWORD=ADMIN[1],
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               **(env or {}))
    cmd = [sys.executable, "-m", "geolatent.cli", "serve", "--project", str(project),
           "--host", "127.0.0.1", "--port", str(port), "--max-upload-mb", str(max_upload_mb)]
    if database:
        cmd += ["--database", database]
    cmd += list(extra_args)
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return Server(url, project, proc, log)
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start in 60 s: {log.read_text()[-3000:]}")


def pg_bin() -> Path | None:
    """The PostgreSQL server binaries (Debian's postgresql package), or None."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


@dataclass
class Postgres:
    url: str
    data: Path
    bindir: Path
    as_user: list[str]
    workdir: Path

    def create_database(self, name: str) -> str:
        """A new empty database on this cluster; returns its URL."""
        port = self.url.rsplit(":", 1)[1].split("/")[0]
        done = subprocess.run([*self.as_user, str(self.bindir / "createdb"), "-h", "127.0.0.1",
                               "-p", port, "-U", "geolatent", name], capture_output=True,
                              text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"createdb {name} failed: {done.stderr}")
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data),
                        "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_postgres() -> Postgres:
    """A throwaway cluster in a new temp folder on a free loopback port (run as the
    ``postgres`` user when the tests run as root, since PostgreSQL refuses to run as root;
    the folder is outside pytest's root-only temp tree so that user can reach it)."""
    bindir = pg_bin()
    assert bindir is not None
    as_user: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="geolatent-pg-"))
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(workdir, "postgres")
        os.chmod(workdir, 0o700)
    data = workdir / "data"
    port = free_port()
    steps = [
        [str(bindir / "initdb"), "-D", str(data), "-U", "geolatent", "--auth=trust", "-E", "UTF8"],
        [str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l", str(workdir / "pg.log"),
         "-o", f"-h 127.0.0.1 -p {port} -k {workdir} -c fsync=off", "start"],
        [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "geolatent",
         "geolatent"],
    ]
    for step in steps:
        done = subprocess.run([*as_user, *step], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{step[0]} failed: {done.stdout}{done.stderr}")
    return Postgres(f"postgresql://geolatent@127.0.0.1:{port}/geolatent", data, bindir, as_user,
                    workdir)


class Client(httpx.Client):
    """An httpx client that logs in with a cookie session and sends the CSRF header."""

    def __init__(self, base_url: str, username: str | None = None, password: str | None = None):
        super().__init__(base_url=base_url, timeout=60)
        if username:
            r = self.post("/api/auth/login", json={"username": username, "password": password})
            r.raise_for_status()
            self.headers["X-CSRF-Token"] = self.cookies["gl_csrf"]

    def __enter__(self) -> Client:  # already opened by the login request
        return self
