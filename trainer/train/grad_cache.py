"""Gradient caching: the contrastive loss over a batch larger than activation memory.

(Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup".)
1. Embed every column of the global batch in chunks of `chunk` texts, without keeping activations.
2. Take the loss and its gradient with respect to the embeddings (the [B, H] arrays are small).
3. Re-run each chunk under `jax.vjp` and pull its slice of that gradient back to the parameters,
   accumulating. Peak activation memory is that of one chunk; compute is ~1 extra forward pass.

Dropout masks are functions of each token's identity (its text's index in the global batch and its
position: modeling.dropout_token_ids, carried beside the ids), and every pass uses the step's one key,
so the re-run reproduces the embeddings of pass 1, the gradient is exact, and any chunking gives the
plain step's numbers, dropout included.

Mesh: a chunk takes the same number of rows from every device's slice of the batch (rows are
regrouped [D, K, b] -> [K, D, b] by reshapes that need no communication), so every device works
on every chunk.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from trainer.mesh import DATA_AXIS

# apply_fn(params, input_ids [N, L], attention_mask [N, L], token_ids [N, L], deterministic, key) -> [N, H]
ApplyFn = Callable[[Any, jax.Array, jax.Array, jax.Array, bool, jax.Array], jax.Array]


def _layout(batch_size: int, chunk: int, n_shards: int) -> tuple[int, int]:
    if chunk <= 0 or batch_size % chunk:
        raise ValueError(f"grad_cache_chunk {chunk} must divide the global batch {batch_size}")
    if chunk % n_shards:
        raise ValueError(f"grad_cache_chunk {chunk} must be a multiple of the {n_shards} data shards")
    return batch_size // chunk, chunk // n_shards


def to_chunks(x: jax.Array, chunk: int, n_shards: int) -> jax.Array:
    """[C, B, ...] -> [C * K, chunk, ...]; chunk k holds rows k*b..(k+1)*b-1 of every shard's slice."""
    c, b_all = x.shape[:2]
    k, b = _layout(b_all, chunk, n_shards)
    rest = x.shape[2:]
    x = x.reshape((c, n_shards, k, b) + rest)
    x = jnp.swapaxes(x, 1, 2)
    return x.reshape((c * k, chunk) + rest)


def from_chunks(x: jax.Array, n_columns: int, n_shards: int) -> jax.Array:
    """Inverse of `to_chunks`: [C * K, chunk, ...] -> [C, B, ...]."""
    ck, chunk = x.shape[:2]
    k, b = ck // n_columns, chunk // n_shards
    rest = x.shape[2:]
    x = x.reshape((n_columns, k, n_shards, b) + rest)
    x = jnp.swapaxes(x, 1, 2)
    return x.reshape((n_columns, k * chunk) + rest)


def _constrain(x: jax.Array, mesh: Mesh | None, spec: P) -> jax.Array:
    return x if mesh is None else jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def embed_in_chunks(
    apply_fn: ApplyFn,
    params: Any,
    ids: jax.Array,
    masks: jax.Array,
    token_ids: jax.Array,
    key: jax.Array,
    chunk: int,
    deterministic: bool,
    mesh: Mesh | None = None,
) -> jax.Array:
    """Embeddings [C, B, H] (float32) of token ids [C, B, L], one encoder call per chunk (a scan).

    Differentiable, but differentiating it keeps every chunk's activations: the cached path below
    calls it under stop_gradient; tests use it as a reference."""
    n_shards = 1 if mesh is None else int(mesh.shape[DATA_AXIS])
    n_cols = ids.shape[0]
    chunks = tuple(_constrain(to_chunks(x, chunk, n_shards), mesh, P(None, DATA_AXIS)) for x in (ids, masks, token_ids))

    def body(_, xs):
        i, m, t = (_constrain(x, mesh, P(DATA_AXIS)) for x in xs)
        return None, apply_fn(params, i, m, t, deterministic, key).astype(jnp.float32)

    _, embs = jax.lax.scan(body, None, chunks)
    return from_chunks(embs, n_cols, n_shards)


def cached_value_and_grad(
    apply_fn: ApplyFn,
    params: Any,
    ids: jax.Array,
    masks: jax.Array,
    token_ids: jax.Array,
    loss_of_embeddings: Callable[[jax.Array], jax.Array],
    key: jax.Array,
    chunk: int,
    deterministic: bool,
    mesh: Mesh | None = None,
) -> tuple[jax.Array, Any]:
    """(loss, d loss / d params) with activation memory of one chunk.

    ids, masks, token_ids: [C, B, L] (columns anchor, positive[, negative]); loss_of_embeddings:
    [C, B, H] -> scalar."""
    n_shards = 1 if mesh is None else int(mesh.shape[DATA_AXIS])
    _layout(ids.shape[1], chunk, n_shards)

    # Pass 1: embeddings without activations kept.
    embs = jax.lax.stop_gradient(
        embed_in_chunks(apply_fn, params, ids, masks, token_ids, key, chunk, deterministic, mesh)
    )
    # The loss over the whole global batch, and its gradient w.r.t. the embeddings.
    loss, g_embs = jax.value_and_grad(loss_of_embeddings)(embs)

    # Pass 2: per chunk, recompute (same masks) and pull the embedding gradient back.
    chunks = tuple(
        _constrain(to_chunks(x, chunk, n_shards), mesh, P(None, DATA_AXIS)) for x in (ids, masks, token_ids, g_embs)
    )

    def body(acc, xs):
        i, m, t, g = (_constrain(x, mesh, P(DATA_AXIS)) for x in xs)
        _, vjp = jax.vjp(lambda p: apply_fn(p, i, m, t, deterministic, key).astype(jnp.float32), params)
        (gp,) = vjp(g)
        return jax.tree_util.tree_map(jnp.add, acc, gp), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    grads, _ = jax.lax.scan(body, zeros, chunks)
    return loss, grads


def packed_to_columns(embs: jax.Array, n_columns: int, source: jax.Array | None = None) -> jax.Array:
    """Packed embeddings [S, C * b, H] (each shard's texts column-major) -> [C, S * b, H], batch order.
    `source` [S, C * b]: the batch's packed_source (slot -> text c * B + i) where the packer dealt the
    texts over the shards (trainer/data/packing.py)."""
    s, t = embs.shape[:2]
    if source is not None:
        flat = embs.reshape((s * t,) + embs.shape[2:])
        return flat[jnp.argsort(source.reshape(-1))].reshape((n_columns, s * t // n_columns) + embs.shape[2:])
    embs = embs.reshape((s, n_columns, t // n_columns) + embs.shape[2:])
    return jnp.swapaxes(embs, 0, 1).reshape((n_columns, s * (t // n_columns)) + embs.shape[3:])


def columns_to_packed(x: jax.Array, n_shards: int, source: jax.Array | None = None) -> jax.Array:
    """Inverse of `packed_to_columns`: [C, S * b, H] -> [S, C * b, H]."""
    c, sb = x.shape[:2]
    if source is not None:
        return x.reshape((c * sb,) + x.shape[2:])[source.reshape(-1)].reshape(
            (n_shards, c * sb // n_shards) + x.shape[2:]
        )
    x = jnp.swapaxes(x.reshape((c, n_shards, sb // n_shards) + x.shape[2:]), 0, 1)
    return x.reshape((n_shards, sb // n_shards * c) + x.shape[3:])


def cached_value_and_grad_packed(
    packed_fn: Callable,
    params: Any,
    arrays: Sequence[jax.Array],
    n_texts: int,
    loss_of_embeddings: Callable[[jax.Array], jax.Array],
    n_columns: int,
    key: jax.Array,
    n_chunks: int,
    deterministic: bool,
    mesh: Mesh | None = None,
    source: jax.Array | None = None,
) -> tuple[jax.Array, Any]:
    """Gradient caching of a packed batch (trainer/data/packing.py): chunk k is rows k*r..(k+1)*r-1 of
    every shard (r = R / n_chunks). A text lies in one row, so each chunk embeds whole texts; its
    output is zero for the texts of other chunks (and so is its derivative), and the chunks' outputs
    sum to the batch's embeddings.

    arrays: ids, positions, text_index, token_ids [S, R, L]; source: the batch's packed_source, if any;
    packed_fn(params, ids, positions, text_index, token_ids [S, r, L], num_texts, deterministic, key) -> [S, T, H]."""
    n_shards, rows, length = arrays[0].shape
    if rows % n_chunks:
        raise ValueError(f"{rows} packed rows per shard do not split into {n_chunks} gradient-caching chunks")

    def split(t):  # [S, R, L] -> [K, S, r, L], each chunk sharded on S like the batch
        t = jnp.swapaxes(t.reshape(n_shards, n_chunks, rows // n_chunks, length), 0, 1)
        return _constrain(t, mesh, P(None, DATA_AXIS))

    chunks = tuple(split(a) for a in arrays)

    def embed(p, xs):
        xs = [_constrain(a, mesh, P(DATA_AXIS)) for a in xs]
        return packed_fn(p, *xs, n_texts, deterministic, key).astype(jnp.float32)

    # Pass 1: the batch's embeddings, chunk by chunk, without activations kept.
    def sum_body(acc, xs):
        return acc + jax.lax.stop_gradient(embed(params, xs)), None

    hidden = jax.eval_shape(lambda: embed(params, jax.tree_util.tree_map(lambda a: a[0], chunks)))
    embs, _ = jax.lax.scan(sum_body, jnp.zeros(hidden.shape, jnp.float32), chunks)
    loss, g = jax.value_and_grad(loss_of_embeddings)(packed_to_columns(embs, n_columns, source))
    g = columns_to_packed(g, n_shards, source)

    # Pass 2: per chunk, recompute (same masks) and pull the embedding gradient back.
    def grad_body(acc, xs):
        _, vjp = jax.vjp(lambda p: embed(p, xs), params)
        (gp,) = vjp(g)
        return jax.tree_util.tree_map(jnp.add, acc, gp), None

    grads, _ = jax.lax.scan(grad_body, jax.tree_util.tree_map(jnp.zeros_like, params), chunks)
    return loss, grads


def stack_columns(batch: dict[str, jax.Array], columns: Sequence[str]) -> tuple[jax.Array, jax.Array]:
    """[C, B, L] ids and masks from the batch dict's `<column>_ids` / `<column>_mask`."""
    return (jnp.stack([batch[f"{c}_ids"] for c in columns]), jnp.stack([batch[f"{c}_mask"] for c in columns]))
