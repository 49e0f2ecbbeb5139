"""How a train step fits in device memory, without changing its math.

Three levers, each a `TrainConfig` field (the `reference` preset's choice and the compiler figures
behind it: docs/training_step.md, "Memory plan"):

- `chunk_tokens`: per device, the most tokens whose activations one encoder pass holds. A batch shape
  over it is embedded in gradient-caching chunks (trainer/train/grad_cache.py) of at most that many tokens
  (the chunk count of each shape: trainer/data/shapes.py `Chunking`);
  shapes under it take the plain step. Chosen per shape, statically, from the batch's array shape, so
  short-text corpora never pay the extra forward pass that long-text corpora need.
- `shard_optimizer` (ZeRO stage 2): AdamW's two moments are sharded over the `data` axis instead of
  replicated, and so are the gradients (`gradient_shardings`: each one as its moments) and the update;
  the parameters stay replicated, and the step all-gathers the updates and adds them in place
  (train_step.sharded_update). For roberta-large on 8 devices the state per device drops from 3.96 to
  1.65 GiB: 2.31 GiB per device freed (tests/test_memory.py computes it); the in-place update frees a
  float32 copy of the parameters that ZeRO-1's update held through the backward pass (`ZERO2_PARAM_COPIES`).
- `adam_mu_dtype`: the first moment in bfloat16 (optax's `mu_dtype`; the second moment stays float32).
- `remat` (trainer/model/modeling.py REMAT_POLICIES): recompute parts of each block in the backward pass;
  `auto` chooses per compiled program shape (`RematPlan`): none where the step fits, else as few
  layers under `dots`, then `qkv`, then `full` as make it fit.

Dropout is a function of each token's identity (modeling.dropout_token_ids), so every plan gives the
same losses and gradients (tests/test_layout_invariance.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from trainer.mesh import DATA_AXIS, data_shards, replicated
from trainer.model.modeling import layer_modes, remat_mix


def moment_spec(shape: tuple[int, ...], n_shards: int) -> P:
    """Shard an optimizer moment on its first axis that divides over the devices (replicate if none:
    scalars, odd-sized vectors). roberta-large's word embeddings [50265, 1024] shard on the hidden axis."""
    for axis, size in enumerate(shape):
        if size % n_shards == 0 and size >= n_shards:
            return P(*([None] * axis + [DATA_AXIS]))
    return P()


def state_shardings(state: Any, mesh: Mesh, shard_optimizer: bool) -> Any:
    """Shardings of a TrainState: all replicated, or (ZeRO) the optimizer state's arrays sharded."""
    rep = replicated(mesh)
    if not shard_optimizer or data_shards(mesh) == 1:
        return jax.tree_util.tree_map(lambda _: rep, state)
    opt = _like_moments(state.opt_state, mesh)
    return state.replace(step=rep, params=jax.tree_util.tree_map(lambda _: rep, state.params), opt_state=opt, rng=rep)


def gradient_shardings(params: Any, mesh: Mesh, shard_optimizer: bool) -> Any:
    """ZeRO-2: each gradient sharded as its moments are (`moment_spec`), so the step reduce-scatters it
    where it is produced and updates its shard; None (replicated gradients) without shard_optimizer."""
    if not shard_optimizer or data_shards(mesh) == 1:
        return None
    return _like_moments(params, mesh)


def _like_moments(tree: Any, mesh: Mesh) -> Any:
    """Each array of `tree` sharded over the data axis as `moment_spec` places it."""
    n = data_shards(mesh)
    return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, moment_spec(np.shape(x), n)), tree)


def state_bytes_per_device(state: Any, shardings: Any) -> int:
    """Bytes of the state one device holds under `shardings` (shapes only; works on abstract states)."""
    total = 0
    for x, s in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(shardings)):
        shard = s.shard_shape(np.shape(x)) if np.ndim(x) else ()
        total += math.prod(shard) * np.dtype(x.dtype).itemsize
    return total


# ------------------------------------------------------------------------------------- remat per shape
#
# What one pass keeps for its backward pass, in bytes per token, per layer and per hidden unit at a
# 2-byte compute dtype (float32 doubles it), with modeling.attention (nothing of the scores' size is
# kept), plus a fixed part in float32 copies of the parameters (the gradient, the update's
# temporaries). Fitted to the TPU compiler's temporaries for roberta-large per v3 core (libtpu
# 0.0.42.1; docs/tpu.md "Remat per program shape"): "none" 11.30 GiB at 132 x 128 and 17.66 at
# 256 x 128 (slope and fixed part), "qkv" 11.74 at 256 x 128; "dots" keeps 5.5 more than "qkv" (the
# compiler's 4-layer roberta-large at 256 x 128: +0.172 GiB a layer; its 24-layer mixes at 246-256
# rows come out 0.01-0.13 GiB above the estimate, within the headroom). "full" keeps each block's input
# (FULL_KEPT_BYTES) plus one block's activations while it is recomputed (not fitted). AUTO_HEADROOM:
# the share of the budget an estimate may fill (what a linear fit misses: other models' shapes,
# gradient caching's embeddings, another libtpu).
ACTIVATION_BYTES = {"none": 17.5, "dots": 15.1, "qkv": 9.6}
FULL_KEPT_BYTES = 2.0
FIXED_PARAM_COPIES = 3.43
# The fixed part under ZeRO-2's update (shard_optimizer on more than one device: train_step.sharded_update,
# which frees the float32 parameter copy ZeRO-1's update held through the backward pass): fitted to the
# compiler's pair 256 x 128 under dots:7,qkv:17, 12.60 GiB of temporaries (13.06 under ZeRO-1's update);
# its pair 132 x 128 under "none" (11.20, was 11.30) comes out 0.24 GiB above the estimate, within the headroom.
ZERO2_PARAM_COPIES = 3.17
AUTO_HEADROOM = 0.95
# Modes by recomputed FLOPs (trainer/plan/flops.py), the fewest first; each frees more bytes per
# recomputed FLOP than the next, so `auto` moves layers from one to the next, a layer at a time, and
# past qkv recomputes every block whole (a mix with "full" would add a block's transient activations).
AUTO_ORDER = ("none", "dots", "qkv", "full")
_MIXED = AUTO_ORDER[:-1]


@dataclasses.dataclass(frozen=True)
class RematPlan:
    """The remat mode of each compiled program: `mode` (cfg.remat) everywhere, or for "auto" the first
    candidate (`auto_candidates`: every layer under one of AUTO_ORDER, or the layers split between
    none and dots or dots and qkv, the fewest recomputed FLOPs first) whose estimated bytes per device fit
    AUTO_HEADROOM of `budget` (None: no limit, as on CPU: "none"). A pure function of the shape and the
    configuration, so every host picks the same program; the parameter tree is the same under every
    mode (checkpoints interchange)."""

    mode: str
    hidden: int
    layers: int
    dtype_bytes: int  # the compute dtype's
    state_bytes: int  # per device: parameters and optimizer state under the plan's sharding
    param_bytes: int  # float32 parameters (the gradient's size)
    budget: int | None
    fixed_copies: float = FIXED_PARAM_COPIES  # ZERO2_PARAM_COPIES when the update is sharded

    def estimate(self, mode: str, tokens: int) -> int:
        """Bytes per device of a pass over `tokens` tokens per device under `mode` (a mix included)."""
        modes = layer_modes(mode, self.layers)
        kept = sum(FULL_KEPT_BYTES if m == "full" else ACTIVATION_BYTES[m] for m in modes)
        if "full" in modes:  # one block's activations while it is recomputed
            kept += ACTIVATION_BYTES["none"]
        scale = tokens * self.hidden * self.dtype_bytes / 2
        return int(self.state_bytes + self.fixed_copies * self.param_bytes + scale * kept)

    def auto_candidates(self) -> list[str]:
        """`auto`'s choices in order: none, then layer by layer to dots and to qkv, then full."""
        out = [AUTO_ORDER[0]]
        for cheap, dear in zip(_MIXED, _MIXED[1:]):
            out += [remat_mix({cheap: self.layers - k, dear: k}) for k in range(1, self.layers + 1)]
        return out + list(AUTO_ORDER[len(_MIXED) :])

    def for_tokens(self, tokens: int) -> str:
        """The mode of a pass over `tokens` tokens per device (a chunk's, for gradient caching)."""
        if self.mode != "auto":
            return self.mode
        if self.budget is None:
            return "none"
        room = AUTO_HEADROOM * self.budget
        candidates = self.auto_candidates()
        return next((m for m in candidates if self.estimate(m, tokens) <= room), candidates[-1])

    def for_shape(self, shape: Any) -> str:
        """The mode of a `shapes.Shape`'s program (one pass: a chunk's tokens when it is chunked)."""
        return self.for_tokens(pass_tokens(shape))

    def shape_estimate(self, shape: Any) -> int:
        """Estimated bytes per device of a `shapes.Shape`'s program under its mode."""
        return self.estimate(self.for_shape(shape), pass_tokens(shape))


def pass_tokens(shape: Any) -> int:
    """Tokens per device of one encoder pass of a `shapes.Shape` (a chunk's when it is chunked)."""
    return -(-shape.tokens_per_device // shape.chunks)


def remat_plan(cfg: Any, enc: Any, state: Any, shardings: Any, budget: int | None) -> RematPlan:
    """cfg.remat's plan for the encoder config `enc` and a (possibly abstract) TrainState with its
    `shardings` (a tree, or one sharding for all), against `budget` bytes per device."""
    import jax.numpy as jnp

    if not isinstance(shardings, type(state)):
        shardings = jax.tree_util.tree_map(lambda _: shardings, state)
    n_params = sum(math.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(state.params))
    # The step's update is ZeRO-2's (train_step.sharded_update) where the moments are sharded.
    sharded = any(not getattr(s, "is_fully_replicated", True) for s in jax.tree_util.tree_leaves(shardings.opt_state))
    return RematPlan(
        cfg.remat,
        enc.hidden_size,
        enc.num_hidden_layers,
        jnp.dtype(jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32).itemsize,
        state_bytes_per_device(state, shardings),
        4 * n_params,
        budget,
        ZERO2_PARAM_COPIES if sharded else FIXED_PARAM_COPIES,
    )


def memory_budget(cfg: Any, device: Any) -> int | None:
    """Bytes per device to fit in: the flag, else the device's limit, else None (no limit known)."""
    if cfg.memory_budget_gib > 0:
        return int(cfg.memory_budget_gib * 1024**3)
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 -- backends without memory statistics
        stats = {}
    limit = stats.get("bytes_limit")
    return int(limit) if limit else None
