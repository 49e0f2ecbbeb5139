"""Where the job's lines come from: each corpus's files, read by its input format's entry
(pipeline/input_formats.py), as LineBatch elements.

Every format gives the same five things (input_formats.SourceOutputs), so the rest of the job (parse,
tokenize, split, write, count) does not know where a line came from: line batches, line counts taken
before the shuffle (which the manifest step checks against the lines processed), the format's own
events (BEIR: documents read, qrels naming a missing document, ...; counted into the manifest's
`source` record and checked by the format's identities), its own rejected records, and the files
left out by --on_corrupt_file=skip (with the default, such a file fails the job).
"""

from __future__ import annotations

from pipeline import hf_filesystem  # noqa: F401 (registers hf:// with Beam's FileSystems)
from pipeline.data_config import DataConfig
from pipeline.input_formats import ReadSettings, SourceOutputs


def read_sources(
    p,
    config: DataConfig,
    files: dict[str, list[str]],
    batch_lines: int,
    max_line_bytes: int,
    on_corrupt_file: str = "fail",
) -> SourceOutputs:
    """Every corpus read by its input format's entry, the outputs gathered by kind."""
    settings = ReadSettings(batch_lines, max_line_bytes, on_corrupt_file)
    out = SourceOutputs([], [], [], [], [])
    for c in config.corpora:
        got = c.reader.read(p, c, files[c.name], settings)
        for mine, theirs in zip(out, got):
            mine.extend(theirs)
    return out


def check_source_counts(corpus, counts: dict) -> list[str]:
    """The accounting identities of a corpus's source events that do not hold (empty: all hold)."""
    return corpus.reader.check_counts(counts)
