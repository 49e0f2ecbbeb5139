import json

import numpy as np
import pytest

from pipeline.processing import REJECTED, STATS, ProcessLineBatch, output_tag
from pipeline.reading import LineBatch
from pipeline.record_schema import ROLE_ANCHOR, ROLE_NEGATIVE, ROLE_POSITIVE, decode_record, fingerprint
from pipeline.tokenizing import DEMO_TOKENIZER, BatchTokenizer, load_hf_tokenizer


@pytest.fixture(scope="module")
def hf():
    return load_hf_tokenizer(DEMO_TOKENIZER)


def _run(hf, batch, shapes, fraction=0.0, skipped=()):
    fn = ProcessLineBatch({k: (v, None) for k, v in shapes.items()}, "unused", 16, fraction)
    fn._tokenizer = BatchTokenizer(hf.backend_tokenizer.to_str(), 16)  # what setup() does from a file
    out = {}
    for o in fn.process(batch, skipped):
        out.setdefault(o.tag, []).append(o.value)
    return out


def test_a_batch_becomes_records_rejections_and_stats(hf):
    lines = [
        b'{"query": "where is paris", "pos": ["Paris is in France."], "neg": ["Rome is in Italy."]}',
        b'{"query": "bad"}',
        b'{"query": "  q  ", "pos": ["p"], "neg": ["n", "m"]}',
        b"\xff",
    ]
    out = _run(hf, LineBatch("web", "/x/web.jsonl.gz", 41, lines, ()), {"web": "query_with_negatives"})
    (records,) = out[output_tag("web", "train")]
    assert output_tag("web", "validation") not in out  # fraction 0
    first, second = (decode_record(r) for r in records)
    texts = ["where is paris", "Paris is in France.", "Rome is in Italy."]
    assert first["texts"] == hf(texts)["input_ids"]
    assert first["roles"] == [ROLE_ANCHOR, ROLE_POSITIVE, ROLE_NEGATIVE]
    assert first["fingerprints"] == [fingerprint(t) for t in texts]
    assert second["fingerprints"][0] == fingerprint("q")  # surrounding whitespace does not change identity
    rejected = [json.loads(r) for r in out[REJECTED]]
    assert [(r["line_number"], r["reason"]) for r in rejected] == [(42, "wrong_format"), (44, "invalid_utf8")]
    assert rejected[0]["file"] == "/x/web.jsonl.gz" and rejected[0]["line"] == '{"query": "bad"}'
    ((corpus, stats),) = out[STATS]
    assert corpus == "web"
    assert (stats["lines_read"], stats["train"], stats["validation"], stats["texts"]) == (4, 2, 0, 7)
    assert stats["rejected"] == {"wrong_format": 1, "invalid_utf8": 1}
    assert sum(stats["hist"]) == 7


def test_a_sets_empty_members_are_dropped_and_counted_in_its_stats(hf):
    lines = [b'{"set": ["a red bus", "", "a bus on a road"]}', b'["", " ", "one caption"]', b'["x", "y"]']
    out = _run(hf, LineBatch("captions", "f", 1, lines, ()), {"captions": "set"})
    first, second = (decode_record(r) for r in out[output_tag("captions", "train")][0])
    assert first["texts"] == hf(["a red bus", "a bus on a road"])["input_ids"] and len(second["texts"]) == 2
    assert [json.loads(r)["reason"] for r in out[REJECTED]] == ["empty_text"]
    ((_, stats),) = out[STATS]
    assert (stats["lines_read"], stats["train"], stats["texts"]) == (3, 2, 4)
    assert stats["dropped"] == {"empty_member": 1} and stats["rejected"] == {"empty_text": 1}


def test_batches_of_a_skipped_file_give_nothing(hf):
    lines = [b'["a", "b"]', b"\xff"]
    skipped = [("qa", {"file": "/x/cut.jsonl.gz", "last_line": 2, "cause": "EOFError: ..."})]
    assert _run(hf, LineBatch("qa", "/x/cut.jsonl.gz", 1, lines, ()), {"qa": "pair"}, skipped=skipped) == {}
    kept = _run(hf, LineBatch("qa", "/x/whole.jsonl.gz", 1, lines, ()), {"qa": "pair"}, skipped=skipped)
    assert kept[STATS][0][1]["lines_read"] == 2 and len(kept[REJECTED]) == 1


def test_validation_fraction_routes_records(hf):
    lines = [json.dumps([f"question {i}", f"answer {i}"]).encode() for i in range(400)]
    out = _run(hf, LineBatch("qa", "f", 1, lines, (2,)), {"qa": "pair"}, fraction=0.25)
    n_train = len(out[output_tag("qa", "train")][0])
    n_val = len(out[output_tag("qa", "validation")][0])
    assert n_train + n_val == 399 and 60 < n_val < 140
    assert [json.loads(r)["reason"] for r in out[REJECTED]] == ["line_too_long"]


def test_prompts_prefix_texts_by_role_and_the_dofn_pickles(hf):
    from apache_beam.internal import pickler

    # What Dataflow ships to its workers: the DoFn, pickled, with its prompts as plain data.
    fn = pickler.loads(
        pickler.dumps(
            ProcessLineBatch(
                {"web": ("triplet", None)},
                "unused",
                16,
                0.0,
                {"web": {ROLE_ANCHOR: "query: ", ROLE_POSITIVE: "passage: "}},
            )
        )
    )
    fn._tokenizer = BatchTokenizer(hf.backend_tokenizer.to_str(), 16)
    lines = [b'["where is paris", "Paris is in France.", "Rome is in Italy."]']
    out = {}
    for o in fn.process(LineBatch("web", "f", 1, lines, ())):
        out.setdefault(o.tag, []).append(o.value)
    (record,) = (decode_record(r) for r in out[output_tag("web", "train")][0])
    assert (
        record["texts"]
        == hf(
            ["query: where is paris", "passage: Paris is in France.", "Rome is in Italy."],
            truncation=True,
            max_length=16,
        )["input_ids"]
    )
    assert record["fingerprints"] == [
        fingerprint(t) for t in ("where is paris", "Paris is in France.", "Rome is in Italy.")
    ]
    ((_, stats),) = out[STATS]
    assert sum(n * c for n, c in enumerate(stats["hist"])) == sum(map(len, record["texts"]))


def test_with_cleaning_records_go_to_the_tuple_buckets_with_their_keys(hf):
    from pipeline import dedup, normalize
    from pipeline.processing import KEYS, TUPLES

    cleaning = {
        "deduplicate": True,
        "decontaminate": True,
        "symmetric": {"p": True},
        "tuple_buckets": 3,
        "key_buckets": 2,
    }
    fn = ProcessLineBatch({"p": ("pair", None)}, "unused", 16, 0.0, None, cleaning)
    fn._tokenizer = BatchTokenizer(hf.backend_tokenizer.to_str(), 16)
    lines = [b'["A b", "c"]', b'["C", "a  B"]', b'["x"]']
    out = {}
    for o in fn.process(LineBatch("p", "/in/p.jsonl.gz", 10, lines, ())):
        out.setdefault(o.tag, []).append(o.value)
    assert set(out) == {TUPLES, KEYS, STATS, REJECTED}  # no records on the output tags: dedup.Decide writes them
    ((_, stats),) = out[STATS]
    assert (stats["lines_read"], stats["train"], stats["rejected"]) == (3, 0, {"wrong_format": 1})
    entries = sorted((e for b, packed in out[TUPLES] for e in dedup.unpack_entries(packed)), key=lambda e: e[1])
    assert [e[1][2] for e in entries] == [10, 11] and entries[0][0] == entries[1][0]  # swapped: one tuple
    assert all(b == dedup.tuple_bucket(e[0], 3) for b, packed in out[TUPLES] for e in dedup.unpack_entries(packed))
    assert dedup.entry_texts(entries[1][4]) == ("c", "a b")
    assert entries[1][2] == "train" and decode_record(entries[1][3])["roles"]
    keys = sorted(
        (k, tks[16 * i : 16 * i + 16])
        for b, (ks, tks) in out[KEYS]
        for i, k in enumerate(np.frombuffer(ks, np.uint64).tolist())
    )
    assert all(b == k % 2 for b, (ks, _) in out[KEYS] for k in np.frombuffer(ks, np.uint64).tolist())
    # Each copy sends its texts' keys (which copy stays is decided later).
    assert keys == sorted([(k, entries[0][0]) for k in normalize.text_keys("a b") | normalize.text_keys("c")] * 2)
