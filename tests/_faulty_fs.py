"""A file system that fails on purpose: `faulty://abs/path` is the local file /abs/path, read through
Beam's FileSystems (the job's workers) with injected read faults, and through fsspec (the launcher's
listing and start-up check) without them.

The faults are set per file name in `<state dir>/spec.json` ({name: {"nth_read": N, "times": T}}):
the N-th read() or readline() of the file's raw bytes raises OSError("injected fault ..."), the first T times;
T = 0: from then on every read of the file fails (a file that became unreadable). The state dir is
`$FAULTY_FS_STATE`, so worker processes share it; each injected fault is one line in
`<state dir>/injected.log`, which tests count.
"""

from __future__ import annotations

import json
import os

import fsspec
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.localfilesystem import LocalFileSystem
from fsspec.implementations.local import LocalFileSystem as FsspecLocal

SCHEME = "faulty"
STATE_ENV = "FAULTY_FS_STATE"


def url(path: str) -> str:
    """`faulty://tmp/x` for /tmp/x: the form pipeline/storage.py's listing gives back."""
    return f"{SCHEME}://{os.path.abspath(path).lstrip('/')}"


def _local(path: str) -> str:
    return "/" + path[len(SCHEME) + 3 :].lstrip("/") if path.startswith(f"{SCHEME}://") else path


def set_faults(state_dir: str, spec: dict) -> None:
    """Writes the spec and clears the log; the environment variable points the file systems at it."""
    os.makedirs(state_dir, exist_ok=True)
    with open(os.path.join(state_dir, "spec.json"), "w") as f:
        json.dump(spec, f)
    open(os.path.join(state_dir, "injected.log"), "w").close()
    os.environ[STATE_ENV] = state_dir


def injected(state_dir: str) -> list[str]:
    with open(os.path.join(state_dir, "injected.log")) as f:
        return f.read().split()


class _FaultyReader:
    def __init__(self, f, name: str, rule: dict, state_dir: str):
        self._f, self._name, self._rule, self._state = f, name, rule, state_dir
        self._reads = 0

    def read(self, n=-1):
        self._tick()
        return self._f.read(n)

    def readline(self, n=-1):
        self._tick()
        return self._f.readline(n)

    def _tick(self):
        """Counts a read (read() or readline()); the rule's one raises."""
        self._reads += 1
        times = self._rule.get("times", 1)
        done = len([x for x in injected(self._state) if x == self._name])
        if (times == 0 and done) or self._reads == self._rule["nth_read"]:
            if times == 0 or done < times:
                with open(os.path.join(self._state, "injected.log"), "a") as log:
                    log.write(self._name + "\n")
                raise OSError(f"injected fault at read {self._reads} of {self._name}")

    def readinto(self, b):
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


class FaultyFileSystem(LocalFileSystem):
    """Beam's local file system under the `faulty` scheme, with the spec's read faults."""

    @classmethod
    def scheme(cls):
        return SCHEME

    def match(self, patterns, limits=None):
        from apache_beam.io.filesystem import FileMetadata, MatchResult

        out = super().match([_local(p) for p in patterns], limits)
        return [
            MatchResult(p, [FileMetadata(url(m.path), m.size_in_bytes) for m in r.metadata_list])
            for p, r in zip(patterns, out)
        ]

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        f = super().open(_local(path), mime_type, compression_type)
        state = os.environ.get(STATE_ENV)
        if not state:
            return f
        with open(os.path.join(state, "spec.json")) as s:
            rule = json.load(s).get(os.path.basename(_local(path)))
        return _FaultyReader(f, os.path.basename(_local(path)), rule, state) if rule else f


class FsspecFaultyLocal(FsspecLocal):
    """The same files for fsspec (pipeline/storage.py on the launcher), without faults."""

    protocol = SCHEME

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(_local(path))

    def unstrip_protocol(self, name):
        return url(name)


fsspec.register_implementation(SCHEME, FsspecFaultyLocal, clobber=True)
