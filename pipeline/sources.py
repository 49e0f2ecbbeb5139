"""Where the job's lines come from: each corpus's files, read by its `input_format`, as LineBatch elements.

  lines   JSON-lines files (pipeline/reading.py: one DoFn reads a whole file, numbering its lines) and
          Parquet files (Beam's Parquet IO, split by row group; each row becomes the JSON object of its
          cells, which the corpus's `fields` map like any object line: one rule for both)
  beir    BEIR-format directories joined into `query` records (pipeline/beir.py)
  reddit_comments  Reddit comment dumps paired by thread into (context, response) lines (pipeline/reddit.py)

Every source gives the same three things, so the rest of the job (parse, tokenize, split, write,
count) does not know where a line came from:
  batches       LineBatch elements (pipeline/lines.py)
  line_counts   (corpus, n): the lines each source emitted, counted before the shuffle, which the
                manifest step checks against the lines processed
  events        (corpus, event name) for a source's own accounting (BEIR: documents read, qrels
                naming a missing document, ...), counted into the manifest's `source` record
  rejected      rejected-record JSON lines of a source's own inputs (a bad document line, ...)
  skipped       (corpus, {"file", "last_line", "cause"}) of files left out by --on_corrupt_file=skip
                (pipeline/reading.py, pipeline/reddit.py); with the default, such a file fails the job
"""
from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam

from pipeline.data_config import PARQUET_SUFFIX, DataConfig
from pipeline.lines import LineBatch
from pipeline.parsing import row_line
from pipeline.reading import LINE_COUNTS, SKIPPED, ReadLineBatches


class SourceOutputs(NamedTuple):
    batches: list  # PCollections of LineBatch
    line_counts: list  # PCollections of (corpus, n)
    events: list  # PCollections of (corpus, event)
    rejected: list  # PCollections of rejected-record JSON strings
    skipped: list  # PCollections of (corpus, {"file", "last_line", "cause"})


class ParquetTablesToBatches(beam.DoFn):
    """(file, pyarrow.Table) -> LineBatch of the rows as JSON objects, and (corpus, rows) on LINE_COUNTS."""

    def __init__(self, corpus: str, batch_lines: int):
        self._corpus, self._batch_lines = corpus, batch_lines

    def process(self, element):
        path, table = element
        rows = table.to_pylist()
        for start in range(0, len(rows), self._batch_lines):
            chunk = rows[start:start + self._batch_lines]
            yield LineBatch(self._corpus, path, 0, [row_line(r) for r in chunk], ())
        yield beam.pvalue.TaggedOutput(LINE_COUNTS, (self._corpus, len(rows)))


def _is_parquet(path: str) -> bool:
    return path.endswith(PARQUET_SUFFIX)


def read_sources(p: beam.Pipeline, config: DataConfig, files: dict[str, list[str]], batch_lines: int,
                 max_line_bytes: int, on_corrupt_file: str = "fail") -> SourceOutputs:
    from pipeline import beir, reddit
    from pipeline.reddit_filters import RedditOptions

    out = SourceOutputs([], [], [], [], [])
    json_files = [(c.name, f) for c in config.corpora if c.input_format == "lines"
                  for f in files[c.name] if not _is_parquet(f)]
    if json_files:
        read = (p
                | "Files" >> beam.Create(json_files, reshuffle=False)
                | "ReadLines" >> beam.ParDo(ReadLineBatches(batch_lines, max_line_bytes, on_corrupt_file)).with_outputs(
                    LINE_COUNTS, SKIPPED, main="batches"))
        out.batches.append(read.batches)
        out.line_counts.append(read[LINE_COUNTS])
        out.skipped.append(read[SKIPPED])
    for c in config.corpora:
        parquet = [f for f in files[c.name] if _is_parquet(f)] if c.input_format == "lines" else []
        if parquet:
            # Every column is read: a mapped column that a file lacks becomes a rejected row
            # (wrong_format) instead of a failed read.
            rows = (p
                    | f"Parquet/{c.name}/Files" >> beam.Create(parquet, reshuffle=False)
                    | f"Parquet/{c.name}/Read" >> beam.io.ReadAllFromParquetBatched(with_filename=True)
                    | f"Parquet/{c.name}/Rows" >> beam.ParDo(ParquetTablesToBatches(c.name, batch_lines)).with_outputs(
                        LINE_COUNTS, main="batches"))
            out.batches.append(rows.batches)
            out.line_counts.append(rows[LINE_COUNTS])
        if c.input_format == "beir":
            for i, directory in enumerate(files[c.name]):
                got = p | f"Beir/{c.name}/{i}" >> beir.ReadBeir(c.name, directory, c.qrels_split, batch_lines)
                out.batches.append(got.batches)
                out.line_counts.append(got.line_counts)
                out.events.append(got.events)
                out.rejected.append(got.rejected)
        if c.input_format == "reddit_comments":
            got = p | f"Reddit/{c.name}" >> reddit.RedditPairs(c.name, files[c.name], RedditOptions(**c.reddit_options),
                                                                batch_lines, on_corrupt_file)
            out.batches.append(got.batches)
            out.line_counts.append(got.batches | f"Reddit/{c.name}/CountLines" >> beam.Map(
                lambda b: (b.corpus, len(b.lines))))
            out.events.append(got.events | f"Reddit/{c.name}/Keyed" >> beam.Map(lambda e, name=c.name: (name, e)))
            out.rejected.append(got.rejected)
            out.skipped.append(got.skipped)
    return out


def source_rejected(input_format: str, counts: dict) -> dict[str, int]:
    """reason -> input lines of a joined source written to `rejected/` that its corpus's rejected
    total counts (Reddit's bad comment lines; a BEIR set's bad lines are in its `source` record only)."""
    from pipeline import reddit

    return reddit.rejected_counts(counts) if input_format == "reddit_comments" else {}


def check_source_counts(input_format: str, counts: dict) -> list[str]:
    """The accounting identities of a joined source that do not hold (empty: all hold)."""
    from pipeline import beir, reddit

    return {"beir": beir.check_beir_counts, "reddit_comments": reddit.check_reddit_counts}[input_format](counts)
