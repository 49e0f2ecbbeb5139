"""Numbered raw lines of one corpus file, in batches, without Beam: shared by the Beam job's reader
(`pipeline/reading.py`, which opens files through Beam's FileSystems), the Reddit reader
(`pipeline/reddit.py`) and the negative miner (`trainer/mining/`, through `pipeline/storage.py`).

A too-long line is never held whole: its head is kept for the report and the rest skipped in bounded
chunks.

A read fault is never data. Any error opening or reading the file (a network error, a truncated or
corrupt compressed stream, a CRC mismatch, a file gone since it was listed) re-opens the file and
resumes after the last byte already returned: decompression is deterministic, so skipping that many
decompressed bytes lands exactly where the reader stopped, and no line is emitted twice. This heals a
transient fault on every runner, the DirectRunner included (it does not retry a failed bundle).
After `Retry.attempts` consecutive failures the reader raises FileReadFailed (file, last line, cause):
Dataflow then retries the bundle (its partial output is discarded) and fails the job when the fault
persists; the launcher prints it as one line (pipeline/job.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import logging
import time
from typing import IO, Callable, ContextManager, Iterator, NamedTuple

from pipeline.user_errors import JobFailure

log = logging.getLogger(__name__)

# How much of a too-long line is kept for the rejected record.
KEEP_OF_LONG_LINE = 4096
# Decompressed bytes skipped per read when a re-opened file is brought back to where it failed.
_SKIP_CHUNK = 1 << 20


class LineBatch(NamedTuple):
    corpus: str
    path: str
    first_line: int  # 1-based number of lines[0]; 0: the lines have no numbers (Parquet rows, joined records)
    lines: list  # raw bytes without the line break; a too-long line is cut to KEEP_OF_LONG_LINE bytes
    too_long: tuple  # indexes into lines of lines longer than max_line_bytes


@dataclasses.dataclass(frozen=True)
class Retry:
    """Consecutive attempts at one point of a file, with a pause of backoff_s, doubled each time,
    between them (0.5 + 1 s with the defaults)."""

    attempts: int = 3
    backoff_s: float = 0.5


DEFAULT_RETRY = Retry()


class FileReadFailed(JobFailure):
    """A file that could not be read to its end: the job fails (or, with --on_corrupt_file=skip,
    leaves the whole file out). Its args are plain data, so it pickles between processes."""

    def __init__(self, path: str, last_line: int, cause: str, attempts: int = 1):
        super().__init__(path, last_line, cause, attempts)
        self.path, self.last_line, self.cause, self.attempts = path, last_line, cause, attempts

    def __str__(self):
        return f"cannot read {self.path} (after line {self.last_line}, {self.attempts} attempt(s)): {self.cause}"


def describe_fault(e: BaseException) -> str:
    """`module.Type: message` on one line (builtins without the module: `EOFError`), cut short (it
    goes into a log line and the manifest)."""
    t = type(e)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    return " ".join(f"{name}: {e}".split())[:500]


@contextlib.contextmanager
def gunzipped(raw: IO[bytes], path: str) -> Iterator[IO[bytes]]:
    """`raw` itself, or a gunzipping reader of it when the name ends in .gz."""
    if path.endswith(".gz"):
        with gzip.GzipFile(fileobj=raw, mode="rb") as f:
            yield f
    else:
        yield raw


@contextlib.contextmanager
def open_with_storage(path: str) -> Iterator[IO[bytes]]:
    """A binary reader of `path` (local or gs://, gunzipped for .gz) through pipeline/storage.py."""
    from pipeline import storage

    with storage.open_file(path, "rb") as raw, gunzipped(raw, path) as f:
        yield f


class ResumableReader:
    """readline() over a file that survives read faults (module docstring). `lines` counts the
    complete lines returned so far (for the error message)."""

    def __init__(self, path: str, opener: Callable[[str], ContextManager[IO[bytes]]], retry: Retry = DEFAULT_RETRY):
        self._path, self._opener, self._retry = path, opener, retry
        self._stack: contextlib.ExitStack | None = None
        self._f: IO[bytes] | None = None
        self.offset = 0  # decompressed bytes returned
        self.lines = 0

    def _open(self) -> None:
        self._stack = contextlib.ExitStack()
        self._f = self._stack.enter_context(self._opener(self._path))
        left = self.offset
        while left:
            got = self._f.read(min(left, _SKIP_CHUNK))
            if not got:
                raise EOFError(f"the file ends after {self.offset - left} bytes, {self.offset} were read before")
            left -= len(got)

    def close(self) -> None:
        stack, self._stack, self._f = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(Exception):  # a broken stream may fail to close too
                stack.close()

    def readline(self, limit: int) -> bytes:
        failures = 0
        while True:
            try:
                if self._f is None:
                    self._open()
                data = self._f.readline(limit)
            except Exception as e:  # noqa: BLE001 (zlib.error, lzma, zstandard and HTTP clients' own types)
                self.close()
                failures += 1
                if failures >= self._retry.attempts:
                    raise FileReadFailed(self._path, self.lines, describe_fault(e), failures) from e
                log.warning(
                    "read fault in %s after line %d (attempt %d of %d, retrying): %s",
                    self._path,
                    self.lines,
                    failures,
                    self._retry.attempts,
                    describe_fault(e),
                )
                time.sleep(self._retry.backoff_s * 2 ** (failures - 1))
                continue
            self.offset += len(data)
            if data.endswith(b"\n"):
                self.lines += 1
            return data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _strip_eol(line: bytes) -> bytes:
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


def iter_line_batches(
    corpus: str,
    path: str,
    batch_lines: int,
    max_line_bytes: int,
    opener: Callable[[str], ContextManager[IO[bytes]]] = open_with_storage,
    retry: Retry = DEFAULT_RETRY,
) -> Iterator[LineBatch]:
    """Batches of numbered lines of one file; never holds more than max_line_bytes of one line.
    Raises FileReadFailed when the file cannot be read to its end (module docstring)."""
    lines: list = []
    too_long: list = []
    first = 1
    number = 0
    with ResumableReader(path, opener, retry) as f:
        while True:
            line = f.readline(max_line_bytes + 1)
            if not line:
                break
            number += 1
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                # Skip the rest of the line in bounded chunks, keeping its head for the report.
                head = line[:KEEP_OF_LONG_LINE]
                while line and not line.endswith(b"\n"):
                    line = f.readline(1 << 20)
                    if len(head) < KEEP_OF_LONG_LINE:
                        head += line[: KEEP_OF_LONG_LINE - len(head)]
                too_long.append(len(lines))
                lines.append(_strip_eol(head))
            else:
                lines.append(_strip_eol(line))
            if len(lines) >= batch_lines:
                yield LineBatch(corpus, path, first, lines, tuple(too_long))
                first, lines, too_long = number + 1, [], []
    if lines:
        yield LineBatch(corpus, path, first, lines, tuple(too_long))
