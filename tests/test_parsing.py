import json

import pytest

from pipeline import parsing
from pipeline.parsing import Rejection, parse_line
from pipeline.record_schema import ROLE_ANCHOR, ROLE_MEMBER, ROLE_NEGATIVE, ROLE_POSITIVE

A, P, N, M = ROLE_ANCHOR, ROLE_POSITIVE, ROLE_NEGATIVE, ROLE_MEMBER


@pytest.mark.parametrize("shape,obj,texts,roles", [
    ("pair", ["a", "b"], ["a", "b"], [A, P]),
    ("triplet", ["a", "b", "c"], ["a", "b", "c"], [A, P, N]),
    ("set", ["a", "b", "c"], ["a", "b", "c"], [M, M, M]),  # three texts: a set here, by declaration
    ("set", {"set": ["a", "b", "c", "d", "e"]}, ["a", "b", "c", "d", "e"], [M] * 5),
    ("query", {"query": "q", "pos": ["p1", "p2"]}, ["q", "p1", "p2"], [A, P, P]),
    ("query_with_negatives", {"query": "q", "pos": ["p"], "neg": ["n1", "n2"]}, ["q", "p", "n1", "n2"], [A, P, N, N]),
])
def test_shapes(shape, obj, texts, roles):
    assert parse_line(json.dumps(obj).encode(), shape) == (texts, roles)


def test_unicode_and_escapes_survive():
    line = '["café 東京 \\u00e9", "naïve"]'.encode("utf-8")
    assert parse_line(line, "pair") == (["café 東京 é", "naïve"], [A, P])


@pytest.mark.parametrize("shape,line,reason", [
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
    ("set", b'["a", " \\t\\n "]', parsing.EMPTY_TEXT),
    ("pair", b'["a", "b"', parsing.BAD_JSON),
    ("pair", b'["a", "b"] trailing', parsing.BAD_JSON),
    ("pair", b"[" * 100_000, parsing.BAD_JSON),  # deep nesting: rejected, not a crash
    ("pair", b"   ", parsing.EMPTY_LINE),
    ("pair", b'["\xe9t\xe9", "b"]', parsing.INVALID_UTF8),
    ("pair", b'["\xed\xa0\x80", "b"]', parsing.INVALID_UTF8),  # an encoded surrogate
])
def test_rejections(shape, line, reason):
    with pytest.raises(Rejection) as e:
        parse_line(line, shape)
    assert e.value.reason == reason and e.value.reason in parsing.REASONS
    assert e.value.detail
