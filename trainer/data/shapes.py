"""The batch shapes a run emits: what the input pipeline, the step, the preflight and the planner share.

XLA compiles one program per batch shape. With packing (trainer/data/packing.py) a shape is (kind, rows
per device, row length, chunks): the row length from the buckets, the rows from the row ladder
(`pack_row_steps` steps per doubling, or `pack_programs` row counts fitted to the lengths:
trainer/data/row_fit.py), grown to a multiple of their gradient-caching chunks
(`Chunking`: cfg.grad_cache_chunk or cfg.chunk_tokens). Padded, it is (kind, texts per device, bucket
length, chunks). Here: those rules, the shapes a memory check compiles (the worst case and the largest
unchunked one: `memory_check_shapes`), the effective sequence length every one of them is planned
at, the packer the run applies, and the shape the hosts of a multi-host run agree on (one collective,
trainer/multihost.py). Nothing here compiles or runs on a device; the planner (trainer/plan/) counts
programs with the same rules.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from trainer import multihost
from trainer.data import padding
from trainer.data.packing import RowLadder, deal_texts, pack_batch, pad_packed, place_texts
from trainer.data.padding import bucket_length, effective_buckets


@dataclasses.dataclass(frozen=True)
class Chunking:
    """The number of gradient-caching chunks for each batch shape.

    `fixed_texts`: cfg.grad_cache_chunk (texts per chunk over the global batch; every shape chunked);
    `max_tokens`: cfg.chunk_tokens (per device; 0 = no limit). At most one of them is set."""

    batch_size: int
    n_shards: int
    fixed_texts: int = 0
    max_tokens: int = 0

    def __post_init__(self):
        if self.fixed_texts and self.max_tokens:
            raise ValueError("set either --grad_cache_chunk (texts per chunk) or --chunk_tokens, not both")
        if self.fixed_texts < 0 or self.max_tokens < 0:
            raise ValueError("grad_cache_chunk and chunk_tokens must be >= 0")

    @classmethod
    def from_config(cls, cfg: Any, n_shards: int) -> "Chunking":
        return cls(cfg.batch_size, n_shards, cfg.grad_cache_chunk, cfg.chunk_tokens)

    # -- packed batches: R rows of L tokens per device; chunk k is rows [k R/n, (k+1) R/n) of every device

    def _chunk_rows(self, row_length: int) -> int:
        return max(1, self.max_tokens // row_length)

    def packed_chunks(self, rows: int, row_length: int) -> int:
        """Chunks for packed rows [R, L] per device (1 = the plain step)."""
        if self.fixed_texts:
            return self.batch_size // self.fixed_texts
        if not self.max_tokens or rows * row_length <= self.max_tokens:
            return 1
        return -(-rows // self._chunk_rows(row_length))

    def packed_rows(self, rows: int, row_length: int) -> int:
        """`rows` (from the row ladder) grown to a multiple of its chunk count, as the packer emits them.

        With n = ceil(R / r) chunks of at most r rows, n * ceil(R / n) rows are again n chunks of at most
        r rows (ceil(R / n) <= r), so `packed_chunks` of the result is n: the count is a function of shape."""
        if self.fixed_texts:
            n = self.batch_size // self.fixed_texts
            return -(-rows // n) * n
        n = self.packed_chunks(rows, row_length)
        return n * -(-rows // n)

    # -- padded batches: C columns of B texts of L tokens (B / S per device)

    def padded_chunk(self, n_columns: int, length: int) -> int:
        """Texts per chunk over the global batch (0 = the plain step, which holds every column)."""
        if self.fixed_texts:
            return self.fixed_texts
        per_device = self.batch_size // self.n_shards
        if not self.max_tokens or n_columns * per_device * length <= self.max_tokens:
            return 0
        need = -(-per_device * length // self.max_tokens)
        n = next(d for d in range(need, per_device + 1) if per_device % d == 0)
        return self.batch_size // n


@dataclasses.dataclass(frozen=True, order=True)
class Shape:
    """One compiled program's batch shape.

    packed: `rows` rows per device of `length` tokens; padded: `rows` texts per device and column,
    padded to the bucket `length`. `chunks`: gradient-caching chunks (1 = the plain step)."""

    kind: str  # "pair" | "triplet"
    packed: bool
    rows: int
    length: int
    chunks: int = 1

    @property
    def columns(self) -> int:
        return 3 if self.kind == "triplet" else 2

    @property
    def tokens_per_device(self) -> int:
        return self.rows * self.length if self.packed else self.columns * self.rows * self.length

    @property
    def label(self) -> str:
        dims = f"{self.rows}x{self.length}" if self.packed else f"padded {self.columns}x{self.rows}x{self.length}"
        return f"{self.kind} {dims}" + (f" ({self.chunks} chunks)" if self.chunks > 1 else "")


def with_effective_length(cfg: Any, manifest: Any) -> Any:
    """cfg (a TrainConfig) with max_seq_length capped at the job's cut (the manifest's), which no record
    exceeds: the longest text the run sees. The input pipeline (trainer/data/batches.py), its packer, the
    preflight and the planner all take this one value, so none of them plans or compiles shapes that never
    occur (data tokenized at 64 is planned at 64, whatever --max_seq_length says)."""
    cut = manifest.max_seq_length if manifest is not None else None
    return cfg.replace(max_seq_length=min(int(cfg.max_seq_length), cut or int(cfg.max_seq_length)))


def bin_count(lengths: np.ndarray, capacity: int) -> int:
    """The bin count of packing.best_fit_decreasing(lengths, capacity), from the length histogram.

    Only the count shapes a program, and best fit treats open bins of equal free space alike, so it is
    enough to track how many bins have each free space. Equal items go in as a group: an item fills
    the open bin of least free space s >= n, which then has s - n left; if that is still >= n the next
    item goes there too, so each such bin takes s // n items in a row. Exact (tests/test_program_count.py
    compares them) and 3-20x faster than the item-by-item loop: a 10,000-step reference simulation
    takes ~12 s instead of ~45 s (2 CPU cores)."""
    hist = np.bincount(np.asarray(lengths, np.int64).ravel(), minlength=capacity + 1)
    if hist.size > capacity + 1 and hist[capacity + 1 :].any():
        raise ValueError(f"a text is longer than the row length {capacity}")
    free = [0] * (capacity + 1)  # free space -> open bins
    spaces: list[int] = []  # free spaces with open bins, ascending
    bins = 0

    def add(space: int, m: int) -> None:
        if m:
            if not free[space]:
                bisect.insort(spaces, space)
            free[space] += m

    for n in np.flatnonzero(hist[1 : capacity + 1])[::-1].tolist():  # longest first; empty texts take no bin
        n += 1
        k = int(hist[n])
        i = bisect.bisect_left(spaces, n)
        while k and i < len(spaces):
            s = spaces[i]
            q = s // n  # items one bin of free space s takes in a row
            if k >= free[s] * q:  # every such bin filled
                m = free[s]
                k -= m * q
                free[s] = 0
                del spaces[i]
                add(s - q * n, m)  # < n: never revisited for this n
            else:
                full, r = divmod(k, q)
                free[s] -= full + (1 if r else 0)
                if not free[s]:
                    del spaces[i]
                add(s - q * n, full)
                if r:
                    add(s - r * n, 1)
                k = 0
            i = bisect.bisect_left(spaces, n)
        if k:  # new bins, each taking capacity // n items
            q = capacity // n
            full, r = divmod(k, q)
            bins += full + (1 if r else 0)
            add(capacity - q * n, full)
            if r:
                add(capacity - r * n, 1)
    return max(bins, 1)


@dataclasses.dataclass(frozen=True)
class Need:
    """What one batch needs before the ladder: its kind, row length and, per device, the rows of the
    fullest device (`rows`) and of all devices together (`used`); real tokens and squared lengths."""

    kind: str
    packed: bool
    length: int
    rows: int
    used: int
    real: int
    real_sq: int

    @property
    def columns(self) -> int:
        return 3 if self.kind == "triplet" else 2


def batch_need(lengths: np.ndarray, cfg, n_shards: int, buckets: Sequence[int], exact_packer: bool = False) -> Need:
    """The Need of one batch of token counts [C, B] under cfg's packing (as pack_batch places it:
    `bin_count` gives best_fit_decreasing's bin counts from the histogram; `exact_packer` runs it)."""
    kind = "triplet" if lengths.shape[0] == 3 else "pair"
    real, real_sq = int(lengths.sum()), int((lengths.astype(np.int64) ** 2).sum())
    if not cfg.packing:
        return Need(kind, False, bucket_length(int(lengths.max(initial=0)), buckets), 0, 0, real, real_sq)
    if exact_packer:
        _, _, placements, _, row_len = place_texts(
            lengths, n_shards, buckets, cfg.pack_min_row_length, 1, even=cfg.pack_even_cores
        )
        bins = [p[2] for p in placements]
    else:
        row_len = bucket_length(min(max(int(lengths.max(initial=0)), cfg.pack_min_row_length), buckets[-1]), buckets)
        _, shard_lengths = deal_texts(lengths, n_shards, cfg.pack_even_cores)
        bins = [bin_count(x, row_len) for x in shard_lengths]
    return Need(kind, True, row_len, max(bins), sum(bins), real, real_sq)


def need_shape(need: Need, cfg, n_shards: int, chunking: Chunking, ladder: RowLadder) -> Shape:
    """The program shape a Need compiles to under `ladder` and the chunking."""
    if need.packed:
        rows = chunking.packed_rows(ladder.round(need.rows, need.columns, need.length), need.length)
        return Shape(need.kind, True, rows, need.length, chunking.packed_chunks(rows, need.length))
    chunk = chunking.padded_chunk(need.columns, need.length)
    return Shape(need.kind, False, cfg.batch_size // n_shards, need.length, cfg.batch_size // chunk if chunk else 1)


def batch_shape(
    lengths: np.ndarray,
    cfg,
    n_shards: int,
    chunking: Chunking,
    buckets: Sequence[int],
    exact_packer: bool = False,
    ladder: RowLadder | None = None,
) -> Shape:
    """The program shape of one batch of token counts [C, B] (`ladder` default: pack_row_steps')."""
    ladder = ladder or RowLadder(cfg.pack_row_steps)
    return need_shape(batch_need(lengths, cfg, n_shards, buckets, exact_packer), cfg, n_shards, chunking, ladder)


def worst_shapes(cfg, n_shards: int, ladder: RowLadder | None = None) -> list[Shape]:
    """The pair and the triplet batch whose every text has max_seq_length tokens: the most rows, through
    the same placement, ladder (default: `pack_row_steps`') and chunk rounding. The largest programs
    when nothing is chunked."""
    chunking = Chunking.from_config(cfg, n_shards)
    buckets = effective_buckets(cfg.bucket_lengths, cfg.max_seq_length)
    return [
        batch_shape(
            np.full((c, cfg.batch_size), cfg.max_seq_length, np.int64),
            cfg,
            n_shards,
            chunking,
            buckets,
            exact_packer=True,
            ladder=ladder,
        )
        for c in (2, 3)
    ]


def largest_unchunked_shape(cfg, n_shards: int, kind: str, ladder: RowLadder | None = None) -> Shape | None:
    """The shape of `kind` with the most tokens per device that the memory plan runs plain (no gradient
    caching); None when every shape is chunked (grad_cache_chunk). Per-shape chunking splits the worst
    shape into chunks of at most chunk_tokens, so a smaller shape just under chunk_tokens, run whole, can
    need more memory (v3-8, roberta-large: a 256x128 triplet plain 14.99 GiB, the 384x128 worst in 2 chunks
    12.65). Packed: for each row length, the largest ladder row count within chunk_tokens and within what a
    batch can fill (every text in a row of its own); padded: the longest bucket within chunk_tokens."""
    chunking = Chunking.from_config(cfg, n_shards)
    if chunking.fixed_texts:
        return None
    columns = 3 if kind == "triplet" else 2
    per_device = cfg.batch_size // n_shards
    buckets = effective_buckets(cfg.bucket_lengths, cfg.max_seq_length)
    if not cfg.packing:
        plain = [Shape(kind, False, per_device, n) for n in buckets if not chunking.padded_chunk(columns, n)]
    else:
        ladder = ladder or RowLadder(cfg.pack_row_steps)
        shortest = bucket_length(min(cfg.pack_min_row_length, buckets[-1]), buckets)
        plain = []
        for length in (n for n in buckets if n >= shortest):
            most_rows = ladder.round(columns * per_device, columns, length)
            rows = min(most_rows, chunking.max_tokens // length) if chunking.max_tokens else most_rows
            while rows and ladder.round(rows, columns, length) != rows:  # down to a count the ladder emits
                rows -= 1
            if rows:
                plain.append(Shape(kind, True, rows, length))
    return max(plain, key=lambda s: (s.tokens_per_device, s.length), default=None)


def memory_check_shapes(cfg, n_shards: int, ladder: RowLadder | None = None) -> list[tuple[str, Shape]]:
    """What a memory check must compile: ("worst", shape) of each kind and, where the plan chunks that one,
    ("unchunked", the largest shape of the kind that runs plain), under `ladder` (the run's)."""
    out = []
    for worst in worst_shapes(cfg, n_shards, ladder):
        out.append(("worst", worst))
        plain = largest_unchunked_shape(cfg, n_shards, worst.kind, ladder)
        if plain is not None and plain != worst:
            out.append(("unchunked", plain))
    return out


def batch_packer(
    cfg: Any, n_shards: int, local_shards: int, pad_id: int, ladder: RowLadder | None = None, process_index: int = 0
) -> Callable[[dict], dict]:
    """padded batch -> packed batch as the step expects it: this host's `local_shards` devices as the
    shards, row lengths from cfg's buckets, rows from `ladder` (the run's: trainer/data/row_fit.py
    row_ladder; default: pack_row_steps') grown for the memory plan's chunks, texts dealt evenly over
    the devices with cfg.pack_even_cores (this host's rows start at process_index x its batch)."""
    chunking = Chunking.from_config(cfg, n_shards)
    buckets = effective_buckets(cfg.bucket_lengths, cfg.max_seq_length)
    hosts = n_shards // local_shards

    def pack(batch: dict) -> dict:
        rows = np.shape(batch["anchor_fp"])[0]
        return pack_batch(
            batch,
            local_shards,
            buckets,
            cfg.pack_min_row_length,
            pad_id,
            ladder if ladder is not None else cfg.pack_row_steps,
            chunking.packed_rows,
            even=cfg.pack_even_cores,
            global_batch=rows * hosts,
            first_row=process_index * rows,
        )

    return pack


def agree_on_shape(batch: Mapping[str, Any], pad_id: int, chunking: Chunking) -> dict:
    """The batch grown to the shape every host agrees on: padded batches to the longest bucket any
    host picked; packed batches to the longest rows and most rows any host has (then to a row count
    the memory plan can chunk)."""
    if jax.process_count() == 1:
        return dict(batch)
    if "packed_ids" in batch:
        rows, row_length = (int(v) for v in multihost.max_over_hosts(np.shape(batch["packed_ids"])[1:]))
        return pad_packed(batch, row_length, chunking.packed_rows(rows, row_length), pad_id)
    return padding.repad(batch, int(multihost.max_over_hosts(np.shape(batch["anchor_ids"])[1])), pad_id)
