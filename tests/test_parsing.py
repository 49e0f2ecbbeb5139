import json

import pytest

from pipeline import parsing
from pipeline.parsing import Rejection, parse_line
from pipeline.record_schema import ROLE_ANCHOR, ROLE_MEMBER, ROLE_NEGATIVE, ROLE_POSITIVE

A, P, N, M = ROLE_ANCHOR, ROLE_POSITIVE, ROLE_NEGATIVE, ROLE_MEMBER


@pytest.mark.parametrize(
    "shape,obj,texts,roles",
    [
        ("pair", ["a", "b"], ["a", "b"], [A, P]),
        ("triplet", ["a", "b", "c"], ["a", "b", "c"], [A, P, N]),
        ("set", ["a", "b", "c"], ["a", "b", "c"], [M, M, M]),  # three texts: a set here, by declaration
        ("set", {"set": ["a", "b", "c", "d", "e"]}, ["a", "b", "c", "d", "e"], [M] * 5),
        ("query", {"query": "q", "pos": ["p1", "p2"]}, ["q", "p1", "p2"], [A, P, P]),
        (
            "query_with_negatives",
            {"query": "q", "pos": ["p"], "neg": ["n1", "n2"]},
            ["q", "p", "n1", "n2"],
            [A, P, N, N],
        ),
        # The card's object shapes for pairs and triplets, every positive and negative kept (one of each drawn).
        ("pair", {"query": "q", "pos": ["p1", "p2"]}, ["q", "p1", "p2"], [A, P, P]),
        ("triplet", {"query": "q", "pos": ["p"], "neg": ["n"]}, ["q", "p", "n"], [A, P, N]),
        (
            "triplet",
            {"query": "q", "pos": ["p1", "p2"], "neg": ["n1", "n2", "n3"]},
            ["q", "p1", "p2", "n1", "n2", "n3"],
            [A, P, P, N, N, N],
        ),
        # Older releases' {"texts": [...]}, without a field mapping where the list says which text is which.
        ("pair", {"texts": ["a", "b"]}, ["a", "b"], [A, P]),
        ("triplet", {"texts": ["a", "b", "c"]}, ["a", "b", "c"], [A, P, N]),
        ("set", {"texts": ["a", "b", "c"]}, ["a", "b", "c"], [M, M, M]),
    ],
)
def test_shapes(shape, obj, texts, roles):
    assert parse_line(json.dumps(obj).encode(), shape) == (texts, roles)


@pytest.mark.parametrize(
    "shape,obj",
    [
        ("pair", ["a", "b", "c"]),
        ("pair", {"texts": ["a"]}),
        ("pair", {"query": "q", "pos": ["p"], "neg": ["n"]}),
        ("pair", {"set": ["a", "b"]}),
        ("triplet", {"query": "q", "pos": ["p"]}),
        ("triplet", {"texts": ["a", "b"]}),
        ("triplet", {"texts": ["a", "b", "c"], "guid": 1}),
        ("set", {"set": ["a", "b"], "texts": ["c", "d"]}),
        ("query", {"texts": ["q", "p"]}),
        ("query", ["q", "p"]),
        ("query_with_negatives", ["q", "p", "n"]),
    ],
)
def test_a_line_that_fits_no_shape_of_its_format_is_wrong_format_naming_the_shapes(shape, obj):
    with pytest.raises(Rejection) as e:
        parse_line(json.dumps(obj).encode(), shape)
    assert e.value.reason == parsing.WRONG_FORMAT
    assert e.value.detail.startswith(f"a {shape} line is {parsing.SHAPES[shape]}; got ")


def test_empty_members_of_a_set_are_dropped_and_counted_while_two_remain():
    dropped = {}
    assert parse_line(b'{"set": ["a", "", "b", "  "]}', "set", dropped=dropped) == (["a", "b"], [M, M])
    assert parse_line(b'["", "a", "b", "c"]', "set", dropped=dropped) == (["a", "b", "c"], [M, M, M])
    assert parse_line(b'{"texts": ["a", "b"]}', "set", dropped=dropped) == (["a", "b"], [M, M])
    assert dropped == {parsing.EMPTY_MEMBER: 3}
    # One text left: the line is rejected, and its empty members are not counted as dropped.
    with pytest.raises(Rejection) as e:
        parse_line(b'{"set": ["a", "", " "]}', "set", dropped=dropped)
    assert (e.value.reason, e.value.detail) == (
        parsing.EMPTY_TEXT,
        "2 of the set's 3 members are empty: fewer than 2 texts remain",
    )
    with pytest.raises(Rejection) as e:  # a non-string member still rejects the line
        parse_line(b'["a", "", null]', "set", dropped=dropped)
    assert e.value.reason == parsing.NON_STRING_TEXT
    assert dropped == {parsing.EMPTY_MEMBER: 3}
    # Outside sets an empty text still rejects the line: a pair without its positive is no example.
    with pytest.raises(Rejection, match="text #2 is empty"):
        parse_line(b'{"query": "q", "pos": ["p", ""]}', "pair", dropped=dropped)


def test_unicode_and_escapes_survive():
    line = '["café 東京 \\u00e9", "naïve"]'.encode("utf-8")
    assert parse_line(line, "pair") == (["café 東京 é", "naïve"], [A, P])


@pytest.mark.parametrize(
    "shape,line,reason",
    [
        ("pair", b'["a", "b", "c"]', parsing.WRONG_FORMAT),
        ("pair", b'{"set": ["a", "b"]}', parsing.WRONG_FORMAT),
        ("triplet", b'["a", "b"]', parsing.WRONG_FORMAT),
        ("set", b'["a"]', parsing.WRONG_FORMAT),
        ("set", b'{"set": ["a", "b"], "extra": 1}', parsing.WRONG_FORMAT),
        ("set", b'"a string"', parsing.WRONG_FORMAT),
        ("query", b'{"query": "q", "pos": []}', parsing.WRONG_FORMAT),
        ("query", b'{"query": "q", "pos": ["p"], "neg": ["n"]}', parsing.WRONG_FORMAT),
        ("query_with_negatives", b'{"query": "q", "pos": ["p"]}', parsing.WRONG_FORMAT),
        ("query_with_negatives", b'{"query": "q", "pos": ["p"], "neg": "n"}', parsing.WRONG_FORMAT),
        ("pair", b'["a", 1]', parsing.NON_STRING_TEXT),
        ("pair", b'["a", ["b"]]', parsing.NON_STRING_TEXT),
        ("query", b'{"query": null, "pos": ["p"]}', parsing.NON_STRING_TEXT),
        ("pair", b'["a", ""]', parsing.EMPTY_TEXT),
        ("set", b'["a", " \\t\\n "]', parsing.EMPTY_TEXT),  # one text left after the empty member
        ("pair", b'["a", "b"', parsing.BAD_JSON),
        ("pair", b'["a", "b"] trailing', parsing.BAD_JSON),
        ("pair", b"[" * 100_000, parsing.BAD_JSON),  # deep nesting: rejected, not a crash
        ("pair", b"   ", parsing.EMPTY_LINE),
        ("pair", b'["\xe9t\xe9", "b"]', parsing.INVALID_UTF8),
        ("pair", b'["\xed\xa0\x80", "b"]', parsing.INVALID_UTF8),  # an encoded surrogate
    ],
)
def test_rejections(shape, line, reason):
    with pytest.raises(Rejection) as e:
        parse_line(line, shape)
    assert e.value.reason == reason and e.value.reason in parsing.REASONS
    assert e.value.detail


# ------------------------------------------------------------------ objects with named fields (and Parquet rows)


@pytest.mark.parametrize(
    "shape,fields,obj,texts,roles",
    [
        # Older releases' {"texts": [...]}: the list is read as the format's own list line.
        ("pair", {"texts": "texts"}, {"texts": ["a", "b"]}, ["a", "b"], [A, P]),
        ("triplet", {"texts": "texts"}, {"texts": ["a", "b", "c"], "guid": 7}, ["a", "b", "c"], [A, P, N]),
        ("set", {"texts": "texts"}, {"texts": ["a", "b", "c"]}, ["a", "b", "c"], [M, M, M]),
        # Named fields, extra fields ignored (the 2021 Reddit lines, read as [response, context] by its script).
        (
            "pair",
            {"anchor": "response", "positive": "context"},
            {"context": "hi", "response": "hello", "context_author": "x", "subreddit": "y"},
            ["hello", "hi"],
            [A, P],
        ),
        (
            "triplet",
            {"anchor": "q", "positive": "p", "negative": "n"},
            {"n": "c", "p": "b", "q": "a"},
            ["a", "b", "c"],
            [A, P, N],
        ),
        # Query formats: a positive / negative field holds one text or a list of them.
        (
            "query",
            {"anchor": "question", "positive": "answers"},
            {"question": "q", "answers": ["p1", "p2"]},
            ["q", "p1", "p2"],
            [A, P, P],
        ),
        (
            "query_with_negatives",
            {"anchor": "q", "positive": "pos", "negative": "neg"},
            {"q": "q", "pos": "p", "neg": ["n"]},
            ["q", "p", "n"],
            [A, P, N],
        ),
    ],
)
def test_fields_map_objects_by_declaration(shape, fields, obj, texts, roles):
    assert parsing.fields_error(fields, shape) is None
    assert parse_line(json.dumps(obj).encode(), shape, fields) == (texts, roles)
    assert parse_line(parsing.row_line(obj), shape, fields) == (texts, roles)  # a Parquet row: the same rule


@pytest.mark.parametrize(
    "fields,obj,reason,detail",
    [
        ({"anchor": "q", "positive": "a"}, ["q", "a"], parsing.WRONG_FORMAT, "a line of this corpus is a JSON object"),
        ({"anchor": "q", "positive": "a"}, {"q": "x"}, parsing.WRONG_FORMAT, "no field 'a' (the positive)"),
        ({"anchor": "q", "positive": "a"}, {"q": None, "a": "x"}, parsing.NON_STRING_TEXT, "text #0 is null"),
        (
            {"anchor": "q", "positive": "a"},
            {"q": "x", "a": 3},
            parsing.NON_STRING_TEXT,
            "text #1 is a int, not a string",
        ),
        ({"anchor": "q", "positive": "a"}, {"q": "x", "a": " "}, parsing.EMPTY_TEXT, "text #1 is empty"),
        ({"texts": "texts"}, {"texts": ["a"]}, parsing.WRONG_FORMAT, "; got a list of 1"),
        ({"texts": "texts"}, {"set": ["a", "b"]}, parsing.WRONG_FORMAT, "no field 'texts'"),
    ],
)
def test_fields_rejections(fields, obj, reason, detail):
    with pytest.raises(Rejection) as e:
        parse_line(json.dumps(obj).encode(), "pair", fields)
    assert e.value.reason == reason and detail in e.value.detail


def test_a_cell_json_cannot_hold_is_rejected_not_a_crash():
    import datetime

    line = parsing.row_line({"q": "x", "a": b"\x00bytes", "when": datetime.date(2021, 7, 1)})
    with pytest.raises(Rejection) as e:
        parse_line(line, "pair", {"anchor": "q", "positive": "a"})
    assert e.value.reason == parsing.NON_STRING_TEXT and "a dict" in e.value.detail
    with pytest.raises(Rejection) as e:
        parse_line(parsing.row_line({"q": "x", "a": None}), "query", {"anchor": "q", "positive": "a"})
    assert (e.value.reason, e.value.detail) == (parsing.NON_STRING_TEXT, "field 'a' is null")
