"""Reads corpus files as raw byte lines, numbered, in batches.

One DoFn call reads one whole file: gzip (what the corpora are) cannot be split, and reading a file
from its start is what gives exact line numbers for rejected records. Lines travel in batches of a
few hundred so that every later step pays Beam's per-element cost once per batch, and a Reshuffle
after this step spreads the batches over workers. Files are opened through Beam's FileSystems, so
local paths and gs:// work alike; decompression uses Python's gzip (C speed) rather than Beam's
pure-Python line reader.
"""
from __future__ import annotations

import contextlib
import gzip
from typing import Iterator, NamedTuple

import apache_beam as beam

# How much of a too-long line is kept for the rejected record.
KEEP_OF_LONG_LINE = 4096


class LineBatch(NamedTuple):
    corpus: str
    path: str
    first_line: int  # 1-based number of lines[0]
    lines: list  # raw bytes without the line break; a too-long line is cut to KEEP_OF_LONG_LINE bytes
    too_long: tuple  # indexes into lines of lines longer than max_line_bytes
    read_error: str  # non-empty: the file ended in an error after these lines


@contextlib.contextmanager
def open_binary(path: str):
    """A binary file object of `path` (local or gs://), gunzipped when the name ends in .gz."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        if path.endswith(".gz"):
            # GzipFile buffers internally in small steps, so the lines before a corrupt tail still come out.
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                yield f
        else:
            yield raw


def _strip_eol(line: bytes) -> bytes:
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


def iter_line_batches(corpus: str, path: str, batch_lines: int, max_line_bytes: int) -> Iterator[LineBatch]:
    """Batches of numbered lines of one file; never holds more than max_line_bytes of one line."""
    lines: list = []
    too_long: list = []
    first = 1
    number = 0
    error = ""
    try:
        with open_binary(path) as f:
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


LINE_COUNTS = "line_counts"


def batch_units(batch: LineBatch) -> int:
    """The lines a batch accounts for: its lines, plus one for a read error (a rejected record)."""
    return len(batch.lines) + (1 if batch.read_error else 0)


class ReadLineBatches(beam.DoFn):
    """(corpus, path) -> LineBatch elements (main output), and (corpus, lines) per file on the
    LINE_COUNTS output: counted here, before any shuffle, so that the manifest step can prove that
    every line read was processed (see job.WriteManifest)."""

    def __init__(self, batch_lines: int, max_line_bytes: int):
        self._batch_lines = batch_lines
        self._max_line_bytes = max_line_bytes

    def process(self, element):
        corpus, path = element
        n = 0
        for batch in iter_line_batches(corpus, path, self._batch_lines, self._max_line_bytes):
            n += batch_units(batch)
            yield batch
        yield beam.pvalue.TaggedOutput(LINE_COUNTS, (corpus, n))
