"""Real servers on loopback for the STAC API tests (no internet, nothing mocked).

- :class:`AssetServer`: a threaded HTTP file server with byte-range requests (as object stores
  serve COGs), a request log (to count what each run fetched), fault injection per path
  (500, 429 with Retry-After, a connection dropped mid-body, 404) and a Planetary-Computer-style
  SAS token endpoint (``/sas/v1/token/{account}/{container}``) whose tokens the server checks on
  signed paths (``/{account}/{container}/...``, the storage emulator's path-style layout):
  a revoked token gets 403, as an expired signature does.
- :func:`start_stac_api`: ``rustac serve`` (the Rust STAC API server, from the ``rustac`` PyPI
  package) with its in-memory backend, loaded with item JSON files. Chosen because it is a
  complete STAC API (search with bbox / datetime / collections, paging) in one self-contained
  binary with no database to provision; its memory backend implements neither the query nor the
  sort extension, which exercises geolatent's client-side fallback for servers lacking them.

Both bind 127.0.0.1 only and stop when the test ends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.error import HTTPError
from urllib.parse import parse_qs, urlparse
from urllib.request import Request as Request_
from urllib.request import urlopen


@dataclass
class Request:
    """One request the asset server answered."""

    method: str
    path: str
    range: str | None
    status: int
    time: float
    bytes_sent: int


@dataclass
class _State:
    root: Path
    signed_prefixes: tuple[str, ...] = ()
    delay_s: float = 0.0
    log: list[Request] = field(default_factory=list)
    faults: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    issued_tokens: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _record(self, status: int, sent: int) -> None:
            with state.lock:
                state.log.append(
                    Request(
                        self.command,
                        urlparse(self.path).path,
                        self.headers.get("Range"),
                        status,
                        time.monotonic(),
                        sent,
                    )
                )

        def _error(self, status: int, headers: dict[str, str] | None = None) -> None:
            body = f"error {status}".encode()
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self._record(status, 0)

        def _token(self, account: str, container: str) -> None:
            with state.lock:
                n = len(state.issued_tokens) + 1
                now = datetime.now(UTC)
                token = (
                    f"st={now:%Y-%m-%dT%H:%M:%SZ}&se={now + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}"
                    f"&sp=rl&sv=2024-05-04&sr=c&sig=token{n}-{account}-{container}"
                )
                state.issued_tokens.append(token)
            body = json.dumps(
                {"msft:expiry": f"{now + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}", "token": token}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self._record(200, len(body))

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            m = re.fullmatch(r"/sas/v1/token/([^/]+)/([^/]+)", url.path)
            if m:
                return self._token(m.group(1), m.group(2))
            rel = url.path.lstrip("/")
            with state.lock:
                fault = state.faults[rel].pop(0) if state.faults.get(rel) else None
            if fault and fault.startswith("stall"):
                time.sleep(float(fault.split(":")[1]))  # the client should give up first
                return self._error(503)
            if fault == "500":
                return self._error(500)
            if fault and fault.startswith("429"):
                return self._error(429, {"Retry-After": fault.split(":")[1]})
            if state.delay_s:
                time.sleep(state.delay_s)
            if rel.startswith(state.signed_prefixes) if state.signed_prefixes else False:
                sig = parse_qs(url.query).get("sig", [None])[0]
                with state.lock:
                    valid = {parse_qs(t)["sig"][0] for t in state.issued_tokens} - state.revoked
                if sig not in valid:
                    return self._error(403)
            path = state.root / rel
            if not path.is_file():
                return self._error(404)
            size = path.stat().st_size
            start, end = 0, size - 1
            rng = self.headers.get("Range")
            if rng:
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                if not m:
                    return self._error(416)
                start = int(m.group(1))
                end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
                if start >= size:
                    return self._error(416, {"Content-Range": f"bytes */{size}"})
            length = end - start + 1
            self.send_response(206 if rng else 200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "image/tiff")
            self.send_header("Content-Length", str(length))
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if self.command == "HEAD":
                return self._record(200, 0)
            with path.open("rb") as fh:
                fh.seek(start)
                data = fh.read(length)
            if fault == "drop":
                # Half the promised body, then the connection goes away.
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return self._record(-1, len(data) // 2)
            self.wfile.write(data)
            self._record(206 if rng else 200, length)

    return Handler


class _LoopbackHTTPServer:
    """A threaded HTTP server on a free loopback port, served from a daemon thread while the
    object is used as a context manager."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class AssetServer(_LoopbackHTTPServer):
    """Threaded loopback HTTP server for the files under ``root`` (see module docstring).

    Paths under ``signed_prefixes`` need a valid (issued, not revoked) ``sig``; every request
    waits ``delay_s`` (a slower link, to interrupt a run mid-fetch).
    """

    def __init__(self, root: Path, signed_prefixes: tuple[str, ...] = (),
                 delay_s: float = 0.0) -> None:
        self.state = _State(Path(root), tuple(signed_prefixes), delay_s)
        super().__init__(_handler(self.state))

    def inject(self, rel_path: str, *faults: str) -> None:
        """Queue faults for the next requests of ``rel_path`` ("500", "429:SECONDS", "drop",
        "stall:SECONDS": no answer for that long)."""
        with self.state.lock:
            self.state.faults[rel_path].extend(faults)

    def revoke_tokens(self) -> None:
        """Every token issued so far now gets 403 (as an expired SAS signature does)."""
        with self.state.lock:
            self.state.revoked |= {parse_qs(t)["sig"][0] for t in self.state.issued_tokens}

    def requests(self, prefix: str = "") -> list[Request]:
        with self.state.lock:
            return [r for r in self.state.log if r.path.lstrip("/").startswith(prefix)]

    def clear_log(self) -> None:
        with self.state.lock:
            self.state.log.clear()


def stop_process(proc: subprocess.Popen, timeout: float = 5) -> None:
    """Stop a server process started by a test: SIGTERM, then SIGKILL after ``timeout`` s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rustac_binary() -> str | None:
    """The ``rustac`` CLI installed beside this Python (or on PATH), or None."""
    here = Path(sys.executable).parent / "rustac"
    return str(here) if here.exists() else shutil.which("rustac")


class StacApi:
    """A running ``rustac serve`` process on loopback."""

    def __init__(self, item_files: list[Path], workdir: Path) -> None:
        exe = rustac_binary()
        if exe is None:
            raise RuntimeError("rustac is not installed (pip install rustac)")
        self.port = _free_port()
        self.log_path = workdir / "rustac.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [exe, "serve", "--create-collections", "-a", f"127.0.0.1:{self.port}"]
            + [str(p) for p in item_files],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with urlopen(f"{self.url}/", timeout=1) as r:  # noqa: S310 (loopback)
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rustac serve did not start: {self.log_path.read_text()}")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


class FaultProxy(_LoopbackHTTPServer):
    """A loopback reverse proxy in front of a STAC API that injects faults into its answers
    (``"500"``, ``"429:SECONDS"``) for paths starting with a prefix, and rewrites the upstream's
    absolute links to itself (so clients that follow links keep going through it)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: dict[str, list[str]] = defaultdict(list)
        self.log: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with proxy.lock:
                    proxy.log.append((self.command, urlparse(self.path).path, status))

            def _forward(self) -> None:
                path = urlparse(self.path).path
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None  # always consume the body
                fault = None
                with proxy.lock:
                    for prefix, queue in proxy.faults.items():
                        if path.startswith(prefix) and queue:
                            fault = queue.pop(0)
                            break
                if fault == "500":
                    return self._send(500, b"{}", {"Content-Type": "application/json"})
                if fault and fault.startswith("429"):
                    return self._send(429, b"{}", {"Content-Type": "application/json",
                                                   "Retry-After": fault.split(":")[1]})
                req = Request_(proxy.upstream + self.path, data=data, method=self.command,
                               headers={"Content-Type": self.headers.get("Content-Type",
                                                                         "application/json")})
                try:
                    with urlopen(req, timeout=30) as r:  # noqa: S310 (loopback)
                        status, body, ctype = r.status, r.read(), r.headers.get("Content-Type")
                except HTTPError as e:
                    status, body, ctype = e.code, e.read(), e.headers.get("Content-Type")
                body = body.replace(proxy.upstream.encode(), proxy.url.encode())
                self._send(status, body, {"Content-Type": ctype or "application/json"})

            do_GET = _forward  # noqa: N815
            do_POST = _forward  # noqa: N815

        super().__init__(Handler)
