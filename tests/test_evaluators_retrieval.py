import numpy as np

from pipeline.record_schema import fingerprint
from trainer.evaluators.retrieval import RetrievalEvaluator, retrieval_metrics, validation_pairs


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_perfect_and_shifted_rankings():
    rng = np.random.default_rng(0)
    e = _unit(rng.normal(size=(50, 16)))
    m = retrieval_metrics(e, e)
    assert m == {"recall@1": 1.0, "mrr@10": 1.0, "n": 50}
    # Anchor i's best match is positive i+1, its true positive second: recall@1 0, MRR 1/2.
    e = np.eye(50, dtype=np.float32)  # orthonormal, so the ranking is exact
    anchors = _unit(0.5 * e + 1.0 * np.roll(e, -1, axis=0))
    positives = e
    scores = anchors @ positives.T
    second = np.argsort(-scores, axis=1)[:, 1]
    assert (np.argmax(scores, axis=1) == (np.arange(50) + 1) % 50).all() and (second == np.arange(50)).all()
    m = retrieval_metrics(anchors, positives)
    assert m["recall@1"] == 0.0 and abs(m["mrr@10"] - 0.5) < 1e-9


def test_true_positive_beyond_rank_10_scores_zero():
    n = 20
    positives = np.eye(n, dtype=np.float32)
    # Every anchor points at positive 0, so for anchors i >= 11 the true positive is past rank 10.
    anchors = _unit(np.eye(n, dtype=np.float32) * 0.01 + positives[0] * 1.0)
    m = retrieval_metrics(anchors, positives)
    assert m["recall@1"] == 1 / n
    expected = [1.0] + [0.5] * (n - 1)  # each anchor i>0: positive 0 first, then its own
    assert abs(m["mrr@10"] - np.mean(expected)) < 1e-6


def test_duplicate_positives_count_as_correct():
    e = _unit(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    m = retrieval_metrics(e, e, positive_fp=[7, 7, 9])
    assert m["recall@1"] == 1.0


def test_evaluator_reports_each_matryoshka_size_from_one_embedding(sample_data_dir, tiny_bert_dir):
    import json
    import os

    from pipeline.manifest import load_manifest
    from trainer.model.encode import encode_ids
    from trainer.model.hf_loading import init_random
    from trainer.model.modeling import EncoderConfig
    from trainer.train.matryoshka import truncate

    with open(os.path.join(tiny_bert_dir, "config.json")) as f:
        pre = init_random(EncoderConfig.from_hf_dict(json.load(f)), seed=1, source_dir=tiny_bert_dir)
    manifest = load_manifest(sample_data_dir)
    plain = RetrievalEvaluator(pre.model, manifest, 64, 32).run(pre.params["params"])
    sized = RetrievalEvaluator(pre.model, manifest, 64, 32, dims=(16, 4)).run(pre.params["params"])
    assert {k: v for k, v in sized.items() if "/dim" not in k} == plain
    assert set(sized) == set(plain) | {k.replace("eval/", f"eval/dim{d}/", 1) for k in plain for d in (16, 4)}
    corpus = next(c for c in manifest.corpora if c.name == "sample_nli")
    anchors, positives = validation_pairs(corpus, manifest.compression, 64, 32)
    fps = [fingerprint(" ".join(map(str, p))) for p in positives]
    a, p = (encode_ids(pre.model, pre.params, x, manifest.pad_token_id, 64, 32) for x in (anchors, positives))
    want = retrieval_metrics(truncate(a, 4), truncate(p, 4), fps)
    assert sized["eval/dim4/sample_nli/recall@1"] == want["recall@1"]
    assert sized["eval/dim4/sample_nli/mrr@10"] == want["mrr@10"]
    assert sized["eval/dim4/sample_nli/mrr@10"] != sized["eval/sample_nli/mrr@10"]
