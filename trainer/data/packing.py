"""Sequence packing: a padded batch -> rows that hold several whole texts back to back.

Sentence-pair corpora are short (STS-benchmark texts average 16 tokens) while each batch is padded
to its longest text, so most of a padded batch is padding. Packing puts the texts of each device's
slice of the batch into rows of `row_length` tokens (best-fit decreasing), and the encoder attends
within each text only (`modeling.packed_attention_mask`) with positions restarting per text, so the
embeddings equal the padded ones (to float rounding) at a fraction of the tokens.

Shapes stay static for XLA: the row length is a bucket (at least `min_row_length`), the row count
per device is rounded up to one of 16 steps per doubling (`row_bucket`, under 1/16 padding rows).
Each device's texts go to that device's rows only, so pooling needs no communication.

Packed batch (`pack_batch`), S = this host's data shards (devices), b = rows of the padded batch per
shard, C = columns (anchor, positive[, negative]), T = C * b texts per shard:
    packed_ids        int32 [S, R, L]  token ids (pad id elsewhere)
    packed_positions  int32 [S, R, L]  0-based position within its text
    packed_text       int32 [S, R, L]  shard-local text number c * b + i, -1 = padding
    <column>_fp       int32 [B]        text fingerprints, unchanged (they also name the columns)
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from trainer.data.padding import ID_KEYS, bucket_length

PACKED_KEYS = ("packed_ids", "packed_positions", "packed_text")


def _fills(pad_id: int) -> tuple[int, int, int]:
    """What fills the unused slots of each of PACKED_KEYS."""
    return pad_id, 0, -1


def texts_per_shard(batch: Mapping[str, object]) -> int:
    """T: the texts each shard's rows hold (all columns of its slice of the batch)."""
    return len(packed_columns(batch)) * (np.shape(batch["anchor_fp"])[0] // np.shape(batch["packed_ids"])[0])


def row_bucket(n: int, steps: int = 16) -> int:
    """Smallest count >= n of the form m * 2^e with steps <= m < 2 * steps (n itself up to `steps`):
    under 1/steps padding rows, at `steps` compiled shapes per doubling of the row count. 16 suits
    CPU and GPU (8 steps measured 3% slower training on CPU); TPU runs take fewer programs."""
    if steps < 1 or steps & (steps - 1):
        raise ValueError(f"row-count steps per doubling must be a power of two, got {steps}")
    if n <= steps:
        return max(int(n), 1)
    step = 1 << (int(n).bit_length() - steps.bit_length())
    return -(-int(n) // step) * step


def best_fit_decreasing(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Assign items of `lengths` (each <= capacity) to bins of `capacity`: longest first, each into
    the fullest bin it fits. Returns (bin, offset within the bin, number of bins)."""
    order = np.argsort(-lengths, kind="stable")
    bins = np.zeros(len(lengths), np.int64)  # empty texts (no tokens) stay at bin 0, offset 0
    offsets = np.zeros(len(lengths), np.int64)
    by_space: list[list[int]] = [[] for _ in range(capacity + 1)]  # free space -> open bins
    used: list[int] = []
    for i in order.tolist():
        n = int(lengths[i])
        if n == 0:
            break  # sorted: the rest are empty too
        space = n
        while space <= capacity and not by_space[space]:
            space += 1
        if space > capacity:  # no open bin fits: open one
            b = len(used)
            used.append(0)
        else:
            b = by_space[space].pop()
        bins[i], offsets[i] = b, used[b]
        used[b] += n
        by_space[capacity - used[b]].append(b)
    return bins, offsets, max(len(used), 1)


def pad_packed(batch: Mapping[str, object], row_length: int, rows: int, pad_id: int) -> dict:
    """A packed batch grown to `rows` rows per shard of `row_length` tokens (one shape on every host)."""
    out = dict(batch)
    s, r, l = np.asarray(batch["packed_ids"]).shape
    if row_length < l or rows < r:
        raise ValueError(f"cannot shrink packed rows [{r}, {l}] to [{rows}, {row_length}]")
    grow = ((0, 0), (0, rows - r), (0, row_length - l))
    for key, fill in zip(PACKED_KEYS, _fills(pad_id)):
        out[key] = np.pad(batch[key], grow, constant_values=fill)
    return out


def packed_columns(batch: Mapping[str, object]) -> tuple[str, ...]:
    return tuple(c for c in ID_KEYS if f"{c}_fp" in batch)


def place_texts(lengths: np.ndarray, n_shards: int, buckets: Sequence[int], min_row_length: int,
                row_steps: int = 16, rows_for: Callable[[int, int], int] | None = None):
    """Where pack_batch puts each text, from the token counts [C, B] alone (the shape simulation of
    trainer/data/shapes.py uses it without token ids). Returns (per-shard lengths [S, C * b], the
    per-shard placements (bin, offset, bins), rows per shard, row length)."""
    n_cols, n_rows = lengths.shape
    if n_rows % n_shards:
        raise ValueError(f"batch of {n_rows} rows does not split over {n_shards} data shards")
    b = n_rows // n_shards
    longest = int(lengths.max(initial=0))
    row_len = bucket_length(min(max(longest, min_row_length), buckets[-1]), buckets)
    # Per shard: texts numbered t = c * b + i (column-major), packed into that shard's rows.
    shard_lengths = lengths.reshape(n_cols, n_shards, b).transpose(1, 0, 2).reshape(n_shards, n_cols * b)
    placements = [best_fit_decreasing(shard_lengths[s], row_len) for s in range(n_shards)]
    rows = row_bucket(max(p[2] for p in placements), row_steps)
    if rows_for is not None:
        rows = rows_for(rows, row_len)
    return shard_lengths, placements, rows, row_len


def pack_batch(batch: Mapping[str, object], n_shards: int, buckets: Sequence[int], min_row_length: int,
               pad_id: int, row_steps: int = 16, rows_for: Callable[[int, int], int] | None = None) -> dict:
    """A padded batch (`<column>_ids/_mask` [B, L], `<column>_fp` [B]) -> the packed batch above.

    `buckets`: allowed row lengths (sorted; the last is max_seq_length). Rows per shard: the ladder
    (`row_bucket(n, row_steps)`), then `rows_for(rows, row_length)` when given (the memory plan grows
    them to a multiple of their gradient-caching chunks: shapes.Chunking.packed_rows). With several hosts,
    agree on the max (row length, rows) over hosts and `pad_packed` every host's batch to it."""
    columns = tuple(c for c in ID_KEYS if f"{c}_ids" in batch)
    missing = [c for c in columns if f"{c}_fp" not in batch]
    if missing:
        raise ValueError(f"packing needs text fingerprints; missing {', '.join(f'{c}_fp' for c in missing)}")
    ids = np.stack([np.asarray(batch[f"{c}_ids"]) for c in columns])  # [C, B, L]
    mask = np.stack([np.asarray(batch[f"{c}_mask"]) for c in columns]).astype(bool)
    n_cols, n_rows, _ = ids.shape
    b = n_rows // n_shards
    lengths = mask.sum(axis=2)  # [C, B]; texts are left-aligned, as the input pipeline pads them
    shard_lengths, placements, rows, row_len = place_texts(lengths, n_shards, buckets, min_row_length, row_steps,
                                                           rows_for)

    out_ids, out_pos, out_text = (np.full((n_shards, rows, row_len), fill, np.int32) for fill in _fills(pad_id))
    src_ids = ids.reshape(n_cols, n_shards, b, -1).transpose(1, 0, 2, 3).reshape(n_shards, n_cols * b, -1)
    for s, (bins, offsets, _) in enumerate(placements):
        lens = shard_lengths[s]
        text = np.repeat(np.arange(lens.size), lens)  # one entry per token
        pos = np.arange(text.size) - np.repeat(np.cumsum(lens) - lens, lens)
        out_ids[s, bins[text], offsets[text] + pos] = src_ids[s, text, pos]
        out_pos[s, bins[text], offsets[text] + pos] = pos
        out_text[s, bins[text], offsets[text] + pos] = text
    out = dict(zip(PACKED_KEYS, (out_ids, out_pos, out_text)))
    for c in columns:
        out[f"{c}_fp"] = np.asarray(batch[f"{c}_fp"])
    return out
