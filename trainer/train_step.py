"""The training state and one jit-compiled training step over a device mesh.

The step embeds every column of the global batch (sharded on the mesh's `data` axis), computes the
contrastive loss over the whole global batch (XLA inserts the gathers the similarity matrix needs),
clips, applies AdamW and returns the new state with metrics. Pair batches use
`cfg.pair_directions`, triplet batches (a `negative_ids` column) `cfg.triplet_directions`.

Dropout keys come from (seed, step) by fold_in, so a resumed run draws the same dropout. A
non-finite loss or gradient leaves the state untouched (metrics["finite"] is False) so the loop can
stop with the last good state and checkpoint intact.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
from flax import linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from trainer.config import TrainConfig
from trainer.grad_cache import (cached_value_and_grad, cached_value_and_grad_packed, chunk_keys, packed_to_columns,
                                stack_columns)
from trainer.loss import contrastive_loss, validate_loss_options
from trainer.mesh import batch_sharding, check_batch_layout, data_shards, replicated
from trainer.optimizer import learning_rate_schedule, make_optimizer
from trainer.packing import PACKED_KEYS, packed_columns, texts_per_shard

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str) -> Any:
    """cfg.dtype -> the model's compute dtype (parameters and optimizer state stay float32)."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {name!r}")
    return COMPUTE_DTYPES[name]


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer updates applied so far
    params: Any  # float32 parameter tree
    opt_state: Any
    rng: jax.Array  # base PRNG key from the seed; the step's key is fold_in(rng, step)


def create_train_state(params: Any, cfg: TrainConfig, mesh: Mesh | None = None,
                       tx: optax.GradientTransformation | None = None) -> TrainState:
    """A fresh state (step 0) around float32 params; replicated over the mesh when one is given."""
    tx = tx or make_optimizer(cfg)
    # A copy: the step donates the state, which must not delete the caller's arrays.
    params = jax.tree_util.tree_map(lambda p: jnp.array(p, jnp.float32, copy=True), params)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                       rng=jax.random.PRNGKey(cfg.seed))
    if mesh is not None:
        state = jax.device_put(state, replicated(mesh))
    return state


def as_apply_fn(model: Any) -> Callable:
    """A Flax module (SentenceEncoder) or a ready `apply_fn(params, ids, mask, deterministic, key)`."""
    if isinstance(model, nn.Module):
        def apply_fn(params, ids, mask, deterministic, key):
            rngs = None if deterministic else {"dropout": key}
            return model.apply({"params": params}, ids, mask, deterministic=deterministic, rngs=rngs)
        return apply_fn
    return model


def as_packed_apply_fn(model: Any) -> Callable:
    """packed_fn(params, ids, positions, text_index [S, R, L], num_texts, deterministic, key) -> [S, T, H]."""
    if not isinstance(model, nn.Module):
        raise ValueError("packed batches need the Flax SentenceEncoder module, not a bare apply function")

    def packed_fn(params, ids, positions, text_index, num_texts, deterministic, key):
        rngs = None if deterministic else {"dropout": key}
        return model.apply({"params": params}, ids, positions, text_index, num_texts, deterministic=deterministic,
                           rngs=rngs, method="packed")
    return packed_fn


def batch_columns(batch: Mapping[str, Any]) -> tuple[str, ...]:
    if "packed_ids" in batch:
        return packed_columns(batch)
    return ("anchor", "positive", "negative") if "negative_ids" in batch else ("anchor", "positive")


def make_loss_of_embeddings(cfg: TrainConfig, batch: Mapping[str, Any]) -> Callable[[jax.Array], jax.Array]:
    """[C, B, H] embeddings -> the contrastive loss, with the directions of this batch's kind."""
    triplet = "negative" in batch_columns(batch)
    directions = cfg.triplet_directions if triplet else cfg.pair_directions

    def loss_of_embeddings(embs):
        return contrastive_loss(
            embs[0], embs[1], embs[2] if triplet else None,
            anchor_fp=batch.get("anchor_fp"), positive_fp=batch.get("positive_fp"),
            negative_fp=batch.get("negative_fp"), scale=cfg.scale, directions=directions,
            partition_mode=cfg.partition_mode, mask_false_negatives=cfg.mask_false_negatives)
    return loss_of_embeddings


def loss_and_grads(apply_fn: Callable, params: Any, batch: Mapping[str, jax.Array], cfg: TrainConfig,
                   step_key: jax.Array, deterministic: bool, mesh: Mesh | None = None):
    """(loss, grads) of one batch: plain autodiff, or gradient caching when cfg.grad_cache_chunk > 0.
    `apply_fn` is the model's (as_apply_fn) or, for a packed batch, as_packed_apply_fn's."""
    columns = batch_columns(batch)
    loss_fn = make_loss_of_embeddings(cfg, batch)
    if "packed_ids" in batch:
        if cfg.grad_cache_chunk:
            n_chunks = batch["anchor_fp"].shape[0] // cfg.grad_cache_chunk
            return cached_value_and_grad_packed(apply_fn, params, batch, loss_fn, len(columns), step_key, n_chunks,
                                                deterministic, mesh)
        key = chunk_keys(step_key, 1, 1)[0]  # the key gradient caching uses with one chunk
        arrays = [batch[k] for k in PACKED_KEYS]

        def packed_loss(p):
            embs = apply_fn(p, *arrays, texts_per_shard(batch), deterministic, key)
            return loss_fn(packed_to_columns(embs.astype(jnp.float32), len(columns)))
        return jax.value_and_grad(packed_loss)(params)
    ids, masks = stack_columns(batch, columns)
    if cfg.grad_cache_chunk:
        return cached_value_and_grad(apply_fn, params, ids, masks, loss_fn, step_key,
                                     cfg.grad_cache_chunk, deterministic, mesh)
    keys = chunk_keys(step_key, len(columns), 1)  # the keys gradient caching uses with one chunk

    def full_loss(p):
        embs = jnp.stack([apply_fn(p, ids[c], masks[c], deterministic, keys[c]).astype(jnp.float32)
                          for c in range(len(columns))])
        return loss_fn(embs)
    return jax.value_and_grad(full_loss)(params)


def make_train_step(model: Any, cfg: TrainConfig, mesh: Mesh, *, tx: optax.GradientTransformation | None = None,
                    dropout: bool = True, donate: bool = True):
    """jit(step)(state, batch) -> (state, metrics{loss, grad_norm, learning_rate, finite}).

    `batch`: dict of `anchor_ids/anchor_mask/positive_ids/positive_mask[/negative_*]` int32 [B, L] and
    `*_fp` int32 [B] (global arrays from `mesh.shard_batch`, or NumPy arrays in a single process).
    `dropout=False` runs the encoder deterministically (tests). The state argument is donated.
    """
    validate_loss_options(cfg.pair_directions, cfg.partition_mode)
    validate_loss_options(cfg.triplet_directions, cfg.partition_mode)
    apply_fn = as_apply_fn(model)
    tx = tx or make_optimizer(cfg)
    schedule = learning_rate_schedule(cfg)
    n_shards = data_shards(mesh)

    def step(state: TrainState, batch: Mapping[str, jax.Array]):
        packed = "packed_ids" in batch
        check_batch_layout(batch["anchor_fp" if packed else "anchor_ids"].shape[0], mesh, cfg.grad_cache_chunk)
        step_key = jax.random.fold_in(state.rng, state.step)
        fn = as_packed_apply_fn(model) if packed else apply_fn
        loss, grads = loss_and_grads(fn, state.params, batch, cfg, step_key, not dropout, mesh if n_shards > 1 else None)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def update(state):
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                                 opt_state=opt_state)
        # A branch, not a select over the whole state: one pass over params and moments fewer.
        new = jax.lax.cond(finite, update, lambda state: state, state)
        metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(state.step),
                   "finite": finite}
        return new, metrics

    return jax.jit(step, in_shardings=(replicated(mesh), batch_sharding(mesh)),
                   out_shardings=(replicated(mesh), replicated(mesh)),
                   donate_argnums=(0,) if donate else ())
