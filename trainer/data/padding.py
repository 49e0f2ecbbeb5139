"""Numpy helpers that turn unpadded token ids into the trainer's static-shape batches.

No TensorFlow here: the input pipeline hands over flat token ids plus lengths, and these functions
pick the bucket length, pad, build masks, fold fingerprints and drop in-batch duplicate texts.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

ID_KEYS = ("anchor", "positive", "negative")


def bucket_ladder(max_seq_length: int) -> tuple[int, ...]:
    """16, 24, 32, 48, 64, 96, 128, ... (steps of 1.5x / 2x) up to and including max_seq_length:
    at most ~1/3 padding waste per batch, about two programs per doubling of length."""
    out, b = [], 16
    while b < max_seq_length:
        out.append(b)
        if b * 3 // 2 < max_seq_length:
            out.append(b * 3 // 2)
        b *= 2
    out.append(max_seq_length)
    return tuple(sorted(set(out)))


def effective_buckets(bucket_lengths: Sequence[int], max_seq_length: int) -> tuple[int, ...]:
    """Sorted bucket lengths, capped at max_seq_length and always containing it, so every text
    (already cut at max_seq_length) fits some bucket and no bucket is longer than needed."""
    if max_seq_length < 2:
        raise ValueError(f"max_seq_length must be >= 2, got {max_seq_length}")
    if any(int(b) < 1 for b in bucket_lengths):
        raise ValueError(f"bucket lengths must be positive, got {list(bucket_lengths)}")
    return tuple(sorted({int(b) for b in bucket_lengths if int(b) < max_seq_length} | {int(max_seq_length)}))


def bucket_length(longest: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= longest (buckets sorted ascending)."""
    for b in buckets:
        if b >= longest:
            return b
    raise ValueError(f"a text of {longest} tokens is longer than the largest bucket {buckets[-1]}")


def fold_fingerprint(fp: np.ndarray) -> np.ndarray:
    """int64 text fingerprints -> int32 (xor of the two halves), the dtype accelerators handle well.
    Equal texts keep equal values; distinct texts collide with probability ~2^-32 per pair."""
    fp = np.asarray(fp, dtype=np.int64)
    folded = (fp ^ (fp >> 32)) & np.int64(0xFFFFFFFF)
    return folded.astype(np.uint32).view(np.int32)


def pad_rows(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, length: int, pad_id: int):
    """Rows `values[starts[i] : starts[i] + lengths[i]]` padded to `length`: (ids, mask) int32 [n, length]."""
    cols = np.arange(length, dtype=np.int64)
    mask = cols[None, :] < lengths[:, None]
    if values.size == 0:
        return np.full(mask.shape, pad_id, np.int32), mask.astype(np.int32)
    pos = np.minimum(starts[:, None].astype(np.int64) + cols[None, :], values.size - 1)
    ids = np.where(mask, values[pos], np.int32(pad_id)).astype(np.int32)
    return ids, mask.astype(np.int32)


def select_unique(fingerprints: np.ndarray, seen: set) -> np.ndarray:
    """Greedy in-batch de-duplication: keep row i iff none of its fingerprints (columns of `fingerprints`,
    int64 [n, k]) occurs in `seen` or in an earlier kept row. Updates `seen`; returns a bool mask.
    A row may repeat its own text (e.g. a set with two equal members): that is not a collision."""
    flat = fingerprints.reshape(-1)
    if np.unique(flat).size == flat.size and (not seen or seen.isdisjoint(flat.tolist())):
        seen.update(flat.tolist())  # fast path: no collision at all
        return np.ones(fingerprints.shape[0], dtype=bool)
    keep = np.zeros(fingerprints.shape[0], dtype=bool)
    for i, row in enumerate(fingerprints.tolist()):
        texts = set(row)
        if seen.isdisjoint(texts):
            keep[i] = True
            seen.update(texts)
    return keep


def assemble(slots, columns: Sequence[str], batch_size: int, length: int, pad_id: int) -> dict:
    """A padded batch from examples taken out of drawn chunks (trainer/data/reader.py).

    `slots`: [(parts, where)], `parts` = [(chunk, rows)] of examples in order, `where` = the batch
    positions they fill. Returns <column>_ids, <column>_mask (int32 [batch_size, length]) and
    <column>_fp (int32 [batch_size], folded fingerprints) for each column."""
    batch: dict = {}
    for col in columns:
        ids = np.empty((batch_size, length), np.int32)
        mask = np.empty((batch_size, length), np.int32)
        fp = np.empty((batch_size,), np.int64)
        for parts, where in slots:
            i = 0
            for chunk, rows in parts:
                values, starts, lengths = chunk.columns[col]
                dst = where[i : i + rows.size]
                ids[dst], mask[dst] = pad_rows(values, starts[rows], lengths[rows], length, pad_id)
                fp[dst] = chunk.fingerprints[col][rows]
                i += rows.size
        batch[f"{col}_ids"], batch[f"{col}_mask"], batch[f"{col}_fp"] = ids, mask, fold_fingerprint(fp)
    return batch


def repad(batch: Mapping[str, object], length: int, pad_id: int) -> dict:
    """The batch with every `*_ids` / `*_mask` array padded (or cut) to `length` columns.

    Multi-host runs need one sequence length for the global batch: each host picks its bucket from
    its own texts, so the trainer agrees on the max over hosts and re-pads with this."""
    out = dict(batch)
    for key in ID_KEYS:
        ids, mask = batch.get(f"{key}_ids"), batch.get(f"{key}_mask")
        if ids is None:
            continue
        ids, mask = np.asarray(ids), np.asarray(mask)
        cur = ids.shape[1]
        if length < cur and mask[:, length:].any():
            raise ValueError(f"cannot cut {key} texts to {length} tokens: some are longer")
        if length <= cur:
            out[f"{key}_ids"], out[f"{key}_mask"] = ids[:, :length], mask[:, :length]
        else:
            extra = length - cur
            out[f"{key}_ids"] = np.pad(ids, ((0, 0), (0, extra)), constant_values=pad_id)
            out[f"{key}_mask"] = np.pad(mask, ((0, 0), (0, extra)), constant_values=0)
    return out
