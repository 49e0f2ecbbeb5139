"""Retrieval evaluation on a corpus's validation split: anchor -> positive among the split's positives.

Recall@1 and MRR@10 of the true positive when each anchor ranks all positives of the split by cosine
similarity (embeddings are L2-normalised, so a dot product). Pure numpy; embedding is injected.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def retrieval_metrics(anchors: np.ndarray, positives: np.ndarray, positive_fp: Sequence[int] | None = None) -> dict[str, float]:
    """anchors, positives: [N, H] normalised embeddings, row i of each a true pair.

    Duplicated positives (same fingerprint) count as correct for every anchor that owns one of them,
    so a split with repeated answers is not penalised for ties it cannot break.
    """
    n = anchors.shape[0]
    if n == 0:
        return {"recall@1": float("nan"), "mrr@10": float("nan"), "n": 0}
    scores = anchors.astype(np.float32) @ positives.astype(np.float32).T
    if positive_fp is not None:
        fp = np.asarray(positive_fp)
        correct = fp[None, :] == fp[:, None]
    else:
        correct = np.eye(n, dtype=bool)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    hits = np.take_along_axis(correct, order, axis=1)  # [N, 10]
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), -1)
    mrr = np.where(first >= 0, 1.0 / (np.maximum(first, 0) + 1), 0.0)
    return {"recall@1": float(hits[:, 0].mean()), "mrr@10": float(mrr.mean()), "n": int(n)}


def evaluate_corpus(embed_ids: Callable[[list[list[int]]], np.ndarray], anchors: list[list[int]],
                    positives: list[list[int]], positive_fp: Sequence[int] | None = None) -> dict[str, float]:
    """Embeds token-id lists with `embed_ids` and scores retrieval."""
    if not anchors:
        return {"recall@1": float("nan"), "mrr@10": float("nan"), "n": 0}
    return retrieval_metrics(embed_ids(anchors), embed_ids(positives), positive_fp)
