"""Exact top-k of every anchor over the pool, blocked, with the pool split over the mesh.

The pool's embeddings are swept one block at a time: each embedding shard cut into blocks of
`block_rows` (the last padded to full size, so that one program serves every pool size and the
warm-up's), each block split by rows over the devices (`data` axis). Per step a device scores a
block of queries against its rows (one [Q, R] matmul at full float32 precision), takes
`jax.lax.top_k` of them and merges it into its running top-k; after the sweep the devices' lists are
merged into one. No device ever holds more than its share of one block plus the running lists, so
the pool may be far larger than a device's memory (blocks that fit the `device_budget` stay on the
devices for the next query shard, the rest are read again per query shard). The same sweep picks out
each anchor's positive scores, so they come from the very products the candidates are ranked by.

`approx_recall` swaps the per-block `top_k` for `jax.lax.approx_max_k` (approximate on TPU only;
elsewhere XLA computes it exactly); `recall_against_exact` measures what it costs.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from trainer.mesh import DATA_AXIS, data_shards, replicated
from trainer.mining.embeddings import EmbeddingShards


@functools.lru_cache(maxsize=8)
def _step(mesh, k: int, approx_recall: float | None):
    """One block step: (queries, positive indices, this block's rows, block start, block end,
    running scores / indices / positive scores) -> the running lists with this block merged in."""

    def local(q, pos_idx, pool, start, end, run_s, run_i, run_p):
        rows = pool.shape[0]
        first = start + jax.lax.axis_index(DATA_AXIS) * rows
        gidx = first + jnp.arange(rows, dtype=jnp.int32)
        s = jnp.dot(q, pool.T, precision=jax.lax.Precision.HIGHEST)
        s = jnp.where(gidx[None, :] < end, s, -jnp.inf)  # the block's padding rows
        local_pos = pos_idx - first
        inside = (pos_idx >= 0) & (local_pos >= 0) & (local_pos < rows)
        pos_s = jnp.take_along_axis(s, jnp.clip(local_pos, 0, rows - 1), axis=1)
        run_p = jnp.maximum(run_p[0], jnp.where(inside, pos_s, -jnp.inf))
        kb = min(k, rows)
        if approx_recall is None:
            bs, bi = jax.lax.top_k(s, kb)
        else:
            bs, bi = jax.lax.approx_max_k(s, kb, recall_target=approx_recall)
        # Running list first: on equal scores top_k keeps the earlier entry, the lower pool index.
        cs = jnp.concatenate([run_s[0], bs], axis=1)
        ci = jnp.concatenate([run_i[0], gidx[bi]], axis=1)
        ns, sel = jax.lax.top_k(cs, k)
        return ns[None], jnp.take_along_axis(ci, sel, axis=1)[None], run_p[None]

    d = P(DATA_AXIS)
    f = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), d, P(), P(), d, d, d), out_specs=(d, d, d))
    return jax.jit(f, donate_argnums=(5, 6, 7))


@functools.lru_cache(maxsize=8)
def _init(mesh, q: int, k: int, n_pos: int):
    shard = NamedSharding(mesh, P(DATA_AXIS))
    d = data_shards(mesh)
    return jax.jit(
        lambda: (
            jnp.full((d, q, k), -jnp.inf, jnp.float32),
            jnp.full((d, q, k), -1, jnp.int32),
            jnp.full((d, q, n_pos), -jnp.inf, jnp.float32),
        ),
        out_shardings=(shard,) * 3,
    )


@functools.partial(jax.jit, static_argnums=3)
def _merge(run_s, run_i, run_p, k: int):
    """The devices' running lists [D, Q, k] -> one top-k [Q, k]; positive scores: the one device
    that held each positive has it, the others -inf."""
    d, q, _ = run_s.shape
    s = run_s.transpose(1, 0, 2).reshape(q, d * k)
    i = run_i.transpose(1, 0, 2).reshape(q, d * k)
    ns, sel = jax.lax.top_k(s, k)
    return ns, jnp.take_along_axis(i, sel, axis=1), run_p.max(axis=0)


class Searcher:
    """Top-k search of query embeddings over the pool's embedding shards."""

    def __init__(
        self,
        mesh,
        pool: EmbeddingShards,
        k: int,
        n_pos: int,
        query_block: int = 1024,
        device_budget_bytes: float = 4 * 2**30,
        block_rows: int = 4096,
    ):
        if not 1 <= k <= pool.n:
            raise ValueError(f"k={k} must be between 1 and the pool size {pool.n}")
        self.mesh, self.pool, self.k, self.n_pos, self.query_block = mesh, pool, k, max(n_pos, 1), query_block
        d = data_shards(mesh)
        self.block_rows = -(-min(block_rows, pool.shard_size) // d) * d  # rows per block, over all devices
        self._cache: dict[int, list] = {}
        self._budget = device_budget_bytes
        self._cached_bytes = 0

    def _blocks(self, i: int) -> list[tuple[jax.Array, jax.Array, jax.Array]]:
        """Pool shard i as blocks of block_rows (padding rows zero), each with its first and end row."""
        if i in self._cache:
            return self._cache[i]
        emb = self.pool.load(i)
        first, end = self.pool.rows(i)
        br, rep, d = self.block_rows, replicated(self.mesh), data_shards(self.mesh)
        blocks, nbytes = [], 0
        for a in range(0, len(emb), br):
            padded = np.zeros((br, emb.shape[1]), np.float32)
            padded[: min(br, len(emb) - a)] = emb[a : a + br]
            blocks.append(
                (
                    jax.device_put(padded, NamedSharding(self.mesh, P(DATA_AXIS))),
                    jax.device_put(np.int32(first + a), rep),
                    jax.device_put(np.int32(end), rep),
                )
            )
            nbytes += padded.nbytes // d
        if self._cached_bytes + nbytes <= self._budget:
            self._cache[i] = blocks  # kept on the devices for the next query shard
            self._cached_bytes += nbytes
        return blocks

    def search(
        self,
        queries: np.ndarray,
        pos_idx: np.ndarray,
        approx_recall: float | None = None,
        progress: Callable[[int], None] = lambda n: None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """queries float32 [n, H], pos_idx int32 [n, P] (-1: none) -> top-k scores float32 [n, k] and
        pool indices int32 [n, k] (best first; -1 where the pool has fewer candidates), and the
        positives' scores float32 [n, P] (-inf for -1)."""
        n, qb, width = len(queries), self.query_block, pos_idx.shape[1]
        step, rep = _step(self.mesh, self.k, approx_recall), replicated(self.mesh)
        pos_idx = np.pad(pos_idx, ((0, 0), (0, self.n_pos - pos_idx.shape[1])), constant_values=-1)
        blocks = []
        for a in range(0, n, qb):  # query blocks, padded to one shape; padding rows are dropped below
            q = np.zeros((qb, queries.shape[1]), np.float32)
            q[: min(qb, n - a)] = queries[a : a + qb]
            p = np.full((qb, self.n_pos), -1, np.int32)
            p[: min(qb, n - a)] = pos_idx[a : a + qb]
            blocks.append((jax.device_put(q, rep), jax.device_put(p, rep), *_init(self.mesh, qb, self.k, self.n_pos)()))
        # Pool blocks outside, query blocks inside: each pool block is loaded once per call.
        for i in range(self.pool.n_shards):
            for block, start, end in self._blocks(i):
                for j, (q, p, s, idx, ps) in enumerate(blocks):
                    blocks[j] = (q, p, *step(q, p, block, start, end, s, idx, ps))
            progress(n * (i + 1) // self.pool.n_shards - n * i // self.pool.n_shards)
        outs = [jax.device_get(_merge(s, idx, ps, self.k)) for _, _, s, idx, ps in blocks]
        scores, idx, pos_scores = (np.concatenate([o[j] for o in outs])[:n] for j in range(3))
        idx = np.where(np.isfinite(scores), idx, -1).astype(np.int32)
        return scores.astype(np.float32), idx, pos_scores[:, :width].astype(np.float32)


def recall_against_exact(approx_idx: np.ndarray, exact_idx: np.ndarray) -> float:
    """Mean over anchors of |approximate top-k ∩ exact top-k| / |exact top-k|."""
    hits = [len(set(a[a >= 0]) & set(e[e >= 0])) / max(int((e >= 0).sum()), 1) for a, e in zip(approx_idx, exact_idx)]
    return float(np.mean(hits)) if hits else 1.0
