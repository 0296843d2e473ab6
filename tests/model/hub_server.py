"""A real HTTP server on 127.0.0.1 serving release folders in the Hugging Face Hub's layout.

It answers what ``huggingface_hub`` requests: ``HEAD``/``GET /<owner>/<name>/resolve/<rev>/<file>``
(with ``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``/``X-Linked-Size`` for LFS files, ``Range``)
and the model info API ``GET /api/models/<owner>/<name>[/revision/<rev>]``; unknown ids, revisions
and files get 404 with the hub's ``X-Error-Code``. ``truncate`` makes GETs of LFS files send only
half of the bytes (a broken download). The server runs in a daemon thread and stops on exit.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

LFS_FILES = {"weights.pth"}


@dataclass
class Repo:
    """``refs`` maps branch / tag names to commits; ``commits`` maps commits to folders."""

    refs: dict[str, str]
    commits: dict[str, Path]


@dataclass
class HubServer:
    repos: dict[str, Repo]
    truncate: bool = False
    requests: list[str] = field(default_factory=list)

    def __enter__(self) -> HubServer:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                hub._serve(self, body=False)

            def do_GET(self):
                hub._serve(self, body=True)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if getattr(self, "_httpd", None) is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- request handling ------------------------------------------------------------------------
    def _resolve(self, repo_id: str, rev: str) -> tuple[str, Path] | str:
        repo = self.repos.get(repo_id)
        if repo is None:
            return "RepoNotFound"
        commit = repo.refs.get(rev, rev)
        if commit not in repo.commits:
            return "RevisionNotFound"
        return commit, repo.commits[commit]

    def _error(self, h: BaseHTTPRequestHandler, code: str, body: bool) -> None:
        msg = json.dumps({"error": code}).encode()
        h.send_response(404)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(msg)))
        h.end_headers()
        if body:
            h.wfile.write(msg)

    def _json(self, h: BaseHTTPRequestHandler, obj: dict, body: bool) -> None:
        data = json.dumps(obj).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = urlparse(h.path).path
        self.requests.append(f"{h.command} {path}")
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id = "/".join(parts[2:4])
            rev = parts[5] if len(parts) >= 6 and parts[4] == "revision" else "main"
            found = self._resolve(repo_id, rev)
            if isinstance(found, str):
                return self._error(h, found, body)
            commit, folder = found
            siblings = [{"rfilename": f.name} for f in sorted(folder.iterdir()) if f.is_file()]
            return self._json(h, {"id": repo_id, "sha": commit, "siblings": siblings}, body)
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(h, "EntryNotFound", body)
        repo_id, rev, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        found = self._resolve(repo_id, rev)
        if isinstance(found, str):
            return self._error(h, found, body)
        commit, folder = found
        f = folder / filename
        if not f.is_file():
            return self._error(h, "EntryNotFound", body)
        data = f.read_bytes()
        size = len(data)
        h.send_response(200)
        h.send_header("X-Repo-Commit", commit)
        if filename in LFS_FILES:
            h.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
            h.send_header("X-Linked-Size", str(size))
            h.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        else:
            h.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        if body and self.truncate and filename in LFS_FILES:
            data = data[: size // 2]  # a connection that delivers half the file, cleanly
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        if body:
            h.wfile.write(data)
