"""Retrieval evaluation on each corpus's validation split: anchor -> positive among the split's positives.

Recall@1 and MRR@10 of the true positive when each anchor ranks all positives of the split by cosine
similarity (embeddings are L2-normalised, so a dot product). The metrics are pure numpy; the
evaluator reads the splits once (the first anchor and positive of each record, by the record
format's rule in pipeline/record_schema.py) and embeds them with the parameters it is given.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pipeline import record_schema
from pipeline.manifest import CorpusEntry, Manifest
from trainer.data import records
from trainer.model.encode import encode_ids
from trainer.train.matryoshka import dim_metric, truncate


def retrieval_metrics(
    anchors: np.ndarray, positives: np.ndarray, positive_fp: Sequence[int] | None = None
) -> dict[str, float]:
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


def _cut(ids: list[int], max_len: int | None) -> list[int]:
    """A text cut as the training stream cuts it: the first max_len - 1 tokens and the final one."""
    if max_len is None or len(ids) <= max_len:
        return list(ids)
    return list(ids[: max_len - 1]) + [ids[-1]]


def validation_pairs(corpus: CorpusEntry, compression: str, max_examples: int, max_seq_length: int | None = None):
    """A corpus's validation split as (anchors, positives): lists of token-id lists, in file order.
    Deterministic: each record's first anchor and first positive after it (a set's first two members)."""
    anchors, positives = [], []
    if not corpus.validation_files or max_examples <= 0:
        return anchors, positives
    for raw in records.read_records(corpus.validation_files, compression):
        rec = record_schema.decode_record(raw)
        try:
            a, p = corpus.format.first_pair(rec["roles"])
        except ValueError:
            raise ValueError(
                f"corpus {corpus.name!r}: a validation record lacks an anchor or positive (roles {rec['roles']})"
            ) from None
        anchors.append(_cut(rec["texts"][a], max_seq_length))
        positives.append(_cut(rec["texts"][p], max_seq_length))
        if len(anchors) >= max_examples:
            break
    return anchors, positives


class RetrievalEvaluator:
    """Recall@1 and MRR@10 per corpus with a validation split (and their means), on given parameters;
    also at each Matryoshka size of `dims` (eval/dim<d>/..., trainer/train/matryoshka.py)."""

    def __init__(
        self,
        model,
        manifest: Manifest,
        max_examples: int,
        max_seq_length: int,
        batch_size: int = 64,
        dims: Sequence[int] = (),
    ):
        self.model, self.pad_id = model, manifest.pad_token_id
        self.max_seq_length, self.batch_size = max_seq_length, batch_size
        self.dims = (None,) + tuple(dims)
        self.splits = {}
        for c in manifest.corpora:
            if c.validation_examples > 0:
                anchors, positives = validation_pairs(c, manifest.compression, max_examples, max_seq_length)
                if len(anchors) >= 2:
                    # Equal ids are equal texts: a repeated positive counts for every anchor that owns it.
                    fingerprints = [record_schema.fingerprint(" ".join(map(str, p))) for p in positives]
                    self.splits[c.name] = (anchors, positives, fingerprints)

    def run(self, params: Any) -> dict[str, float]:
        variables = {"params": params}

        def embed_ids(ids):
            return encode_ids(
                self.model, variables, ids, self.pad_id, batch_size=self.batch_size, max_seq_length=self.max_seq_length
            )

        out: dict[str, float] = {}
        for name, (anchors, positives, fingerprints) in self.splits.items():
            a, p = embed_ids(anchors), embed_ids(positives)
            for dim in self.dims:
                m = retrieval_metrics(truncate(a, dim), truncate(p, dim), fingerprints)
                for metric in ("recall@1", "mrr@10"):
                    out[dim_metric(f"eval/{name}/{metric}", dim)] = m[metric]
        for dim in self.dims if self.splits else ():
            for metric in ("recall@1", "mrr@10"):
                out[dim_metric(f"eval/mean_{metric}", dim)] = float(
                    np.mean([out[dim_metric(f"eval/{n}/{metric}", dim)] for n in self.splits])
                )
        return out
