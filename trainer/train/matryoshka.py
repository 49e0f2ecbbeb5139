"""Matryoshka embeddings (Kusupati et al. 2022): the loss at several leading sizes of one embedding.

`matryoshka_loss` is sentence-transformers' `MatryoshkaLoss(model, MultipleNegativesRankingLoss(...),
dims, weights)`: sum over d of weight_d x the contrastive loss of the embeddings cut to their first d
components (the loss re-normalises them, as ST's `shrink` does). It acts on the [C, B, H] embeddings
of one forward pass, so packing, gradient caching and the mesh need nothing of their own: they all
hand the loss the same array (trainer/train_step.make_loss_of_embeddings). ST's `n_dims_per_step`
(a random subset of sizes per step) is not offered: it saves loss computation, which here is a few
[B, B] matrices beside the encoder's passes.

`truncate` is the evaluation side: the first d components, re-normalised, so every evaluator can
report each size from the embeddings it computed once (metric names: `dim_metric`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def matryoshka_loss(
    loss_of_embeddings: Callable[[jax.Array], jax.Array],
    embs: jax.Array,
    dims: Sequence[int],
    weights: Sequence[float] = (),
) -> jax.Array:
    """sum_d weight_d * loss_of_embeddings(embs[..., :d]); the plain loss when dims is empty.
    `loss_of_embeddings` must normalise its inputs (trainer/loss.contrastive_loss does)."""
    if not dims:
        return loss_of_embeddings(embs)
    weights = jnp.asarray(tuple(weights) or (1.0,) * len(dims), jnp.float32)
    # Zeroing the components past d is cutting at d (zeros change no norm or dot product), and gives
    # every size one shape: one vmapped loss, not a copy of the loss's program per size (XLA compiles
    # the train step several seconds faster on CPU with five sizes).
    keep = jnp.arange(embs.shape[-1])[None, :] < jnp.asarray(dims)[:, None]  # [n_dims, H]
    losses = jax.vmap(lambda m: loss_of_embeddings(jnp.where(m, embs, 0)))(keep)
    return jnp.sum(weights * losses)


def eval_dims(dims: Sequence[int], hidden_size: int) -> tuple[int, ...]:
    """The sizes evaluation reports besides the full embedding: the Matryoshka sizes below it, largest first."""
    return tuple(sorted({d for d in dims if d < hidden_size}, reverse=True))


def truncate(x: np.ndarray, dim: int | None) -> np.ndarray:
    """The first `dim` components of each row, L2-normalised (float32); `dim=None`: `x` as it is."""
    if dim is None:
        return x
    x = np.asarray(x, np.float32)[..., :dim]
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def dim_metric(name: str, dim: int | None) -> str:
    """A metric's name at a Matryoshka size: eval/x -> eval/dim<d>/x (None: the full size, unchanged)."""
    if dim is None:
        return name
    head, _, tail = name.partition("/")
    return f"{head}/dim{dim}/{tail}"
