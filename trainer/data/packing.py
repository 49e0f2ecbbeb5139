"""Sequence packing: a padded batch -> rows that hold several whole texts back to back.

Sentence-pair corpora are short (STS-benchmark texts average 16 tokens) while each batch is padded
to its longest text, so most of a padded batch is padding. Packing puts the texts of each device's
slice of the batch into rows of `row_length` tokens (best-fit decreasing), and the encoder attends
within each text only (`modeling.packed_attention_mask`) with positions restarting per text, so the
embeddings equal the padded ones (to float rounding) at a fraction of the tokens.

Shapes stay static for XLA: the row length is a bucket (at least `min_row_length`), the row count
per device is rounded up to a rung of a `RowLadder`: 16 steps per doubling (`row_bucket`, under 1/16
padding rows), or row counts fitted to the data's lengths (trainer/data/row_fit.py `fit_ladder`).
Each device's texts go to that device's rows only, so pooling needs no communication. Which texts a
device gets: its slice of the batch, or with `even=True` a deal of the whole (host's) batch, longest
first and in snake order, so that every device holds the same number of texts with nearly the same
lengths and needs the same number of rows (the fullest device sets the shape of all); the loss
gathers every device's embeddings, so which device encodes a text changes no number
(`packed_source` maps each slot back to its text, for the loss and for dropout).

Packed batch (`pack_batch`), S = this host's data shards (devices), b = rows of the padded batch per
shard, C = columns (anchor, positive[, negative]), T = C * b texts per shard:
    packed_ids        int32 [S, R, L]  token ids (pad id elsewhere)
    packed_positions  int32 [S, R, L]  0-based position within its text
    packed_text       int32 [S, R, L]  shard-local text number (slot) 0..T-1, -1 = padding
    packed_source     int32 [S, T]     (even=True only) the text in each slot: c * B_global + row, the
                                       row of the global batch (without it slot c * b + i of shard s
                                       is text c * B + s * b + i)
    <column>_fp       int32 [B]        text fingerprints, unchanged (they also name the columns)
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np

from trainer.data.padding import ID_KEYS, bucket_length

PACKED_KEYS = ("packed_ids", "packed_positions", "packed_text")
PACKED_SOURCE = "packed_source"


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


@dataclasses.dataclass(frozen=True)
class RowLadder:
    """The row counts per device a packed batch is rounded up to: per (columns, row length), the
    smallest fitted rung >= n (`rungs`, from trainer/data/row_fit.py `fit_ladder`), else the
    geometric `row_bucket(n, steps)` (a count above every fitted rung, or a group without rungs)."""

    steps: int = 16
    rungs: Mapping[tuple[int, int], tuple[int, ...]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        row_bucket(1, self.steps)  # checks steps
        for group, rungs in self.rungs.items():
            if list(rungs) != sorted(set(rungs)) or not rungs or rungs[0] < 1:
                raise ValueError(f"rungs of {group} must be increasing positive row counts, got {list(rungs)}")

    def describe(self) -> str:
        return ", ".join(f"{'triplet' if c == 3 else 'pair'} x {n}: {list(r)}" for (c, n), r in self.rungs.items())

    def round(self, n: int, n_columns: int, row_length: int) -> int:
        rungs = self.rungs.get((n_columns, row_length), ())
        i = bisect.bisect_left(rungs, n)
        return rungs[i] if i < len(rungs) else row_bucket(n, self.steps)


def as_ladder(row_steps: "int | RowLadder") -> RowLadder:
    return row_steps if isinstance(row_steps, RowLadder) else RowLadder(int(row_steps))


def deal_texts(lengths: np.ndarray, n_shards: int, even: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Which text each shard's slots hold, from the token counts [C, B]: (source [S, T], its lengths
    [S, T]), source = c * B + i. `even`: all texts longest first, dealt in snake order (0..S-1,
    S-1..0, ...): every shard gets T = C * B / S texts with nearly the same length profile. Otherwise
    shard s holds rows s * b .. (s + 1) * b - 1 of each column, slot c * b + i (b = B / S)."""
    n_cols, n_rows = lengths.shape
    if n_rows % n_shards:
        raise ValueError(f"batch of {n_rows} rows does not split over {n_shards} data shards")
    b = n_rows // n_shards
    ids = np.arange(n_cols * n_rows, dtype=np.int64).reshape(n_cols, n_rows)
    if not even:
        source = ids.reshape(n_cols, n_shards, b).transpose(1, 0, 2).reshape(n_shards, n_cols * b)
    else:
        order = np.argsort(-lengths.ravel(), kind="stable")  # longest first; ties in batch order
        # Deal k goes to round k // S, place k % S, reversed in odd rounds: [T, S] -> [S, T].
        source = order.reshape(n_cols * b, n_shards)
        source[1::2] = source[1::2, ::-1]
        source = np.ascontiguousarray(source.T)
    return source, lengths.ravel()[source]


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


def place_texts(
    lengths: np.ndarray,
    n_shards: int,
    buckets: Sequence[int],
    min_row_length: int,
    row_steps: "int | RowLadder" = 16,
    rows_for: Callable[[int, int], int] | None = None,
    even: bool = False,
):
    """Where pack_batch puts each text, from the token counts [C, B] alone (the shape simulation of
    trainer/data/shapes.py uses it without token ids). Returns (the texts of each shard's slots
    [S, T] as `deal_texts` gives them, their lengths [S, T], the per-shard placements (bin, offset,
    bins), rows per shard, row length)."""
    longest = int(lengths.max(initial=0))
    row_len = bucket_length(min(max(longest, min_row_length), buckets[-1]), buckets)
    source, shard_lengths = deal_texts(lengths, n_shards, even)
    placements = [best_fit_decreasing(shard_lengths[s], row_len) for s in range(n_shards)]
    rows = as_ladder(row_steps).round(max(p[2] for p in placements), lengths.shape[0], row_len)
    if rows_for is not None:
        rows = rows_for(rows, row_len)
    return source, shard_lengths, placements, rows, row_len


def pack_batch(
    batch: Mapping[str, object],
    n_shards: int,
    buckets: Sequence[int],
    min_row_length: int,
    pad_id: int,
    row_steps: "int | RowLadder" = 16,
    rows_for: Callable[[int, int], int] | None = None,
    even: bool = False,
    global_batch: int | None = None,
    first_row: int = 0,
) -> dict:
    """A padded batch (`<column>_ids/_mask` [B, L], `<column>_fp` [B]) -> the packed batch above.

    `buckets`: allowed row lengths (sorted; the last is max_seq_length). Rows per shard: the ladder
    (`row_steps`: a RowLadder, or steps per doubling), then `rows_for(rows, row_length)` when given (the
    memory plan grows them to a multiple of their gradient-caching chunks: shapes.Chunking.packed_rows). With
    several hosts, agree on the max (row length, rows) over hosts and `pad_packed` every host's batch to
    it. `even`: deal the texts over the shards (`deal_texts`) and add `packed_source`, numbering text
    (c, i) c * global_batch + first_row + i: this host's rows start at `first_row` of the global batch
    of `global_batch` (default: this batch is the global batch)."""
    columns = tuple(c for c in ID_KEYS if f"{c}_ids" in batch)
    missing = [c for c in columns if f"{c}_fp" not in batch]
    if missing:
        raise ValueError(f"packing needs text fingerprints; missing {', '.join(f'{c}_fp' for c in missing)}")
    ids = np.stack([np.asarray(batch[f"{c}_ids"]) for c in columns])  # [C, B, L]
    mask = np.stack([np.asarray(batch[f"{c}_mask"]) for c in columns]).astype(bool)
    n_cols, n_rows, _ = ids.shape
    lengths = mask.sum(axis=2)  # [C, B]; texts are left-aligned, as the input pipeline pads them
    source, shard_lengths, placements, rows, row_len = place_texts(
        lengths, n_shards, buckets, min_row_length, row_steps, rows_for, even
    )

    out_ids, out_pos, out_text = (np.full((n_shards, rows, row_len), fill, np.int32) for fill in _fills(pad_id))
    src_ids = ids.reshape(n_cols * n_rows, -1)[source]  # [S, T, L]
    for s, (bins, offsets, _) in enumerate(placements):
        lens = shard_lengths[s]
        text = np.repeat(np.arange(lens.size), lens)  # one entry per token
        pos = np.arange(text.size) - np.repeat(np.cumsum(lens) - lens, lens)
        out_ids[s, bins[text], offsets[text] + pos] = src_ids[s, text, pos]
        out_pos[s, bins[text], offsets[text] + pos] = pos
        out_text[s, bins[text], offsets[text] + pos] = text
    out = dict(zip(PACKED_KEYS, (out_ids, out_pos, out_text)))
    if even:
        total = n_rows if global_batch is None else int(global_batch)
        if first_row < 0 or first_row + n_rows > total:
            raise ValueError(f"rows {first_row}..{first_row + n_rows - 1} are not in a global batch of {total}")
        c, i = np.divmod(source, n_rows)
        out[PACKED_SOURCE] = (c * total + first_row + i).astype(np.int32)
    for c in columns:
        out[f"{c}_fp"] = np.asarray(batch[f"{c}_fp"])
    return out
