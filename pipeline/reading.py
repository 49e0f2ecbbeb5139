"""Reads corpus files as raw byte lines, numbered, in batches.

One DoFn call reads one whole file: gzip (what the corpora are) cannot be split, and reading a file
from its start is what gives exact line numbers for rejected records. Lines travel in batches of a
few hundred so that every later step pays Beam's per-element cost once per batch, and a Reshuffle
after this step spreads the batches over workers. Files are opened through Beam's FileSystems, so
local paths and gs:// work alike; decompression uses Python's gzip (C speed) rather than Beam's
pure-Python line reader. The line reader itself lives in `pipeline/lines.py` (Beam-free, shared with
the negative miner).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import apache_beam as beam

from pipeline.lines import KEEP_OF_LONG_LINE, LineBatch, batch_units, gunzipped  # noqa: F401 (re-exported)
from pipeline.lines import iter_line_batches as _iter_line_batches
from pipeline.parsing import row_line


@contextlib.contextmanager
def open_binary(path: str):
    """A binary file object of `path` (local or gs://), gunzipped when the name ends in .gz."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw, gunzipped(raw, path) as f:
        yield f


def iter_line_batches(corpus: str, path: str, batch_lines: int, max_line_bytes: int) -> Iterator[LineBatch]:
    """`pipeline.lines.iter_line_batches` through Beam's FileSystems (what the workers are set up for)."""
    return _iter_line_batches(corpus, path, batch_lines, max_line_bytes, opener=open_binary)


LINE_COUNTS = "line_counts"


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


class ParquetTablesToBatches(beam.DoFn):
    """(file, pyarrow.Table) -> LineBatch of the rows as JSON objects, and (corpus, rows) on LINE_COUNTS."""

    def __init__(self, corpus: str, batch_lines: int):
        self._corpus, self._batch_lines = corpus, batch_lines

    def process(self, element):
        path, table = element
        rows = table.to_pylist()
        for start in range(0, len(rows), self._batch_lines):
            chunk = rows[start:start + self._batch_lines]
            yield LineBatch(self._corpus, path, 0, [row_line(r) for r in chunk], (), "")
        yield beam.pvalue.TaggedOutput(LINE_COUNTS, (self._corpus, len(rows)))
