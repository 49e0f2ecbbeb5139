"""Reading the evaluation sets of --decontaminate (pipeline/eval_texts.py)."""

import json
import os

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.eval_texts import DecontaminateError, ReadEvalTexts, jsonl_text, resolve_eval_sets, sts_sentences

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_IR = os.path.join(REPO, "samples", "beir", "sample_ir")


def test_line_readers():
    assert sts_sentences(b"main\tf\t2012\t1\t4.2\tA man plays.\tA man is playing.\tx\r") == [
        "A man plays.",
        "A man is playing.",
    ]
    assert sts_sentences(b"genre\tfile\tyear\tid\tscore\tsentence1\tsentence2") is None  # the header
    assert sts_sentences(b"a\tb") is None
    assert jsonl_text(b'"plain"') == "plain" and jsonl_text(b'{"text": "t", "id": 1}') == "t"
    assert jsonl_text(b'{"id": 1}') is None and jsonl_text(b"{bad") is None and jsonl_text(b"[1]") is None


def test_paths_are_checked_on_the_launcher(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "texts.txt").write_text("x\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "texts.txt").write_text("y\n")
    (tmp_path / "q.jsonl").write_text('"q"\n')
    sets = resolve_eval_sets(f"{SAMPLE_IR}, {tmp_path}/q.jsonl", documents=True)
    assert [(s.name, s.kind, s.documents) for s in sets] == [("sample_ir", "beir", True), ("q.jsonl", "jsonl", False)]
    with pytest.raises(DecontaminateError, match="no evaluation set at"):
        resolve_eval_sets(f"{tmp_path}/missing.txt")
    with pytest.raises(DecontaminateError, match="two evaluation sets are named 'texts.txt'"):
        resolve_eval_sets(f"{tmp_path}/a/texts.txt,{tmp_path}/b/texts.txt")
    (tmp_path / "beir").mkdir()
    (tmp_path / "beir" / "queries.jsonl").write_text("")
    with pytest.raises(DecontaminateError, match="qrels/test.tsv"):
        resolve_eval_sets(f"{tmp_path}/beir")
    with pytest.raises(DecontaminateError, match="needs a BEIR directory"):
        resolve_eval_sets(f"{tmp_path}/q.jsonl", documents=True)


def _beir_texts(documents: bool):
    def rows(name):
        with open(os.path.join(SAMPLE_IR, name), encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    with open(os.path.join(SAMPLE_IR, "qrels", "test.tsv")) as f:
        qrels = [line.rstrip("\n").split("\t") for line in f][1:]
    judged = {q for q, _, _ in qrels}
    relevant = {d for _, d, s in qrels if float(s) > 0}
    texts = [("sample_ir", q["text"]) for q in rows("queries.jsonl") if q["_id"] in judged]
    if documents:
        texts += [
            ("sample_ir", (d["title"] + " " + d["text"]).strip()) for d in rows("corpus.jsonl") if d["_id"] in relevant
        ]
    return texts


def test_beir_test_queries_and_relevant_documents_are_read_in_beam(tmp_path):
    (tmp_path / "sts.tsv").write_text("h\th\th\th\tscore\ts1\ts2\nx\tx\tx\tx\t1.0\tOne.\tTwo.\n")
    sets = resolve_eval_sets(f"{SAMPLE_IR},{tmp_path}/sts.tsv", documents=True)
    with beam.Pipeline("FnApiRunner") as p:
        got = p | ReadEvalTexts(sets)
        expected = _beir_texts(True) + [("sts.tsv", "One."), ("sts.tsv", "Two.")]
        texts = got.batches | beam.FlatMap(lambda batch: batch)
        assert_that(texts, equal_to(expected), label="texts")
        assert_that(
            got.counts,
            equal_to(
                [(("sample_ir", "texts"), len(expected) - 2), (("sts.tsv", "texts"), 2), (("sts.tsv", "skipped"), 1)]
            ),
            label="counts",
        )
    assert len(_beir_texts(False)) == 123 < len(_beir_texts(True))
