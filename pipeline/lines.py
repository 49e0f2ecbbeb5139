"""Numbered raw lines of one corpus file, in batches, without Beam: shared by the Beam job's reader
(`pipeline/reading.py`, which opens files through Beam's FileSystems) and the negative miner
(`trainer/mining/`, through `pipeline/storage.py`).

A too-long line is never held whole: its head is kept for the report and the rest skipped in bounded
chunks. A corrupt or truncated file keeps the lines before the error and reports the error once.
"""
from __future__ import annotations

import contextlib
import gzip
from typing import Callable, ContextManager, IO, Iterator, NamedTuple

# How much of a too-long line is kept for the rejected record.
KEEP_OF_LONG_LINE = 4096


class LineBatch(NamedTuple):
    corpus: str
    path: str
    first_line: int  # 1-based number of lines[0]; 0: the lines have no numbers (Parquet rows, joined records)
    lines: list  # raw bytes without the line break; a too-long line is cut to KEEP_OF_LONG_LINE bytes
    too_long: tuple  # indexes into lines of lines longer than max_line_bytes
    read_error: str  # non-empty: the file ended in an error after these lines


@contextlib.contextmanager
def gunzipped(raw: IO[bytes], path: str) -> Iterator[IO[bytes]]:
    """`raw` itself, or a gunzipping reader of it when the name ends in .gz."""
    if path.endswith(".gz"):
        # GzipFile buffers internally in small steps, so the lines before a corrupt tail still come out.
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


def _strip_eol(line: bytes) -> bytes:
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


def iter_line_batches(corpus: str, path: str, batch_lines: int, max_line_bytes: int,
                      opener: Callable[[str], ContextManager[IO[bytes]]] = open_with_storage) -> Iterator[LineBatch]:
    """Batches of numbered lines of one file; never holds more than max_line_bytes of one line."""
    lines: list = []
    too_long: list = []
    first = 1
    number = 0
    error = ""
    try:
        with opener(path) as f:
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
                    yield LineBatch(corpus, path, first, lines, tuple(too_long), "")
                    first, lines, too_long = number + 1, [], []
    except (OSError, EOFError, ValueError) as e:  # truncated or corrupt gzip, unreadable file
        error = f"{type(e).__name__}: {e}"[:500]
    if lines or error:
        yield LineBatch(corpus, path, first, lines, tuple(too_long), error)


def batch_units(batch: LineBatch) -> int:
    """The lines a batch accounts for: its lines, plus one for a read error (a rejected record)."""
    return len(batch.lines) + (1 if batch.read_error else 0)
