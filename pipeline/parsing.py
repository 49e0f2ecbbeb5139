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
# A file that cannot be read is not a rejected line: it fails the job or is skipped whole (pipeline/lines.py).
REASONS = (INVALID_UTF8, EMPTY_LINE, BAD_JSON, WRONG_FORMAT, NON_STRING_TEXT, EMPTY_TEXT, LINE_TOO_LONG)
# Texts dropped from lines that stay (the manifest's per-corpus `dropped_texts` keys): an empty member of
# a set (a caption left blank) goes, the set keeps its other members while two or more remain.
EMPTY_MEMBER = "empty_member"
DROPPED = (EMPTY_MEMBER,)

# A data config's `fields` maps where a line's texts are in a JSON object (or a Parquet row, which the
# reader hands over as one): either {"texts": KEY}, a key holding the list a list line would be, or one
# key per role, {"anchor": KEY, "positive": KEY[, "negative": KEY]}. Other keys of the object are ignored.
TEXTS_FIELD = "texts"
ROLE_FIELDS = ("anchor", "positive", "negative")
FIELD_KEYS = (TEXTS_FIELD, *ROLE_FIELDS)


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


def _check_strings(texts: list) -> None:
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            what = "null" if t is None else f"a {type(t).__name__}, not a string"
            raise Rejection(NON_STRING_TEXT, f"text #{i} is {what}")


def _check_texts(texts: list) -> None:
    _check_strings(texts)
    for i, t in enumerate(texts):
        if not t.strip():
            raise Rejection(EMPTY_TEXT, f"text #{i} is empty")


# The line shapes each record format reads without a field mapping: the public card's shapes, and
# older releases' {"texts": [...]} where the list alone says which text is which (not the query formats).
SHAPES = {
    "pair": '["a", "p"], {"texts": ["a", "p"]} or {"query": "a", "pos": [...]}',
    "triplet": '["a", "p", "n"], {"texts": ["a", "p", "n"]} or {"query": "a", "pos": [...], "neg": [...]}',
    "set": 'a list of 2 or more texts, {"set": [...]} or {"texts": [...]}',
    "query": '{"query": "q", "pos": [...]}',
    "query_with_negatives": '{"query": "q", "pos": [...], "neg": [...]}',
}


def _wrong(record_format: str, got: Any) -> Rejection:
    what = (
        f"a list of {len(got)}"
        if isinstance(got, list)
        else f"an object with keys {sorted(got)[:10]}"
        if isinstance(got, dict)
        else f"a JSON {type(got).__name__}"
    )
    return Rejection(WRONG_FORMAT, f"a {record_format} line is {SHAPES[record_format]}; got {what}")


def _query_object(obj: dict, fmt) -> tuple[list, list[int]]:
    """[query, *pos, *neg] of a {"query", "pos"[, "neg"]} object, every positive and negative kept."""
    pos = _texts(obj["pos"], "'pos'", 1)
    neg = _texts(obj["neg"], "'neg'", 1) if fmt.has_negative else []
    return [obj["query"], *pos, *neg], fmt.line_roles(len(pos), len(neg))


def _set_members(members: list, dropped: dict | None) -> list:
    """A set's members without its empty ones (counted in `dropped`), checked: a non-string rejects the
    line, as does having fewer than 2 texts left."""
    empty = 0
    for i, m in enumerate(members):  # one pass, as _check_texts makes for the other formats
        if not isinstance(m, str):
            _check_strings(members)  # rejects, naming the first non-string
        if not m.strip():
            empty += 1
    if not empty:
        return members
    kept = [m for m in members if m.strip()]
    if len(kept) < 2:
        raise Rejection(
            EMPTY_TEXT,
            f"{len(members) - len(kept)} of the set's {len(members)} members are empty: fewer than 2 texts remain",
        )
    if dropped is not None and len(kept) < len(members):
        dropped[EMPTY_MEMBER] = dropped.get(EMPTY_MEMBER, 0) + len(members) - len(kept)
    return kept


_QUERY_KEYS = {name: {"query", "pos", "neg"} if f.has_negative else {"query", "pos"} for name, f in FORMATS.items()}
_LIST_ROLES = {name: f.line_roles() for name, f in FORMATS.items() if f.selection == "fixed"}


def _by_format(obj: Any, record_format: str, dropped: dict | None = None) -> tuple[list, list[int]]:
    fmt = FORMATS[record_format]
    list_roles = _LIST_ROLES.get(record_format)
    if list_roles is not None and type(obj) is list and len(obj) == len(list_roles):  # the common [a, p(, n)]
        return obj, list(list_roles)
    query_keys = _QUERY_KEYS[record_format]
    if list_roles is not None:  # pair, triplet: {"texts": [...]} of exactly n texts, or the query object
        if isinstance(obj, dict) and set(obj) == query_keys:
            return _query_object(obj, fmt)
        listed = obj[TEXTS_FIELD] if isinstance(obj, dict) and set(obj) == {TEXTS_FIELD} else obj
        if not isinstance(listed, list) or len(listed) != len(list_roles):
            raise _wrong(record_format, obj if listed is obj else listed)
        return listed, list(list_roles)
    if fmt.selection == "two_members":  # set: a list, {"set": [...]} or {"texts": [...]}
        if isinstance(obj, dict):
            if len(obj) != 1 or not set(obj) <= {"set", TEXTS_FIELD}:
                raise _wrong(record_format, obj)
            obj = next(iter(obj.values()))
        members = _set_members(_texts(obj, "a set", 2), dropped)
        return members, fmt.line_roles(len(members))
    # query / query_with_negatives: {"query": ..., "pos": [...][, "neg": [...]]}
    if not isinstance(obj, dict) or set(obj) != query_keys:
        raise _wrong(record_format, obj)
    return _query_object(obj, fmt)


def fields_error(fields: dict, record_format: str) -> str | None:
    """Why a `fields` mapping cannot serve a record format (None: it can)."""
    fmt = FORMATS[record_format]
    if not isinstance(fields, dict) or not fields:
        return f"must be a non-empty object with keys among {list(FIELD_KEYS)}"
    unknown = sorted(set(fields) - set(FIELD_KEYS))
    if unknown:
        return f"unknown key(s) {unknown}; allowed: {list(FIELD_KEYS)}"
    if not all(isinstance(v, str) and v for v in fields.values()):
        return "every value must be a non-empty key (column) name"
    if TEXTS_FIELD in fields:
        if len(fields) > 1:
            return f"{TEXTS_FIELD!r} names the one key holding all texts: no role keys beside it"
        if fmt.selection == "drawn":
            return (
                f"{TEXTS_FIELD!r} serves pair, triplet and set corpora; a {record_format} corpus maps "
                "'anchor', 'positive' (and 'negative') instead"
            )
        return None
    if fmt.selection == "two_members":
        return f"a set corpus's members are one list: map it with {{{TEXTS_FIELD!r}: KEY}}"
    need = {"anchor", "positive"} | ({"negative"} if fmt.has_negative else set())
    if set(fields) != need:
        return f"a {record_format} corpus maps exactly {sorted(need)}, got {sorted(fields)}"
    return None


def _field(obj: dict, key: str, role: str) -> Any:
    if key not in obj:
        raise Rejection(WRONG_FORMAT, f"no field {key!r} (the {role}); the object has {sorted(obj)[:10]}")
    return obj[key]


def _by_fields(obj: Any, fields: dict, record_format: str, dropped: dict | None = None) -> tuple[list, list[int]]:
    """(texts, roles) of an object through the corpus's `fields` (validated by fields_error)."""
    if not isinstance(obj, dict):
        raise Rejection(
            WRONG_FORMAT,
            f"a line of this corpus is a JSON object (its fields are mapped), got a JSON {type(obj).__name__}",
        )
    if TEXTS_FIELD in fields:
        return _by_format(_field(obj, fields[TEXTS_FIELD], TEXTS_FIELD), record_format, dropped)
    fmt = FORMATS[record_format]
    values = {role: _field(obj, key, role) for role, key in fields.items()}
    if fmt.selection == "fixed":
        return [values[r] for r in ROLE_FIELDS if r in values], fmt.line_roles()
    # query formats: the positive (and negative) key holds one text or a list of them

    def listed(role: str) -> list:
        v = values[role]
        if v is None:
            raise Rejection(NON_STRING_TEXT, f"field {fields[role]!r} is null")
        return [v] if isinstance(v, str) else _texts(v, f"field {fields[role]!r}", 1)

    pos = listed("positive")
    neg = listed("negative") if "negative" in values else []
    return [values["anchor"], *pos, *neg], fmt.line_roles(len(pos), len(neg))


def parse_object(
    obj: Any, record_format: str, fields: dict | None = None, dropped: dict | None = None
) -> tuple[list[str], list[int]]:
    """(texts, roles) of one decoded line (or Parquet row); raises Rejection. Texts dropped from a line
    that stays (DROPPED reasons) are counted into `dropped` when given."""
    texts, roles = (
        _by_fields(obj, fields, record_format, dropped) if fields else _by_format(obj, record_format, dropped)
    )
    if FORMATS[record_format].selection != "two_members":  # a set's members were checked as they were kept
        _check_texts(texts)
    return texts, roles


def parse_line(
    raw: bytes, record_format: str, fields: dict | None = None, dropped: dict | None = None
) -> tuple[list[str], list[int]]:
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
    return parse_object(obj, record_format, fields, dropped)


def _unreadable_cell(value: Any) -> dict:
    return {"unreadable_cell": type(value).__name__}


def row_line(row: dict) -> bytes:
    """A Parquet row as the JSON object line the parser reads (one rule for object lines and rows).
    A cell JSON cannot hold (bytes, a date) becomes a marker object, which the parser then rejects as
    a non-string text; a null cell stays null and is rejected the same way."""
    return json.dumps(row, ensure_ascii=False, default=_unreadable_cell).encode("utf-8")


def parse_lines(
    lines: Iterable[bytes],
    too_long: Iterable[int],
    record_format: str,
    fields: dict | None = None,
    dropped: dict | None = None,
) -> Iterator[tuple[int, bytes, tuple[list[str], list[int]] | Rejection]]:
    """(index, raw, (texts, roles) or its Rejection) for each line of a batch; the lines whose indexes
    are in `too_long` (cut by the reader) are rejected as LINE_TOO_LONG without being parsed. Texts
    dropped from accepted lines are counted into `dropped` (reason -> count) when given."""
    too_long = set(too_long)
    for i, raw in enumerate(lines):
        if i in too_long:
            yield i, raw, Rejection(LINE_TOO_LONG, "line longer than --max_line_bytes")
            continue
        try:
            parsed: tuple[list[str], list[int]] | Rejection = parse_line(raw, record_format, fields, dropped)
        except Rejection as r:
            parsed = r
        yield i, raw, parsed
