"""pipeline/sources.py: Parquet rows through Beam's Parquet IO give the records the same pairs give as
JSON lines; bad cells are rejected with their reasons and counted."""

import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _tfrecords import read_tfrecords

from pipeline import job
from pipeline.manifest import read_manifest
from pipeline.record_schema import decode_record

PAIRS = [(f"question number {i}", f"answer number {i}") for i in range(300)]
BAD_ROWS = [(None, "an answer"), ("a question", ""), ("a question", 12), ("only", None)]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("sources")
    with gzip.open(root / "pairs.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(list(p)) + "\n" for p in PAIRS)
    table = pa.table(
        {"id": list(range(len(PAIRS))), "question": [q for q, _ in PAIRS], "answer": [a for _, a in PAIRS]}
    )
    pq.write_table(table, root / "pairs-0.parquet", row_group_size=64)  # several row groups: split reads
    bad = pa.table(
        {
            "id": list(range(len(BAD_ROWS))),
            "question": [q for q, _ in BAD_ROWS],
            "answer": pa.array([None if a is None else str(a) if a != 12 else None for _, a in BAD_ROWS]),
        }
    )
    pq.write_table(bad, root / "pairs-1.parquet")
    # A file whose texts are not strings at all (an int column mapped as a text).
    pq.write_table(pa.table({"question": ["q"], "answer": [12]}), root / "ints.parquet")
    (root / "cfg.json").write_text(
        json.dumps(
            {
                "corpora": [
                    {"name": "as_json", "files": ["pairs.jsonl.gz"], "record_format": "pair", "weight": 1},
                    {
                        "name": "as_parquet",
                        "files": ["pairs-*.parquet"],
                        "record_format": "pair",
                        "weight": 1,
                        "fields": {"anchor": "question", "positive": "answer"},
                    },
                    {
                        "name": "ints",
                        "files": ["ints.parquet"],
                        "record_format": "pair",
                        "weight": 1,
                        "fields": {"anchor": "question", "positive": "answer"},
                    },
                ]
            }
        )
    )
    out = root / "out"
    assert (
        job.run(
            [
                f"--data_config={root / 'cfg.json'}",
                f"--output_dir={out}",
                f"--tokenizer={tiny_bert_dir}",
                "--max_seq_length=16",
                "--no_format_check",
                "--no_deduplicate",
            ]
        )
        == 0
    )  # the two corpora hold the same pairs on purpose: compared below
    return str(out)


def _records(out, corpus):
    c = next(c for c in read_manifest(out)["corpora"] if c["name"] == corpus)
    recs = [
        decode_record(r) for f in c["train_files"] + c["validation_files"] for r in read_tfrecords(os.path.join(out, f))
    ]
    return c, sorted((tuple(map(tuple, r["texts"])), tuple(r["fingerprints"])) for r in recs)


def test_parquet_rows_give_the_records_json_lines_give(run):
    js, json_records = _records(run, "as_json")
    pqc, parquet_records = _records(run, "as_parquet")
    assert json_records == parquet_records and len(json_records) == len(PAIRS)
    assert pqc["lines_read"] == len(PAIRS) + len(BAD_ROWS)
    assert pqc["rejected"] == {"total": 4, "by_reason": {"empty_text": 1, "non_string_text": 3}}


def test_rejected_rows_say_why(run):
    rows = [
        json.loads(line)
        for name in os.listdir(os.path.join(run, "rejected"))
        for line in open(os.path.join(run, "rejected", name))
    ]
    parquet = sorted((r["detail"], r["line_number"]) for r in rows if r["corpus"] == "as_parquet")
    assert parquet == [
        ("text #0 is null", None),
        ("text #1 is empty", None),
        ("text #1 is null", None),
        ("text #1 is null", None),
    ]
    (ints,) = [r for r in rows if r["corpus"] == "ints"]
    assert ints["reason"] == "non_string_text" and ints["detail"] == "text #1 is a int, not a string"
    assert json.loads(ints["line"]) == {"question": "q", "answer": 12}


def test_reddit_comments_through_the_whole_job(tmp_path, tiny_bert_dir):
    import zstandard

    def comment(cid, parent, link, body):
        return {
            "id": cid,
            "parent_id": parent,
            "link_id": link,
            "body": body,
            "author": "a",
            "subreddit": "s",
            "created_utc": 1,
        }

    lines = [
        comment("c1", "t3_p1", "t3_p1", "what a lovely thread this is"),
        comment("c2", "t1_c1", "t3_p1", "indeed it is a lovely one"),
        comment("c3", "t1_c2", "t3_p1", "[deleted]"),
        comment("c4", "t1_c1", "t3_p1", "another reply to the first"),
        comment("c5", "t1_gone", "t3_p2", "the parent is not in the data"),
    ]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode() + b"{broken\n"
    (tmp_path / "RC_2015-01.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    (tmp_path / "cfg.json").write_text(
        json.dumps(
            {
                "corpora": [
                    {
                        "name": "reddit",
                        "files": ["RC_*.zst"],
                        "record_format": "pair",
                        "input_format": "reddit_comments",
                        "weight": 1,
                    }
                ]
            }
        )
    )
    out = tmp_path / "out"
    assert (
        job.run(
            [
                f"--data_config={tmp_path / 'cfg.json'}",
                f"--output_dir={out}",
                f"--tokenizer={tiny_bert_dir}",
                "--max_seq_length=16",
                "--validation_fraction=0",
            ]
        )
        == 0
    )
    (c,) = read_manifest(str(out))["corpora"]
    counts = c["source"]["counts"]
    assert c["source"]["input_format"] == "reddit_comments" and c["fields"] == {
        "anchor": "response",
        "positive": "context",
    }
    assert (counts["lines_read"], counts["comments_kept"], counts["pairs_written"]) == (6, 4, 2)
    assert c["lines_read"] == c["train_examples"] == 2
    # The "{broken" comment line is rejected by the source: it counts in the corpus's rejected total.
    assert c["rejected"] == {"total": 1, "by_reason": {"bad_json": 1}, "from_source": 1}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    _, records = _records(str(out), "reddit")
    pairs = sorted(tuple(tok.decode(ids, skip_special_tokens=True) for ids in texts) for texts, _ in records)
    assert pairs == [
        ("another reply to the first", "what a lovely thread this is"),  # (response, context)
        ("indeed it is a lovely one", "what a lovely thread this is"),
    ]
