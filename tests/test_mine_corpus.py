"""trainer/mining/corpus.py: grouping by anchor, the pool, and the Beam job's rejections."""

import gzip
import json

import numpy as np
import pytest

from pipeline.record_schema import fingerprint
from pipeline.user_errors import UserError
from trainer.mining.corpus import positive_matrix, read_corpus


def _write(path, lines):
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    return str(path)


def test_anchors_group_their_positives_and_the_pool_holds_each_text_once(tmp_path):
    path = _write(
        tmp_path / "p.jsonl.gz",
        [
            json.dumps(["q1", "a"]).encode(),
            json.dumps(["q2", "b"]).encode(),
            json.dumps(["q1", "c"]).encode(),
            json.dumps(
                ["q1", "a"]
            ).encode(),  # a repeated pair: one positive, two rows (sentence-transformers counts rows)
            json.dumps([" q2 ", "a "]).encode(),  # the same texts once stripped: the job's fingerprints say so
        ],
    )
    c = read_corpus(path)
    assert c.queries == ["q1", "q2"] and c.pool == ["a", "b", "c"]
    assert c.positives == [[0, 2], [1, 0]]
    assert c.max_positive_rows == 3
    assert c.query_fp.tolist() == [fingerprint("q1"), fingerprint("q2")]
    assert c.pool_fp.tolist() == [fingerprint(t) for t in "abc"]
    assert positive_matrix(c.positives, 3).tolist() == [[0, 2, -1], [1, 0, -1]]


def test_query_lines_and_a_pool_file(tmp_path):
    path = _write(tmp_path / "q.jsonl", [b'{"query": "q", "pos": ["a", "b"]}'])
    pool = _write(tmp_path / "pool.jsonl.gz", [b'"x"', b'{"text": "a"}', b'"y"', b"[1]", b'""'])
    c = read_corpus(path, "query", pool_pattern=str(pool))
    assert c.pool == ["a", "b", "x", "y"] and c.positives == [[0, 1]]
    assert c.pool_counts.to_json()["rejected"] == {"total": 2, "by_reason": {"empty_text": 1, "wrong_format": 1}}
    assert c.pool_counts.accepted == 3


def test_bad_lines_are_counted_by_the_beam_jobs_reasons(tmp_path):
    path = _write(
        tmp_path / "p.jsonl.gz",
        [b'["q", "a"]', b"not json", b'["only one"]', b"", b'["q", 3]', b"\xff", b'["x" , "' + b"y" * 200 + b'"]'],
    )
    c = read_corpus(path, max_line_bytes=100)
    j = c.corpus_counts.to_json()
    assert (j["lines_read"], j["accepted"]) == (7, 1)
    assert j["rejected"]["by_reason"] == {
        "bad_json": 1,
        "empty_line": 1,
        "invalid_utf8": 1,
        "line_too_long": 1,
        "non_string_text": 1,
        "wrong_format": 1,
    }
    assert j["rejected_examples"][0] == {
        "file": path,
        "line_number": 2,
        "reason": "bad_json",
        "detail": "Expecting value: line 1 column 1 (char 0)",
        "line": "not json",
    }


def test_empty_or_unusable_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"--input=.*nope.jsonl.gz: no such file"):
        read_corpus(str(tmp_path / "nope.jsonl.gz"))
    empty = _write(tmp_path / "e.jsonl.gz", [])
    with pytest.raises(UserError, match="no usable pair line: 1 line\\(s\\) read, all rejected \\(empty_line: 1\\)"):
        read_corpus(empty)
    (tmp_path / "z.jsonl").write_bytes(b"")
    with pytest.raises(UserError, match="no usable pair line: it is empty"):
        read_corpus(str(tmp_path / "z.jsonl"))
    pairs = _write(tmp_path / "p.jsonl.gz", [b'["q", "a"]'])
    with pytest.raises(UserError, match="no usable query line: 1 line\\(s\\) read, all rejected \\(wrong_format: 1\\)"):
        read_corpus(pairs, "query")
    with pytest.raises(UserError, match="--record_format=set: mining reads pair or query lines"):
        read_corpus(pairs, "set")


def test_globs_and_lists_of_files(tmp_path):
    a = _write(tmp_path / "a-0.jsonl.gz", [b'["q1", "a"]'])
    _write(tmp_path / "a-1.jsonl.gz", [b'["q2", "b"]'])
    c = read_corpus(str(tmp_path / "a-*.jsonl.gz"))
    assert c.queries == ["q1", "q2"] and len(c.corpus_counts.files) == 2
    assert read_corpus(f"{a},{a}").max_positive_rows == 2
    assert np.array_equal(read_corpus(a).pool_fp, [fingerprint("a")])
