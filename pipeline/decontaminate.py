"""Evaluation texts kept out of training: the join of training texts with evaluation texts, by key.

Both sides emit the keys of pipeline/normalize.py `batch_text_keys` (a text's exact hash; for texts of
13 words or more its winnowed 7-word shingle hashes), a batch of texts at a time, packed as arrays.
Keys are grouped into `buckets` (key mod buckets) and each bucket is one CoGroupByKey element: the
bucket's evaluation keys are held as a sorted array (an evaluation set is small next to the training
data: its share of one bucket), the training keys stream past it. A training entry whose key is an
evaluation key becomes a candidate (tuple key, set, normalised evaluation text, evaluation text), sent
on to the tuple's own group (pipeline/dedup.py `Decide`), where `normalize.matches` checks it on the
words: a shared shingle hash alone removes nothing. Nothing is broadcast; no side input holds an evaluation set.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from pipeline import normalize
from pipeline.dedup import tuple_bucket

TK = 16  # bytes of a tuple key


def by_bucket(keys: np.ndarray, buckets: int):
    """(key bucket, the positions in `keys` of its keys) per bucket that holds any (key mod buckets)."""
    if buckets == 1:
        yield 0, slice(None)
        return
    which = keys % np.uint64(buckets)
    order = np.argsort(which, kind="stable")
    bounds = np.flatnonzero(np.diff(which[order])) + 1
    for part in np.split(order, bounds):
        yield int(which[part[0]]), part


def pack_keys(keys: np.ndarray, tks: np.ndarray, buckets: int):
    """(key bucket, (keys as uint64 bytes, their tuple keys, 16 bytes each)) per bucket: a batch's text
    keys (uint64) and their tuple keys (an S16 array) as two byte strings per bucket (Beam's coder pays
    per object; the join reads them with numpy)."""
    for bucket, part in by_bucket(keys, buckets):
        yield bucket, (keys[part].tobytes(), tks[part].tobytes())


class EvalKeys(beam.DoFn):
    """[(set, text), ...] (a batch of eval_texts.ReadEvalTexts) -> per key bucket (bucket, (keys as uint64 bytes,
    their entries' numbers as int32 bytes, [(set, normalised text, text), ...] the entries)): the keys of
    a whole batch at once (normalize.batch_text_keys), one element per bucket. A text that is empty
    once normalised has no key (it can match nothing)."""

    def __init__(self, buckets: int):
        self._buckets = buckets

    def process(self, batch):
        norms = normalize.normalize_many([text for _, text in batch])
        entries = [(name, norm, text) for (name, text), norm in zip(batch, norms) if norm]
        if not entries:
            return
        keys, of = normalize.batch_text_keys([e[1] for e in entries])
        for bucket, part in by_bucket(keys, self._buckets):
            used, local = np.unique(of[part], return_inverse=True)  # the bucket's own entries, numbered from 0
            yield bucket, (keys[part].tobytes(), local.astype(np.int32).tobytes(), [entries[i] for i in used.tolist()])


class JoinKeys(beam.DoFn):
    """(bucket, {"train": [pack_keys(...) values], "eval": [EvalKeys values]})
    -> (tuple bucket, (tuple key, set, norm, text)) once per candidate (tuple, evaluation text). The
    bucket's evaluation keys are sorted once; each packed batch of training keys is looked up in them
    with numpy (searchsorted), so the per-key work is C's, not Python's."""

    def __init__(self, tuple_buckets: int):
        self._tuple_buckets = tuple_buckets

    def process(self, element):
        _, grouped = element
        keys, rows, entries = [], [], []
        for keys_bytes, rows_bytes, batch_entries in grouped["eval"]:
            keys.append(np.frombuffer(keys_bytes, np.uint64))
            rows.append(np.frombuffer(rows_bytes, np.int32) + len(entries))
            entries.extend(batch_entries)
        if not entries:
            return
        # One entry per (set, normalised text): texts normalising alike have the same keys; of them the
        # smallest (any run, any order).
        smallest: dict[tuple[str, str], str] = {}
        for name, norm, text in entries:
            if (name, norm) not in smallest or text < smallest[(name, norm)]:
                smallest[(name, norm)] = text
        keys, rows = np.concatenate(keys), np.concatenate(rows)
        order = np.argsort(keys, kind="stable")
        keys, rows = keys[order], rows[order]
        seen = set()
        for keys_bytes, tks in grouped["train"]:
            train = np.frombuffer(keys_bytes, np.uint64)
            lo, hi = np.searchsorted(keys, train, "left"), np.searchsorted(keys, train, "right")
            for i in np.flatnonzero(hi > lo).tolist():
                tk = tks[TK * i : TK * i + TK]
                for r in rows[lo[i] : hi[i]].tolist():
                    name, norm, _ = entries[r]
                    if (tk, name, norm) not in seen:
                        seen.add((tk, name, norm))
                        yield tuple_bucket(tk, self._tuple_buckets), (tk, name, norm, smallest[(name, norm)])
