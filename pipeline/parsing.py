"""Turns one raw input line (bytes) into the texts and roles of a record, or a rejection reason.

The corpus's declared record format decides how a line is read (a list of three texts is a triplet in a
triplet corpus and a small set in a set corpus); a line that does not fit is rejected, never guessed.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Iterator

from pipeline.record_schema import FORMATS

# Rejection reasons (the `reason` field of rejected records and the manifest's by_reason keys).
INVALID_UTF8 = "invalid_utf8"
EMPTY_LINE = "empty_line"
BAD_JSON = "bad_json"
WRONG_FORMAT = "wrong_format"
NON_STRING_TEXT = "non_string_text"
EMPTY_TEXT = "empty_text"
LINE_TOO_LONG = "line_too_long"
FILE_READ_ERROR = "file_read_error"
REASONS = (INVALID_UTF8, EMPTY_LINE, BAD_JSON, WRONG_FORMAT, NON_STRING_TEXT, EMPTY_TEXT, LINE_TOO_LONG,
           FILE_READ_ERROR)


class Rejection(Exception):
    """A line that cannot become a record; `reason` is one of REASONS, `detail` says why in words."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def _texts(value: Any, what: str, min_count: int) -> list[str]:
    if not isinstance(value, list):
        raise Rejection(WRONG_FORMAT, f"{what} must be a JSON list, got {type(value).__name__}")
    if len(value) < min_count:
        raise Rejection(WRONG_FORMAT, f"{what} needs at least {min_count} text(s), got {len(value)}")
    return value


def _check_texts(texts: list) -> None:
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise Rejection(NON_STRING_TEXT, f"text #{i} is a {type(t).__name__}, not a string")
        if not t.strip():
            raise Rejection(EMPTY_TEXT, f"text #{i} is empty")


def _by_format(obj: Any, record_format: str) -> tuple[list, list[int]]:
    fmt = FORMATS[record_format]
    if fmt.selection == "fixed":  # pair, triplet: a list of exactly n texts
        n = len(fmt.line_roles())
        if not isinstance(obj, list) or len(obj) != n:
            got = f"a list of {len(obj)}" if isinstance(obj, list) else f"a JSON {type(obj).__name__}"
            raise Rejection(WRONG_FORMAT, f"a {record_format} line is a list of {n} texts, got {got}")
        return obj, fmt.line_roles()
    if fmt.selection == "two_members":  # set: a list, or {"set": [...]}
        if isinstance(obj, dict):
            if set(obj) != {"set"}:
                raise Rejection(WRONG_FORMAT, f"a set line is {{\"set\": [...]}} or a list, got keys {sorted(obj)}")
            obj = obj["set"]
        members = _texts(obj, "a set", 2)
        return members, fmt.line_roles(len(members))
    # query / query_with_negatives: {"query": ..., "pos": [...][, "neg": [...]]}
    keys = {"query", "pos", "neg"} if fmt.has_negative else {"query", "pos"}
    if not isinstance(obj, dict) or set(obj) != keys:
        got = f"keys {sorted(obj)}" if isinstance(obj, dict) else f"a JSON {type(obj).__name__}"
        raise Rejection(WRONG_FORMAT, f"a {record_format} line is an object with keys {sorted(keys)}, got {got}")
    pos = _texts(obj["pos"], "'pos'", 1)
    neg = _texts(obj["neg"], "'neg'", 1) if "neg" in obj else []
    return [obj["query"], *pos, *neg], fmt.line_roles(len(pos), len(neg))


def parse_line(raw: bytes, record_format: str) -> tuple[list[str], list[int]]:
    """(texts, roles) of one line without its line break; raises Rejection."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Rejection(INVALID_UTF8, str(e)) from None
    if not line.strip():
        raise Rejection(EMPTY_LINE, "blank line")
    try:
        obj = json.loads(line)
    except ValueError as e:  # JSONDecodeError, and the recursion guard's errors
        raise Rejection(BAD_JSON, str(e)[:200]) from None
    except RecursionError:
        raise Rejection(BAD_JSON, "nested too deeply") from None
    texts, roles = _by_format(obj, record_format)
    _check_texts(texts)
    return texts, roles


def parse_lines(lines: Iterable[bytes], too_long: Iterable[int], record_format: str
                ) -> Iterator[tuple[int, bytes, tuple[list[str], list[int]] | Rejection]]:
    """(index, raw, (texts, roles) or its Rejection) for each line of a batch; the lines whose indexes
    are in `too_long` (cut by the reader) are rejected as LINE_TOO_LONG without being parsed."""
    too_long = set(too_long)
    for i, raw in enumerate(lines):
        if i in too_long:
            yield i, raw, Rejection(LINE_TOO_LONG, "line longer than --max_line_bytes")
            continue
        try:
            parsed: tuple[list[str], list[int]] | Rejection = parse_line(raw, record_format)
        except Rejection as r:
            parsed = r
        yield i, raw, parsed
