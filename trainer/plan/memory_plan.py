"""How a train step fits in device memory, without changing its math.

Three levers, each a `TrainConfig` field (the `reference` preset's choice and the compiler figures
behind it: docs/training_step.md, "Memory plan"):

- `chunk_tokens`: per device, the most tokens whose activations one encoder pass holds. A batch shape
  over it is embedded in gradient-caching chunks (trainer/train/grad_cache.py) of at most that many tokens;
  shapes under it take the plain step. Chosen per shape, statically, from the batch's array shape, so
  short-text corpora never pay the extra forward pass that long-text corpora need.
- `shard_optimizer` (ZeRO stage 1): AdamW's two moments are sharded over the `data` axis instead of
  replicated; parameters and gradients stay replicated, and XLA turns the update into a sharded update
  plus an all-gather of the new parameters. For roberta-large on 8 devices the state per device drops
  from 3.96 to 1.65 GiB: 2.31 GiB per device freed (tests/test_memory_plan.py computes it).
- `adam_mu_dtype`: the first moment in bfloat16 (optax's `mu_dtype`; the second moment stays float32).
- `remat` (trainer/model/modeling.py REMAT_POLICIES): recompute parts of each block in the backward pass.

Dropout is a function of each token's identity (modeling.dropout_token_ids), so every plan gives the
same losses and gradients (tests/test_layout_invariance.py).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from trainer.data.batching import effective_buckets
from trainer.mesh import DATA_AXIS, data_shards, replicated
from trainer.data.packing import pack_batch


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
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
    def from_config(cls, cfg: Any, n_shards: int) -> "ChunkPlan":
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


def moment_spec(shape: tuple[int, ...], n_shards: int) -> P:
    """Shard an optimizer moment on its first axis that divides over the devices (replicate if none:
    scalars, odd-sized vectors). roberta-large's word embeddings [50265, 1024] shard on the hidden axis."""
    for axis, size in enumerate(shape):
        if size % n_shards == 0 and size >= n_shards:
            return P(*([None] * axis + [DATA_AXIS]))
    return P()


def state_shardings(state: Any, mesh: Mesh, shard_optimizer: bool) -> Any:
    """Shardings of a TrainState: all replicated, or (ZeRO-1) the optimizer state's arrays sharded."""
    rep = replicated(mesh)
    if not shard_optimizer or data_shards(mesh) == 1:
        return jax.tree_util.tree_map(lambda _: rep, state)
    n = data_shards(mesh)
    opt = jax.tree_util.tree_map(lambda x: NamedSharding(mesh, moment_spec(np.shape(x), n)), state.opt_state)
    return state.replace(step=rep, params=jax.tree_util.tree_map(lambda _: rep, state.params), opt_state=opt,
                         rng=rep)


def state_bytes_per_device(state: Any, shardings: Any) -> int:
    """Bytes of the state one device holds under `shardings` (shapes only; works on abstract states)."""
    total = 0
    for x, s in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(shardings)):
        shard = s.shard_shape(np.shape(x)) if np.ndim(x) else ()
        total += math.prod(shard) * np.dtype(x.dtype).itemsize
    return total


def batch_packer(cfg: Any, n_shards: int, local_shards: int, pad_id: int, ladder: Any = None,
                 process_index: int = 0) -> Callable[[dict], dict]:
    """padded batch -> packed batch as the step expects it: this host's `local_shards` devices as the
    shards, row lengths from cfg's buckets, rows from `ladder` (the run's: program_count.row_ladder;
    default: pack_row_steps') grown for the memory plan's chunks, texts dealt evenly over the devices
    with cfg.pack_even_cores (this host's rows start at process_index x its batch)."""
    plan = ChunkPlan.from_config(cfg, n_shards)
    buckets = effective_buckets(cfg.bucket_lengths, cfg.max_seq_length)
    hosts = n_shards // local_shards

    def pack(batch: dict) -> dict:
        rows = np.shape(batch["anchor_fp"])[0]
        return pack_batch(batch, local_shards, buckets, cfg.pack_min_row_length, pad_id,
                          ladder if ladder is not None else cfg.pack_row_steps, plan.packed_rows,
                          even=cfg.pack_even_cores, global_batch=rows * hosts, first_row=process_index * rows)
    return pack
