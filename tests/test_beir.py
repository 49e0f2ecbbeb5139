"""A BEIR-format directory as a training corpus (pipeline/beir.py): the join's records and counts, and a
few training steps on what the job wrote."""

import json
import os

import pytest
from _tfrecords import read_tfrecords

from pipeline import beir, job
from pipeline.manifest import read_manifest
from pipeline.record_schema import ROLE_ANCHOR, ROLE_POSITIVE, decode_record

N_QUERIES = 40  # judged queries with a relevant document: enough for a few batches of 8


def _write_beir(d):
    (d / "qrels").mkdir(parents=True)
    docs = [
        {"_id": f"d{i}", "title": f"Topic {i}", "text": f"facts about topic number {i}."} for i in range(2 * N_QUERIES)
    ]
    docs += [{"_id": "empty", "title": "", "text": ""}, {"_id": "d0", "title": "Repeat", "text": "a repeated id"}]
    with open(d / "corpus.jsonl", "w") as f:
        f.writelines(json.dumps(x) + "\n" for x in docs)
        f.write("{not json\n")
    queries = [{"_id": f"q{i}", "text": f"what about topic {i}?"} for i in range(N_QUERIES)]
    queries += [
        {"_id": "q_other_split", "text": "judged in test only"},
        {"_id": "q_zero", "text": "only score 0"},
        {"_id": 7, "text": "a numeric id, judged on the empty document"},
        {"_id": "q_blank", "text": "  "},
    ]
    with open(d / "queries.jsonl", "w") as f:
        f.writelines(json.dumps(x) + "\n" for x in queries)
    qrels = [("query-id", "corpus-id", "score")]
    qrels += [(f"q{i}", f"d{i}", 1) for i in range(N_QUERIES)]
    qrels += [(f"q{i}", f"d{N_QUERIES + i}", 2) for i in range(0, N_QUERIES, 4)]  # every 4th query: 2 positives
    qrels += [
        ("q1", "d1", 1),
        ("q2", "missing_doc", 1),
        ("q_zero", "d3", 0),
        ("7", "empty", 1),
        ("no_such_query", "d5", 1),
        ("q3", "d3"),
    ]
    with open(d / "qrels" / "train.tsv", "w") as f:
        f.writelines("\t".join(map(str, r)) + "\n" for r in qrels)
    with open(d / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\nq_other_split\td1\t1\n")


@pytest.fixture(scope="module")
def beir_data(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("beir")
    _write_beir(root / "sets" / "toy")
    config = root / "data_config.json"
    config.write_text(
        json.dumps(
            {
                "corpora": [
                    {
                        "name": "toy_beir",
                        "files": ["sets/toy"],
                        "record_format": "query",
                        "input_format": "beir",
                        "weight": 1,
                    }
                ]
            }
        )
    )
    out = root / "out"
    assert (
        job.run(
            [
                f"--data_config={config}",
                f"--output_dir={out}",
                f"--tokenizer={tiny_bert_dir}",
                "--max_seq_length=32",
                "--validation_fraction=0.1",
            ]
        )
        == 0
    )
    return str(out)


def test_the_join_accounts_for_every_document_query_and_judgement(beir_data):
    (c,) = read_manifest(beir_data)["corpora"]
    counts = c["source"]["counts"]
    assert c["source"]["input_format"] == "beir" and beir.check_beir_counts(counts) == []
    assert counts == {
        "documents_read": 2 * N_QUERIES + 3,
        "documents_bad": 2,
        "duplicate_document_ids": 1,
        "queries_read": N_QUERIES + 4,
        "queries_bad": 1,
        "records": N_QUERIES,
        "positives": N_QUERIES + N_QUERIES // 4,
        "queries_not_in_split": 1,
        "queries_without_relevant_document": 2,
        "qrels_header": 1,
        "qrels_read": N_QUERIES + N_QUERIES // 4 + 6,
        "qrels_bad": 1,
        "qrels_not_relevant": 1,
        "qrels_relevant": N_QUERIES + N_QUERIES // 4 + 2,
        "qrels_missing_document": 2,
        "qrels_missing_query": 1,
        "duplicate_qrels": 1,
    }
    assert (
        c["lines_read"] == N_QUERIES == c["train_examples"] + c["validation_examples"] and c["rejected"]["total"] == 0
    )
    rejected = [
        json.loads(line)
        for name in os.listdir(os.path.join(beir_data, "rejected"))
        for line in open(os.path.join(beir_data, "rejected", name))
    ]
    assert sorted(r["reason"] for r in rejected) == ["bad_json", "empty_text", "empty_text", "wrong_format"]


def test_each_record_is_the_query_and_its_relevant_documents(beir_data, tiny_bert_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    (c,) = read_manifest(beir_data)["corpora"]
    records = [
        decode_record(r)
        for f in c["train_files"] + c["validation_files"]
        for r in read_tfrecords(os.path.join(beir_data, f))
    ]
    got = {}
    for r in records:
        texts = [tok.decode(ids, skip_special_tokens=True) for ids in r["texts"]]
        assert r["roles"] == [ROLE_ANCHOR] + [ROLE_POSITIVE] * (len(texts) - 1)
        got[texts[0]] = texts[1:]

    def doc(j):  # title + " " + text; the repeated id d0 keeps its first text in sorted order
        return "repeat a repeated id" if j == 0 else f"topic {j} facts about topic number {j}."

    want = {
        f"what about topic {i}?": [
            doc(j) for j in sorted([i] + ([N_QUERIES + i] if i % 4 == 0 else []), key=lambda j: f"d{j}")
        ]  # documents in id order
        for i in range(N_QUERIES)
    }
    assert got == want


def test_training_runs_on_a_beir_corpus(beir_data, tiny_bert_dir, tmp_path):
    from trainer.config import get_preset
    from trainer.train.metrics_writer import read_metrics
    from trainer.train.train_loop import train

    cfg = get_preset("demo").replace(
        model=tiny_bert_dir,
        from_scratch=True,
        batch_size=8,
        train_steps=3,
        warmup_steps=1,
        log_every=1,
        eval_every=0,
        checkpoint_every=1000,
        eval_max_examples=8,
        bucket_lengths=(32,),
        max_seq_length=32,
        pack_row_steps=1,
        sts_dev=None,
        ir_eval=(),
    )
    train(cfg, beir_data, str(tmp_path / "w"), progress=False)
    losses = [r["loss"] for r in read_metrics(str(tmp_path / "w")) if "loss" in r]
    assert len(losses) == 3 and all(0 < x < 10 for x in losses)
