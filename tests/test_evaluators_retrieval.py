import numpy as np

from trainer.evaluators.retrieval import evaluate_corpus, retrieval_metrics


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


def test_evaluate_corpus_embeds_both_sides():
    table = {1: [1.0, 0.0], 2: [0.0, 1.0]}
    calls = []

    def embed(ids):
        calls.append(ids)
        return _unit(np.array([table[x[0]] for x in ids], dtype=np.float32))

    m = evaluate_corpus(embed, [[1], [2]], [[1], [2]])
    assert m["recall@1"] == 1.0 and len(calls) == 2
    assert evaluate_corpus(embed, [], [])["n"] == 0
