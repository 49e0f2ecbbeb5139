"""How a train step fits in device memory, without changing its math.

Three levers, each a `TrainConfig` field (the `reference` preset's choice and the compiler figures
behind it: docs/training_step.md, "Memory plan"):

- `chunk_tokens`: per device, the most tokens whose activations one encoder pass holds. A batch shape
  over it is embedded in gradient-caching chunks (trainer/train/grad_cache.py) of at most that many tokens
  (the chunk count of each shape: trainer/data/shapes.py `Chunking`);
  shapes under it take the plain step. Chosen per shape, statically, from the batch's array shape, so
  short-text corpora never pay the extra forward pass that long-text corpora need.
- `shard_optimizer` (ZeRO stage 1): AdamW's two moments are sharded over the `data` axis instead of
  replicated; parameters and gradients stay replicated, and XLA turns the update into a sharded update
  plus an all-gather of the new parameters. For roberta-large on 8 devices the state per device drops
  from 3.96 to 1.65 GiB: 2.31 GiB per device freed (tests/test_memory.py computes it).
- `adam_mu_dtype`: the first moment in bfloat16 (optax's `mu_dtype`; the second moment stays float32).
- `remat` (trainer/model/modeling.py REMAT_POLICIES): recompute parts of each block in the backward pass.

Dropout is a function of each token's identity (modeling.dropout_token_ids), so every plan gives the
same losses and gradients (tests/test_layout_invariance.py).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from trainer.mesh import DATA_AXIS, data_shards, replicated


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
    return state.replace(step=rep, params=jax.tree_util.tree_map(lambda _: rep, state.params), opt_state=opt, rng=rep)


def state_bytes_per_device(state: Any, shardings: Any) -> int:
    """Bytes of the state one device holds under `shardings` (shapes only; works on abstract states)."""
    total = 0
    for x, s in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(shardings)):
        shard = s.shard_shape(np.shape(x)) if np.ndim(x) else ()
        total += math.prod(shard) * np.dtype(x.dtype).itemsize
    return total
