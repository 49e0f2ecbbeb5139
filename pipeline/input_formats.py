"""The job's input formats: how a corpus's files become line batches. One registry entry per format.

A corpus names its format in the data config (`input_format`, default "lines"). Everything the job
does that depends on the format goes through the format's entry, an `InputFormat`:

  options             the data-config fields of a corpus that the format owns, with their defaults
                      (BEIR's `qrels_split`, Reddit's `reddit_options`); any other format refuses them
  parse_options()     checks them (and the corpus's record format and fields) when the data config loads
  find()              what a resolved file pattern names (files; BEIR: the directories holding a set)
  read()              the Beam transform that reads the files into SourceOutputs (below)
  check_counts()      the identities its source events must satisfy (checked before the manifest is written)
  source_rejected()   its own rejected input lines, by reason, that count in the corpus's rejected total
  counts_input_lines  whether the lines it emits are the files' lines (then expected_lines is enforced)
  check_before_start()  the launcher's start-up check (default: the first lines of each file parsed)
  sample_rejections() how a sample line is judged by that check and by `python -m pipeline.inspect_files`
  recognise()         `inspect`'s note when a file's sample holds this format's records (and then
  suggest_entry()     the data-config entry it suggests for the file)
  reads_files         whether `inspect` samples the files `find` names

Adding a format is a module with an `InputFormat` subclass plus one line in REGISTRY, or, from code
that is not part of the project (a test, a user's own launcher), `register(MyFormat())` before the job
is built (docs/extending.md). Entries are imported when a corpus names them, so loading a data config
does not import Beam.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

from pipeline import format_check, parsing

# name -> "module:attribute" of its InputFormat instance.
REGISTRY: dict[str, str] = {
    "lines": "pipeline.line_files:LINES",  # JSON lines (.jsonl, .jsonl.gz) and Parquet (.parquet)
    "beir": "pipeline.beir_format:BEIR",  # BEIR-format directories joined into `query` records
    "reddit_comments": "pipeline.reddit_format:REDDIT_COMMENTS",  # Reddit comment dumps paired by thread
}
_LOADED: dict[str, "InputFormat"] = {}


class SourceOutputs(NamedTuple):
    """What reading gives the rest of the job (which then does not know where a line came from)."""

    batches: list  # PCollections of LineBatch (pipeline/lines.py)
    line_counts: list  # PCollections of (corpus, n): lines emitted, counted before the shuffle
    events: list  # PCollections of (corpus, event name) of the format's own accounting
    rejected: list  # PCollections of rejected-record JSON strings of the format's own inputs
    # PCollections of (corpus, {"file", "last_line", "cause"}): files left out whole under
    # --on_corrupt_file=skip (pipeline/reading.py skipped_entry); their batches are dropped downstream.
    skipped: list


class ReadSettings(NamedTuple):
    """The job's reading flags (pipeline/options.py), as every format's read() gets them."""

    batch_lines: int  # lines per LineBatch
    max_line_bytes: int  # a longer line is a rejected record (line_too_long), never held whole
    on_corrupt_file: str = "fail"  # "fail": a file that cannot be read fails the job; "skip": left out whole


class InputFormat:
    """The hooks of one input format; subclass, set `name`, override `read` and what differs."""

    name: str = ""
    options: dict[str, Any] = {}
    # Whether `find` names files that `python -m pipeline.inspect_files` can sample (BEIR names directories).
    reads_files: bool = True
    # Whether the lines read() emits are its files' lines, so that a corpus's expected_lines is checked
    # against them (False where the job builds the records: BEIR's queries, Reddit's pairs).
    counts_input_lines: bool = True

    def parse_options(
        self, options: dict[str, Any], record_format: str, fields: dict[str, str], files: list[str]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """(the options as the corpus keeps them, its fields), checked against the corpus's record format
        and files; raise ValueError(message) to refuse the data config."""
        return options, fields

    def needs_files(self, options: dict[str, Any]) -> bool:
        """Whether a corpus of this format must list files (a Reddit corpus may read a table instead)."""
        return True

    def find(self, path: str) -> list[str]:
        from pipeline import storage

        return storage.glob(path)

    def read(self, p, corpus, files: list[str], settings: ReadSettings) -> SourceOutputs:
        raise NotImplementedError(f"input format {self.name!r} does not implement read()")

    def check_counts(self, counts: dict[str, int]) -> list[str]:
        """The identities of the format's source events that do not hold (empty: all hold)."""
        return []

    def source_rejected(self, counts: dict[str, int]) -> dict[str, int]:
        """reason -> the format's own input lines written to `rejected/` that its corpus's rejected total
        counts (from its event counts; default none)."""
        return {}

    @property
    def has_events(self) -> bool:
        """Whether the manifest records the format's source events (a `source` record)."""
        return type(self).check_counts is not InputFormat.check_counts

    def check_before_start(self, corpus, files: list[str], n: int) -> None:
        """Raises format_check.FormatCheckError when the corpus's files cannot be what it declares."""
        format_check.check_files_sample(corpus, files, n)

    def sample_rejections(self, corpus, lines: list[bytes], too_long: tuple[int, ...]) -> tuple[str, list]:
        """(what the check reads the lines as, the rejections among them: objects with .reason, .detail)."""
        record_format, fields = corpus.line_format
        return (
            f"record_format {record_format!r}" + (f" with fields {fields}" if fields else ""),
            [
                r
                for _, _, r in parsing.parse_lines(lines, too_long, record_format, fields)
                if isinstance(r, parsing.Rejection)
            ],
        )

    def recognise(self, objects: list) -> str | None:
        """A note for `inspect` when most of a file's sample values (decoded JSON) are this format's records."""
        return None

    def suggest_entry(self, entry: dict) -> dict:
        """The data-config entry for a file `recognise` noted: `entry` holds its name and files."""
        return {**entry, "input_format": self.name}


def register(fmt: InputFormat) -> InputFormat:
    """Adds (or replaces) a format by its name; returns it."""
    if not fmt.name or not all(ch.isalnum() or ch == "_" for ch in fmt.name):
        raise ValueError(f"an input format's name is letters, digits and '_', got {fmt.name!r}")
    _LOADED[fmt.name] = fmt
    return fmt


def names() -> tuple[str, ...]:
    return tuple(dict.fromkeys([*REGISTRY, *_LOADED]))


def get(name: str) -> InputFormat:
    """The entry of a format name; KeyError for a name not in the registry."""
    if name not in _LOADED:  # a name in neither raises KeyError here
        module, attr = REGISTRY[name].split(":")
        fmt = getattr(importlib.import_module(module), attr)
        if not isinstance(fmt, InputFormat) or fmt.name != name:
            raise TypeError(f"REGISTRY[{name!r}] = {REGISTRY[name]!r} is not the InputFormat named {name!r}")
        _LOADED[name] = fmt
    return _LOADED[name]
