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
import numpy as np

from pipeline import normalize
from pipeline.dedup import tuple_bucket

TK = 16  # bytes of a tuple key


def key_bucket(key: int, buckets: int) -> int:
    return key % buckets


def pack_keys(keys: list[int], tks: bytes, buckets: int):
    """(key bucket, (keys as uint64 bytes, their tuple keys, 16 bytes each)) per bucket: a batch's text
    keys as two byte strings per bucket (Beam's coder pays per object; the join reads them with numpy)."""
    arr = np.array(keys, dtype=np.uint64)
    if buckets == 1:
        yield 0, (arr.tobytes(), tks)
        return
    tk_rows = np.frombuffer(tks, dtype=f"S{TK}")
    which = arr % np.uint64(buckets)
    order = np.argsort(which, kind="stable")
    bounds = np.flatnonzero(np.diff(which[order])) + 1
    for part in np.split(order, bounds):
        yield int(which[part[0]]), (arr[part].tobytes(), tk_rows[part].tobytes())


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
    """(bucket, {"train": [pack_keys(...) values], "eval": [(key, set, norm, text), ...]})
    -> (tuple bucket, (tuple key, set, norm, text)) once per candidate (tuple, evaluation text). The
    bucket's evaluation keys are sorted once; each packed batch of training keys is looked up in them
    with numpy (searchsorted), so the per-key work is C's, not Python's."""

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
        sorted_keys = np.array(sorted(evals), dtype=np.uint64)
        seen = set()
        for keys_bytes, tks in grouped["train"]:
            keys = np.frombuffer(keys_bytes, dtype=np.uint64)
            at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
            for i in np.flatnonzero(sorted_keys[at] == keys).tolist():
                tk = tks[TK * i : TK * i + TK]
                for (name, norm), text in evals[int(keys[i])].items():
                    if (tk, name, norm) not in seen:
                        seen.add((tk, name, norm))
                        yield tuple_bucket(tk, self._tuple_buckets), (tk, name, norm, text)
