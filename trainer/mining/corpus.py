"""A pair or query corpus read for mining: distinct anchors, their positives, and the candidate pool.

Lines are read and parsed exactly as the Beam job reads them (`pipeline/lines.py`,
`pipeline/parsing.py`), so a line the job would reject is rejected here for the same reason and
counted. Anchors are grouped by text fingerprint (`pipeline.record_schema.fingerprint` of the
stripped text, as the job writes it and the loss compares): one anchor with all its positives, in
line order, as sentence-transformers groups a dataset's rows by anchor. The pool is every distinct
positive (by fingerprint), then the distinct texts of `--pool` files not already in it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Iterable, Sequence

import numpy as np

from pipeline import parsing, storage
from pipeline.lines import iter_line_batches
from pipeline.record_schema import FORMATS, ROLE_POSITIVE, fingerprint
from pipeline.user_errors import UserError

# Formats whose lines are (anchor, positives): the ones mining adds negatives to.
MINABLE_FORMATS = ("pair", "query")
MAX_LINE_BYTES = 1 << 20  # the Beam job's default --max_line_bytes
EXAMPLES_KEPT = 20  # rejected lines quoted in the report


def text_fingerprint(text: str) -> int:
    """The fingerprint the Beam job writes for a text (of the stripped text)."""
    return fingerprint(text.strip())


@dataclasses.dataclass
class ReadCounts:
    """What reading saw: lines read, accepted, rejected by reason (the Beam job's reasons)."""

    files: list = dataclasses.field(default_factory=list)
    lines_read: int = 0
    accepted: int = 0
    rejected: dict = dataclasses.field(default_factory=dict)
    examples: list = dataclasses.field(default_factory=list)  # the first rejected lines

    def reject(self, path: str, line_number: int, reason: str, detail: str, raw: bytes) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append(
                {
                    "file": path,
                    "line_number": line_number,
                    "reason": reason,
                    "detail": detail,
                    "line": raw[:400].decode("utf-8", "replace"),
                }
            )

    def to_json(self) -> dict:
        return {
            "files": self.files,
            "lines_read": self.lines_read,
            "accepted": self.accepted,
            "rejected": {"total": sum(self.rejected.values()), "by_reason": dict(sorted(self.rejected.items()))},
            "rejected_examples": self.examples,
        }


@dataclasses.dataclass
class MiningCorpus:
    queries: list[str]  # distinct anchors, first-seen text
    query_fp: np.ndarray  # int64 [n_queries]
    positives: list[list[int]]  # per anchor: pool indices of its distinct positives, in line order
    pool: list[str]  # candidate texts: distinct positives first, then the --pool texts
    pool_fp: np.ndarray  # int64 [n_pool]
    # The most (anchor, positive) occurrences of one anchor, duplicates counted: sentence-transformers'
    # `max_positives`, which widens the search window by as many candidates.
    max_positive_rows: int
    corpus_counts: ReadCounts
    pool_counts: ReadCounts | None


def input_files(pattern: str, flag: str) -> list[str]:
    """The files a comma-separated list of paths or globs names (local or gs://), or a UserError."""
    files: list[str] = []
    for part in [p for p in pattern.split(",") if p]:
        found = storage.glob(part)
        if not found:
            raise UserError(f"{flag}={part}: no such file")
        files += found
    if not files:
        raise UserError(f"{flag} names no file")
    return files


def _lines(files: Sequence[str], counts: ReadCounts, max_line_bytes: int):
    """(path, line number, raw line) of every line, with too-long lines counted; a file that cannot be
    read to its end raises FileReadFailed (pipeline/lines.py), so mining never runs on part of a file."""
    for path in files:
        counts.files.append(path)
        for batch in iter_line_batches("mine", path, 1024, max_line_bytes):
            counts.lines_read += len(batch.lines)
            too_long = set(batch.too_long)
            for i, raw in enumerate(batch.lines):
                if i in too_long:
                    counts.reject(
                        path, batch.first_line + i, parsing.LINE_TOO_LONG, "line longer than --max_line_bytes", raw
                    )
                else:
                    yield path, batch.first_line + i, raw


def _pool_line(raw: bytes) -> str:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise parsing.Rejection(parsing.INVALID_UTF8, str(e)) from None
    except ValueError as e:
        raise parsing.Rejection(parsing.BAD_JSON, str(e)[:200]) from None
    if isinstance(obj, dict) and set(obj) == {"text"}:
        obj = obj["text"]
    if not isinstance(obj, str):
        raise parsing.Rejection(parsing.WRONG_FORMAT, 'a pool line is a JSON string or {"text": ...}')
    if not obj.strip():
        raise parsing.Rejection(parsing.EMPTY_TEXT, "text is empty")
    return obj


def _add_text(texts: list[str], fps: list[int], index: dict[int, int], text: str) -> int:
    fp = text_fingerprint(text)
    if fp not in index:
        index[fp] = len(texts)
        texts.append(text)
        fps.append(fp)
    return index[fp]


def read_corpus(
    pattern: str, record_format: str = "pair", pool_pattern: str | None = None, max_line_bytes: int = MAX_LINE_BYTES
) -> MiningCorpus:
    """Reads `--input` (and `--pool`); a UserError when nothing usable is there."""
    if record_format not in MINABLE_FORMATS:
        raise UserError(f"--record_format={record_format}: mining reads {' or '.join(MINABLE_FORMATS)} lines")
    fmt = FORMATS[record_format]
    files = input_files(pattern, "--input")
    counts = ReadCounts()
    queries: list[str] = []
    query_fps: list[int] = []
    query_index: dict[int, int] = {}
    positives: list[list[int]] = []
    rows: list[int] = []
    pool: list[str] = []
    pool_fps: list[int] = []
    pool_index: dict[int, int] = {}
    for path, number, raw in _lines(files, counts, max_line_bytes):
        try:
            texts, roles = parsing.parse_line(raw, record_format)
        except parsing.Rejection as r:
            counts.reject(path, number, r.reason, r.detail, raw)
            continue
        counts.accepted += 1
        q = _add_text(queries, query_fps, query_index, texts[roles.index(fmt.anchor_role)])
        if q == len(positives):
            positives.append([])
            rows.append(0)
        for text, role in zip(texts, roles):
            if role == ROLE_POSITIVE:
                p = _add_text(pool, pool_fps, pool_index, text)
                rows[q] += 1
                if p not in positives[q]:
                    positives[q].append(p)
    if not counts.accepted:
        why = (
            f"{counts.lines_read} line(s) read, all rejected "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(counts.rejected.items()))})"
            if counts.lines_read
            else "it is empty"
        )
        raise UserError(f"--input={pattern}: no usable {record_format} line: {why}")
    pool_counts = None
    if pool_pattern:
        pool_counts = ReadCounts()
        for path, number, raw in _lines(input_files(pool_pattern, "--pool"), pool_counts, max_line_bytes):
            try:
                text = _pool_line(raw)
            except parsing.Rejection as r:
                pool_counts.reject(path, number, r.reason, r.detail, raw)
                continue
            pool_counts.accepted += 1
            _add_text(pool, pool_fps, pool_index, text)
    return MiningCorpus(
        queries,
        np.array(query_fps, np.int64),
        positives,
        pool,
        np.array(pool_fps, np.int64),
        max(rows),
        counts,
        pool_counts,
    )


def positive_matrix(positives: Iterable[list[int]], width: int) -> np.ndarray:
    """Per anchor its positives' pool indices, padded with -1 to `width` columns: int32 [n, width]."""
    positives = list(positives)
    out = np.full((len(positives), max(width, 1)), -1, np.int32)
    for i, p in enumerate(positives):
        out[i, : len(p)] = p
    return out
