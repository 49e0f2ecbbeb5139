"""Evaluation texts kept out of training: the join of training texts with evaluation texts, by key.

Both sides emit the keys of pipeline/normalize.py `text_keys` (a text's exact hash; for texts of 13
words or more its winnowed 7-word shingle hashes). Keys are grouped into `buckets` (key mod buckets)
and each bucket is one CoGroupByKey element: the bucket's evaluation entries are held in a dict (an
evaluation set is small next to the training data: its share of one bucket), the training entries
stream past it. A training entry whose key is an evaluation key becomes a candidate
(tuple key, set, normalised evaluation text, evaluation text), sent on to the tuple's own group
(pipeline/dedup.py `Decide`), where `normalize.matches` checks it on the words: a shared shingle hash
alone removes nothing. Nothing is broadcast; no side input holds an evaluation set.
"""
from __future__ import annotations

import apache_beam as beam

from pipeline import normalize
from pipeline.dedup import tuple_bucket


def key_bucket(key: int, buckets: int) -> int:
    return key % buckets


class EvalKeys(beam.DoFn):
    """(set, text) -> (bucket, (key, set, normalised text, text)) for each of its keys; a text that is
    empty once normalised has no key (it can match nothing)."""

    def __init__(self, buckets: int):
        self._buckets = buckets

    def process(self, element):
        name, text = element
        norm = normalize.normalize(text)
        if not norm:
            return
        for key in sorted(normalize.text_keys(norm)):
            yield key_bucket(key, self._buckets), (key, name, norm, text)


class JoinKeys(beam.DoFn):
    """(bucket, {"train": [[(key, tuple key), ...], ...], "eval": [(key, set, norm, text), ...]})
    -> (tuple bucket, (tuple key, set, norm, text)) once per candidate (tuple, evaluation text)."""

    def __init__(self, tuple_buckets: int):
        self._tuple_buckets = tuple_buckets

    def process(self, element):
        _, grouped = element
        evals: dict[int, dict] = {}
        for key, name, norm, text in grouped["eval"]:
            known = evals.setdefault(key, {})
            # One entry per (set, normalised text); of the texts normalising alike, the smallest (any run, any order).
            if (name, norm) not in known or text < known[(name, norm)]:
                known[(name, norm)] = text
        if not evals:
            return
        seen = set()
        for entries in grouped["train"]:
            for key, tk in entries:
                hit = evals.get(key)
                if hit is None:
                    continue
                for (name, norm), text in hit.items():
                    if (tk, name, norm) not in seen:
                        seen.add((tk, name, norm))
                        yield tuple_bucket(tk, self._tuple_buckets), (tk, name, norm, text)
