"""A stand-in for the few Hugging Face Hub endpoints that huggingface_hub's HfFileSystem calls to
list and read a dataset repository, served on loopback, so that `hf://` paths go through the real
client and our pipeline/hf_filesystem.py without network. Point the client at it with
HF_ENDPOINT (a new process) or `huggingface_hub.constants.ENDPOINT` (this one; see `endpoint_set`).

Repositories: {repo_id: {"refs": {name: sha}, "commits": {sha: {path: bytes}}}}. Endpoints:
  GET  /api/datasets/REPO[/revision/REV]        repo_info (sha, siblings)
  GET  /api/datasets/REPO/tree/REV[/PATH]        list_repo_tree (recursive=1 or not; one page)
  POST /api/datasets/REPO/paths-info/REV         get_paths_info
  HEAD|GET /datasets/REPO/resolve/REV/PATH       the file, with Range requests
Anything else is a 404 and is recorded in `unknown` (a test can assert it stays empty).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import re
import threading
import urllib.parse
from typing import Iterator


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, obj, code=200):
        self._send(code, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _not_found(self, what="Entry not found"):
        self.server.unknown.append(f"{self.command} {self.path}")
        self._send(
            404,
            json.dumps({"error": what}).encode(),
            {"Content-Type": "application/json", "X-Error-Code": "EntryNotFound", "X-Error-Message": what},
        )

    def _commit(self, repo: str, rev: str):
        r = self.server.repos.get(repo)
        if r is None:
            return None, None
        sha = r["refs"].get(rev, rev)
        return sha, r["commits"].get(sha)

    def _entries(self, files: dict, prefix: str, recursive: bool):
        prefix = prefix.strip("/")
        out, dirs = [], set()
        for path, data in sorted(files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1 :] if prefix else path
            parts = rest.split("/")
            for i in range(1, len(parts)):
                d = "/".join(([prefix] if prefix else []) + parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest()})
            if recursive or len(parts) == 1:
                out.append({"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()})
        return out

    def do_GET(self, head=False):
        url = urllib.parse.urlsplit(self.path)
        path, query = urllib.parse.unquote(url.path), urllib.parse.parse_qs(url.query)
        m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if m:
            sha, files = self._commit(m.group(1), m.group(2) or "main")
            if files is None:
                return self._not_found("Repository or revision not found")
            return self._json(
                {"id": m.group(1), "sha": sha, "private": False, "siblings": [{"rfilename": p} for p in sorted(files)]}
            )
        m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path)
        if m:
            sha, files = self._commit(m.group(1), m.group(2))
            if files is None:
                return self._not_found("Repository or revision not found")
            prefix = (m.group(3) or "").strip("/")
            if prefix and prefix in files:
                return self._not_found()
            entries = self._entries(files, prefix, query.get("recursive", ["false"])[0].lower() in ("1", "true"))
            if prefix and not entries:
                return self._not_found()
            return self._json(entries)
        m = re.fullmatch(r"/(?:datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            sha, files = self._commit(m.group(1), m.group(2))
            if files is None or m.group(3) not in files:
                return self._not_found()
            data = files[m.group(3)]
            headers = {
                "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                "X-Repo-Commit": sha,
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if rng:
                start = int(rng.group(1))
                end = min(int(rng.group(2)) if rng.group(2) else len(data) - 1, len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                return self._send(206, data[start : end + 1], headers, head)
            return self._send(200, data, headers, head)
        return self._not_found()

    def do_HEAD(self):
        self.do_GET(head=True)

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/paths-info/([^/]+)", urllib.parse.unquote(url.path))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not m:
            return self._not_found()
        sha, files = self._commit(*m.groups())
        if files is None:
            return self._not_found("Repository or revision not found")
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(body).get("paths", [])
        else:
            paths = urllib.parse.parse_qs(body.decode()).get("paths", [])
        out = []
        for p in paths:
            p = p.strip("/")
            if p in files:
                out.append(
                    {"type": "file", "path": p, "size": len(files[p]), "oid": hashlib.sha1(files[p]).hexdigest()}
                )
            elif any(f.startswith(p + "/") for f in files):
                out.append({"type": "directory", "path": p, "oid": hashlib.sha1(p.encode()).hexdigest()})
        return self._json(out)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, repos: dict):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos = repos
        self.unknown: list[str] = []


@contextlib.contextmanager
def serve(repos: dict) -> Iterator[_Server]:
    """The stand-in on a free loopback port; `server.url` is its endpoint."""
    server = _Server(repos)
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def endpoint_set(url: str) -> Iterator[None]:
    """This process's huggingface_hub pointed at `url` (it read HF_ENDPOINT at import), with fsspec's
    cached hf:// instances dropped before and after."""
    import os

    from huggingface_hub import HfFileSystem, constants

    old, old_template, old_env = (
        constants.ENDPOINT,
        constants.HUGGINGFACE_CO_URL_TEMPLATE,
        os.environ.get("HF_ENDPOINT"),
    )
    # The two values constants.py derives from HF_ENDPOINT at import.
    constants.ENDPOINT, os.environ["HF_ENDPOINT"] = url, url
    constants.HUGGINGFACE_CO_URL_TEMPLATE = url + "/{repo_id}/resolve/{revision}/{filename}"
    HfFileSystem.clear_instance_cache()
    try:
        yield
    finally:
        constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE = old, old_template
        if old_env is None:
            os.environ.pop("HF_ENDPOINT", None)
        else:
            os.environ["HF_ENDPOINT"] = old_env
        HfFileSystem.clear_instance_cache()
