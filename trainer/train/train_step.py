"""The training state and one jit-compiled training step over a device mesh.

The step embeds every column of the global batch (sharded on the mesh's `data` axis), computes the
loss (cfg.loss; the contrastive loss by default) over the whole global batch (XLA inserts the gathers
the similarity matrix needs), clips, applies AdamW and returns the new state with metrics. Pair batches use
`cfg.pair_directions`, triplet batches (a `negative_ids` column) `cfg.triplet_directions`.

Dropout: one key per step, fold_in(seed, step), so a resumed run draws the same dropout; each mask is
a hash of that key, the site and the token's identity (its text's index in the global batch and its
position within the text: `padded_token_ids`, `packed_token_ids`), so padded or packed rows, any
device count and any gradient-caching chunks (trainer/data/shapes.py) give the same numbers. A
non-finite loss or gradient leaves the state untouched (metrics["finite"] is False) so the loop can
stop with the last good state and checkpoint intact.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.sharding import Mesh

from trainer.config import TrainConfig
from trainer.data.packing import PACKED_KEYS, PACKED_SOURCE, packed_columns, texts_per_shard
from trainer.data.shapes import Chunking, Shape
from trainer.mesh import batch_sharding, check_batch_layout, data_shards, replicated
from trainer.model.modeling import dropout_token_ids
from trainer.train.grad_cache import (
    cached_value_and_grad,
    cached_value_and_grad_packed,
    packed_to_columns,
    stack_columns,
)
from trainer.train.loss import loss_named, validate_loss_options
from trainer.train.matryoshka import matryoshka_loss
from trainer.train.memory import gradient_shardings, remat_plan, state_shardings
from trainer.train.memory import memory_budget as device_budget
from trainer.train.optimizer import learning_rate_schedule, make_optimizer

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


def train_state_sharding(state: TrainState, cfg: TrainConfig, mesh: Mesh) -> Any:
    """Per-leaf shardings of `state` (or of its abstract shapes): replicated, or with the optimizer
    state sharded over the devices when cfg.shard_optimizer (ZeRO-2's state: the gradients and
    the update are sharded inside the step, `sharded_update`)."""
    return state_shardings(state, mesh, cfg.shard_optimizer)


def create_train_state(
    params: Any, cfg: TrainConfig, mesh: Mesh | None = None, tx: optax.GradientTransformation | None = None
) -> TrainState:
    """A fresh state (step 0) around float32 params; placed on the mesh when one is given."""
    tx = tx or make_optimizer(cfg)
    # A copy: the step donates the state, which must not delete the caller's arrays.
    params = jax.tree_util.tree_map(lambda p: jnp.array(p, jnp.float32, copy=True), params)
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=jax.random.PRNGKey(cfg.seed)
    )
    if mesh is not None:
        state = jax.device_put(state, train_state_sharding(state, cfg, mesh))
    return state


def as_apply_fn(model: Any) -> Callable:
    """apply_fn(params, ids, mask, token_ids, deterministic, key) -> [N, H] for a Flax SentenceEncoder
    (or a ready function of that signature)."""
    if isinstance(model, nn.Module):

        def apply_fn(params, ids, mask, token_ids, deterministic, key):
            rngs = None if deterministic else {"dropout": key}
            return model.apply(
                {"params": params}, ids, mask, deterministic=deterministic, token_ids=token_ids, rngs=rngs
            )

        return apply_fn
    return model


def as_packed_apply_fn(model: Any) -> Callable:
    """packed_fn(params, ids, positions, text_index, token_ids [S, R, L], num_texts, deterministic, key)
    -> [S, T, H]."""
    if not isinstance(model, nn.Module):
        raise ValueError("packed batches need the Flax SentenceEncoder module, not a bare apply function")

    def packed_fn(params, ids, positions, text_index, token_ids, num_texts, deterministic, key):
        rngs = None if deterministic else {"dropout": key}
        return model.apply(
            {"params": params},
            ids,
            positions,
            text_index,
            num_texts,
            deterministic=deterministic,
            token_ids=token_ids,
            rngs=rngs,
            method="packed",
        )

    return packed_fn


def padded_token_ids(n_columns: int, batch_size: int, length: int) -> jax.Array:
    """Dropout identities [C, B, L] of a padded global batch: text c * B + row, position = column."""
    shape = (n_columns, batch_size, length)
    text = jax.lax.broadcasted_iota(jnp.int32, shape, 0) * batch_size + jax.lax.broadcasted_iota(jnp.int32, shape, 1)
    return dropout_token_ids(
        text, jax.lax.broadcasted_iota(jnp.int32, shape, 2), num_texts=n_columns * batch_size, length=length
    )


def packed_token_ids(
    text_index: jax.Array, positions: jax.Array, batch_size: int, n_texts: int, source: jax.Array | None = None
) -> jax.Array:
    """Dropout identities [S, R, L] of packed rows: shard s's local text t = c * b + i (b = B / S) is
    global text c * B + s * b + i, the same number `padded_token_ids` gives it; with `source` [S, T]
    (the packer dealt texts over the shards) it is source[s, t]. `n_texts`: texts per shard
    (texts_per_shard); a text lies within one row, so its positions are < L."""
    n_shards, rows, length = text_index.shape
    b = batch_size // n_shards
    t = jnp.maximum(text_index, 0)  # padding slots: any identity (nothing reads them)
    if source is not None:
        text = jnp.take_along_axis(source, t.reshape(n_shards, rows * length), axis=1).reshape(t.shape)
    else:
        shard = jax.lax.broadcasted_iota(jnp.int32, text_index.shape, 0)
        text = (t // b) * batch_size + shard * b + t % b
    return dropout_token_ids(text, positions, num_texts=n_shards * n_texts, length=length)


def batch_columns(batch: Mapping[str, Any]) -> tuple[str, ...]:
    if "packed_ids" in batch:
        return packed_columns(batch)
    return ("anchor", "positive", "negative") if "negative_ids" in batch else ("anchor", "positive")


def make_loss_of_embeddings(cfg: TrainConfig, batch: Mapping[str, Any]) -> Callable[[jax.Array], jax.Array]:
    """[C, B, H] embeddings -> cfg.loss's loss of this batch (trainer/train/loss.py LOSSES; the contrastive
    loss by default), summed over cfg.matryoshka_dims' sizes when set (trainer/train/matryoshka.py)."""
    loss = loss_named(cfg.loss)(cfg, batch)

    def loss_of_embeddings(embs):
        return matryoshka_loss(loss, embs, cfg.matryoshka_dims, cfg.matryoshka_weights)

    return loss_of_embeddings


def loss_and_grads(
    apply_fn: Callable,
    params: Any,
    batch: Mapping[str, jax.Array],
    cfg: TrainConfig,
    step_key: jax.Array,
    deterministic: bool,
    mesh: Mesh | None = None,
):
    """(loss, grads) of one batch: plain autodiff, or gradient caching where the memory plan
    (cfg.grad_cache_chunk / cfg.chunk_tokens, trainer/train/memory.py) chunks this batch's shape.
    `apply_fn` is the model's (as_apply_fn) or, for a packed batch, as_packed_apply_fn's."""
    columns = batch_columns(batch)
    loss_fn = make_loss_of_embeddings(cfg, batch)
    n_shards = 1 if mesh is None else data_shards(mesh)
    if "packed_ids" in batch:
        batch_size = batch["anchor_fp"].shape[0]
        chunking = Chunking(batch_size, n_shards, cfg.grad_cache_chunk, cfg.chunk_tokens)
        ids, pos, text = (batch[k] for k in PACKED_KEYS)
        n_texts = texts_per_shard(batch)
        source = batch.get(PACKED_SOURCE)
        arrays = (ids, pos, text, packed_token_ids(text, pos, batch_size, n_texts, source))
        n_chunks = chunking.packed_chunks(*ids.shape[1:])
        if n_chunks > 1:
            return cached_value_and_grad_packed(
                apply_fn,
                params,
                arrays,
                n_texts,
                loss_fn,
                len(columns),
                step_key,
                n_chunks,
                deterministic,
                mesh,
                source,
            )

        def packed_loss(p):
            embs = apply_fn(p, *arrays, n_texts, deterministic, step_key)
            return loss_fn(packed_to_columns(embs.astype(jnp.float32), len(columns), source))

        return jax.value_and_grad(packed_loss)(params)
    ids, masks = stack_columns(batch, columns)
    token_ids = padded_token_ids(*ids.shape)
    chunking = Chunking(ids.shape[1], n_shards, cfg.grad_cache_chunk, cfg.chunk_tokens)
    chunk = chunking.padded_chunk(len(columns), ids.shape[2])
    if chunk:
        return cached_value_and_grad(
            apply_fn, params, ids, masks, token_ids, loss_fn, step_key, chunk, deterministic, mesh
        )

    def full_loss(p):
        embs = jnp.stack(
            [
                apply_fn(p, ids[c], masks[c], token_ids[c], deterministic, step_key).astype(jnp.float32)
                for c in range(len(columns))
            ]
        )
        return loss_fn(embs)

    return jax.value_and_grad(full_loss)(params)


def batch_program_shape(batch: Mapping[str, Any], cfg: TrainConfig, n_shards: int) -> Shape:
    """The `shapes.Shape` of a global batch's arrays (what the planner and the preflight call its program)."""
    columns = batch_columns(batch)
    kind = "triplet" if len(columns) == 3 else "pair"
    batch_size = batch["anchor_fp"].shape[0]
    chunking = Chunking(batch_size, n_shards, cfg.grad_cache_chunk, cfg.chunk_tokens)
    if "packed_ids" in batch:
        rows, length = batch["packed_ids"].shape[1:]
        return Shape(kind, True, rows, length, chunking.packed_chunks(rows, length))
    length = batch["anchor_ids"].shape[1]
    chunk = chunking.padded_chunk(len(columns), length)
    return Shape(kind, False, batch_size // n_shards, length, batch_size // chunk if chunk else 1)


def sharded_update(
    state: TrainState, grads: Any, finite: jax.Array, tx: optax.GradientTransformation, grad_sharding: Any, rep: Any
) -> TrainState:
    """ZeRO-2's update: AdamW on each device's shard of the gradients and moments; the updates (not the
    new parameters) are all-gathered and added to the replicated parameters in place, so the donated
    parameter buffers are written once, after the backward pass. (A `lax.cond` over the state, or
    all-gathering the new parameters, makes the compiler copy every float32 parameter at the start of
    the step, a copy held through the backward pass: docs/tpu.md, "ZeRO-2".) A non-finite step keeps
    the old state by a select on each leaf (p + u is the same float either way)."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    updates = jax.lax.with_sharding_constraint(updates, grad_sharding)
    updates = jax.lax.with_sharding_constraint(updates, jax.tree_util.tree_map(lambda _: rep, updates))

    def keep(new, old):
        return jnp.where(finite, new, old)

    return state.replace(
        step=state.step + finite.astype(state.step.dtype),
        params=jax.tree_util.tree_map(lambda p, u: keep(optax.apply_updates(p, u), p), state.params, updates),
        opt_state=jax.tree_util.tree_map(keep, opt_state, state.opt_state),
    )


def make_train_step(
    model: Any,
    cfg: TrainConfig,
    mesh: Mesh,
    *,
    state_sharding: Any = None,
    tx: optax.GradientTransformation | None = None,
    dropout: bool = True,
    donate: bool = True,
    memory_budget: int | None = None,
):
    """jit(step)(state, batch) -> (state, metrics{loss, grad_norm, learning_rate, finite}).

    `batch`: dict of `anchor_ids/anchor_mask/positive_ids/positive_mask[/negative_*]` int32 [B, L] (or
    packed rows, trainer/data/packing.py) and `*_fp` int32 [B] (global arrays from `mesh.shard_batch`, or
    NumPy arrays in a single process). `state_sharding`: `train_state_sharding(state, cfg, mesh)`
    (required with cfg.shard_optimizer; default replicated). `dropout=False` runs the encoder
    deterministically (tests). The state argument is donated. With cfg.remat "auto" each batch shape's
    program runs the model under its own remat mode (memory.RematPlan), against `memory_budget` bytes
    per device (default: memory.memory_budget, the flag or the device's limit).
    """
    validate_loss_options(cfg.pair_directions, cfg.partition_mode)
    validate_loss_options(cfg.triplet_directions, cfg.partition_mode)
    if state_sharding is None:
        if cfg.shard_optimizer and data_shards(mesh) > 1:
            raise ValueError("shard_optimizer needs state_sharding=train_state_sharding(state, cfg, mesh)")
        state_sharding = replicated(mesh)
    apply_fn = as_apply_fn(model)
    tx = tx or make_optimizer(cfg)
    schedule = learning_rate_schedule(cfg)
    n_shards = data_shards(mesh)
    auto = cfg.remat == "auto" and isinstance(model, nn.Module)
    if auto and memory_budget is None:
        memory_budget = device_budget(cfg, mesh.devices.flat[0])

    def step(state: TrainState, batch: Mapping[str, jax.Array]):
        packed = "packed_ids" in batch
        check_batch_layout(batch["anchor_fp"].shape[0], mesh, cfg.grad_cache_chunk)
        step_key = jax.random.fold_in(state.rng, state.step)
        m, fn = model, apply_fn
        if auto:  # traced once per batch shape: the mode is static in each program
            plan = remat_plan(cfg, model.config, state, state_sharding, memory_budget)
            m = model.clone(remat=plan.for_shape(batch_program_shape(batch, cfg, n_shards)))
            fn = as_apply_fn(m)
        fn = as_packed_apply_fn(m) if packed else fn
        gshard = gradient_shardings(state.params, mesh, cfg.shard_optimizer)
        loss, grads = loss_and_grads(
            fn, state.params, batch, cfg, step_key, not dropout, mesh if n_shards > 1 else None
        )
        if gshard is not None:  # XLA shards them so by itself (the same program either way): stated, not forced
            grads = jax.lax.with_sharding_constraint(grads, gshard)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if gshard is not None:
            new = sharded_update(state, grads, finite, tx, gshard, replicated(mesh))
        else:

            def update(state):
                updates, opt_state = tx.update(grads, state.opt_state, state.params)
                return state.replace(
                    step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
                )

            # A branch, not a select over the whole state: one pass over params and moments fewer.
            new = jax.lax.cond(finite, update, lambda state: state, state)
        metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(state.step), "finite": finite}
        return new, metrics

    return jax.jit(
        step,
        in_shardings=(state_sharding, batch_sharding(mesh)),
        out_shardings=(state_sharding, replicated(mesh)),
        donate_argnums=(0,) if donate else (),
    )
