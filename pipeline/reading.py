"""Reads corpus files as raw byte lines, numbered, in batches.

One DoFn call reads one whole file: gzip (what the corpora are) cannot be split, and reading a file
from its start is what gives exact line numbers for rejected records. Lines travel in batches of a
few hundred so that every later step pays Beam's per-element cost once per batch, and a Reshuffle
after this step spreads the batches over workers. Files are opened through Beam's FileSystems, so
local paths, gs:// and hf:// work alike (this module registers hf:// itself: a worker that unpickles
the DoFn imports it, and nothing else guarantees the scheme there); decompression uses Python's gzip
(C speed) rather than Beam's pure-Python line reader. The line reader itself, with its retries on
read faults, lives in `pipeline/lines.py` (Beam-free, shared with the negative miner).

A file that cannot be read to its end raises FileReadFailed (the job fails) or, with
--on_corrupt_file=skip, is reported on the SKIPPED output instead of being counted: the batches it
already emitted are dropped by the processing step (job.py passes it the skipped files as a side
input, which costs nothing more in a batch job: the Reshuffle between the two steps is a barrier
anyway), so a skipped file gives no record at all, never a prefix, and is read once.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import apache_beam as beam

from pipeline import hf_filesystem  # noqa: F401 (registers hf:// with Beam's FileSystems on every worker)
from pipeline.lines import DEFAULT_RETRY, KEEP_OF_LONG_LINE, FileReadFailed, LineBatch, Retry, gunzipped  # noqa: F401
from pipeline.lines import iter_line_batches as _iter_line_batches
from pipeline.parsing import row_line

ON_CORRUPT_FILE = ("fail", "skip")


@contextlib.contextmanager
def open_binary(path: str):
    """A binary file object of `path` (local, gs://, hf://), gunzipped when the name ends in .gz."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw, gunzipped(raw, path) as f:
        yield f


def iter_line_batches(
    corpus: str, path: str, batch_lines: int, max_line_bytes: int, retry: Retry = DEFAULT_RETRY
) -> Iterator[LineBatch]:
    """`pipeline.lines.iter_line_batches` through Beam's FileSystems (what the workers are set up for)."""
    return _iter_line_batches(corpus, path, batch_lines, max_line_bytes, opener=open_binary, retry=retry)


LINE_COUNTS = "line_counts"
SKIPPED = "skipped_files"


def skipped_entry(corpus: str, e: FileReadFailed) -> tuple:
    """The SKIPPED element of a file left out: (corpus, {"file", "last_line", "cause"})."""
    return corpus, {"file": e.path, "last_line": e.last_line, "cause": e.cause}


class ReadLineBatches(beam.DoFn):
    """(corpus, path) -> LineBatch elements (main output), and (corpus, lines) per file on the
    LINE_COUNTS output: counted here, before any shuffle, so that the manifest step can prove that
    every line read was processed (see job.WriteManifest). With on_corrupt_file="skip", a file that
    cannot be read goes to SKIPPED (skipped_entry) instead of LINE_COUNTS (module docstring)."""

    def __init__(
        self, batch_lines: int, max_line_bytes: int, on_corrupt_file: str = "fail", retry: Retry = DEFAULT_RETRY
    ):
        if on_corrupt_file not in ON_CORRUPT_FILE:
            raise ValueError(f"on_corrupt_file must be one of {ON_CORRUPT_FILE}, got {on_corrupt_file!r}")
        self._batch_lines = batch_lines
        self._max_line_bytes = max_line_bytes
        self._skip = on_corrupt_file == "skip"
        self._retry = retry

    def process(self, element):
        corpus, path = element
        n = 0
        try:
            for batch in iter_line_batches(corpus, path, self._batch_lines, self._max_line_bytes, self._retry):
                n += len(batch.lines)
                yield batch
        except FileReadFailed as e:
            if not self._skip:
                raise
            yield beam.pvalue.TaggedOutput(SKIPPED, skipped_entry(corpus, e))
            return
        yield beam.pvalue.TaggedOutput(LINE_COUNTS, (corpus, n))


class ParquetTablesToBatches(beam.DoFn):
    """(file, pyarrow.Table) -> LineBatch of the rows as JSON objects, and (corpus, rows) on LINE_COUNTS."""

    def __init__(self, corpus: str, batch_lines: int):
        self._corpus, self._batch_lines = corpus, batch_lines

    def process(self, element):
        path, table = element
        rows = table.to_pylist()
        for start in range(0, len(rows), self._batch_lines):
            chunk = rows[start : start + self._batch_lines]
            yield LineBatch(self._corpus, path, 0, [row_line(r) for r in chunk], ())
        yield beam.pvalue.TaggedOutput(LINE_COUNTS, (self._corpus, len(rows)))
