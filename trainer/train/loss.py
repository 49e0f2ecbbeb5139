"""The losses by name (`LOSSES`, TrainConfig.loss), and the default: the in-batch-negatives contrastive
loss (MultipleNegativesRankingLoss) over the global batch.

A loss entry maps (cfg, batch) to a function of the embeddings of one batch, [C, B, H] (C: anchor,
positive[, negative] columns; any layout, padded or packed, gives the same array) -> a float32 scalar.
The step differentiates that function as it is, through gradient caching and the Matryoshka sizes
(trainer/train/train_step.py `make_loss_of_embeddings`); a new loss is a function and its
`register_loss` line (docs/extending.md, "A new loss").

Same numbers as sentence-transformers 6's `MultipleNegativesRankingLoss` (cos_sim, no hardness
weighting, no cross-device gather: under jit the whole global batch is one array), plus optional
masking of false negatives by text fingerprint, which ST leaves to its no-duplicates sampler.

Rows and candidate pools per direction (B anchors q, B positives d+, optional B hard negatives d-;
"docs" = [d+ ; d-], 2B columns for triplets, B for pairs):

- query_to_doc:   row q_i  vs docs; the true pair is column i (d+_i).
- doc_to_query:   row d+_i vs all q; the true pair is column i (q_i).
- query_to_query: row q_i  vs all q; column i (q_i itself) always removed.
- doc_to_doc:     row d+_i vs docs; the docs of pair i (d+_i, d-_i) always removed.

The positive score is always sim(q_i, d+_i) * scale. `joint`: one softmax over the concatenation of
the selected directions' rows; `per_direction`: one log-partition per direction, averaged (ST forbids
per_direction with query_to_query / doc_to_doc, and so do we).

False-negative masking (`mask_false_negatives=True`), by int fingerprints (equal texts => equal
fingerprint). Row i of each direction has a *row text* and a *target text*:
  query_to_doc / query_to_query rows: row text q_i, target text d+_i;
  doc_to_query / doc_to_doc rows:     row text d+_i, target text q_i.
A candidate column that is not the row's true-pair column is set to -inf when its fingerprint equals
the row's target fingerprint (the candidate is the same text as the answer: a false negative) or
the row's own fingerprint (the candidate is a copy of the row's text, e.g. a duplicate question in
a symmetric corpus or a hard negative equal to the query). The true-pair column is never masked.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from trainer.config import validate_loss_options


def _normalize(x: jax.Array) -> jax.Array:
    # Same epsilon as torch.nn.functional.normalize (used by ST's cos_sim).
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, 1e-12)


def _mask_columns(sim, row_fps, target_fps, col_fps, true_col):
    """-inf where a column (not the true pair) repeats the row's own or target text."""
    same = (col_fps[None, :] == target_fps[:, None]) | (col_fps[None, :] == row_fps[:, None])
    if true_col is not None:
        same = same & (jnp.arange(sim.shape[1])[None, :] != true_col[:, None])
    return jnp.where(same, -jnp.inf, sim)


def contrastive_loss(
    anchor: jax.Array,
    positive: jax.Array,
    negative: jax.Array | None = None,
    *,
    anchor_fp: jax.Array | None = None,
    positive_fp: jax.Array | None = None,
    negative_fp: jax.Array | None = None,
    scale: float = 20.0,
    directions: Sequence[str] = ("query_to_doc",),
    partition_mode: str = "joint",
    mask_false_negatives: bool = True,
) -> jax.Array:
    """Mean cross entropy of the true pair against in-batch candidates; float32 scalar.

    anchor, positive, negative: [B, H] embeddings (any float dtype; computed in float32).
    *_fp: int [B] text fingerprints, required when mask_false_negatives is True.
    """
    directions = validate_loss_options(directions, partition_mode)
    if mask_false_negatives and (
        anchor_fp is None or positive_fp is None or (negative is not None and negative_fp is None)
    ):
        raise ValueError("mask_false_negatives needs anchor_fp, positive_fp (and negative_fp for triplets)")
    q = _normalize(anchor.astype(jnp.float32))
    dpos = _normalize(positive.astype(jnp.float32))
    b = q.shape[0]
    docs = dpos if negative is None else jnp.concatenate([dpos, _normalize(negative.astype(jnp.float32))])
    rows = jnp.arange(b)
    hi = jax.lax.Precision.HIGHEST  # exact float32 matmul (TPU/GPU default to bf16 passes)

    if mask_false_negatives:
        doc_fps = positive_fp if negative is None else jnp.concatenate([positive_fp, negative_fp])

    sims = []
    # query_to_doc [B, B*(1+n)]
    s = jnp.matmul(q, docs.T, precision=hi) * scale
    positive_scores = s[rows, rows]
    if mask_false_negatives:
        s = _mask_columns(s, anchor_fp, positive_fp, doc_fps, rows)
    sims.append(s)
    if "query_to_query" in directions:
        s = jnp.matmul(q, q.T, precision=hi) * scale
        s = jnp.where(jnp.eye(b, dtype=bool), -jnp.inf, s)
        if mask_false_negatives:
            s = _mask_columns(s, anchor_fp, positive_fp, anchor_fp, None)
        sims.append(s)
    if "doc_to_query" in directions:
        s = jnp.matmul(dpos, q.T, precision=hi) * scale
        if mask_false_negatives:
            s = _mask_columns(s, positive_fp, anchor_fp, anchor_fp, rows)
        sims.append(s)
    if "doc_to_doc" in directions:
        s = jnp.matmul(dpos, docs.T, precision=hi) * scale
        n_cols = docs.shape[0] // b
        own = jnp.tile(jnp.eye(b, dtype=bool), (1, n_cols))
        s = jnp.where(own, -jnp.inf, s)
        if mask_false_negatives:
            s = _mask_columns(s, positive_fp, anchor_fp, doc_fps, None)
        sims.append(s)

    if partition_mode == "joint":
        log_z = jax.nn.logsumexp(jnp.concatenate(sims, axis=1), axis=1)
    else:
        log_z = sum(jax.nn.logsumexp(s, axis=1) for s in sims) / len(sims)
    return jnp.mean(log_z - positive_scores)


# (cfg, batch) -> loss of the batch's [C, B, H] embeddings.
LossFactory = Callable[[Any, Mapping[str, Any]], Callable[[jax.Array], jax.Array]]
LOSSES: dict[str, LossFactory] = {}


def register_loss(name: str, factory: LossFactory) -> LossFactory:
    """Add a loss to the registry under `name` (the value of --loss); a name taken is a ValueError."""
    if name in LOSSES:
        raise ValueError(f"a loss named {name!r} is registered already")
    LOSSES[name] = factory
    return factory


def loss_named(name: str) -> LossFactory:
    """The registered loss `name`, or a ValueError naming the registered ones."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; registered: {', '.join(LOSSES)}")
    return LOSSES[name]


def contrastive_from_config(cfg: Any, batch: Mapping[str, Any]) -> Callable[[jax.Array], jax.Array]:
    """`contrastive_loss` with cfg's scale, masking and partition mode, and the directions of the batch's
    kind: cfg.triplet_directions for three columns (a negative), else cfg.pair_directions."""

    def loss(embs: jax.Array) -> jax.Array:
        triplet = embs.shape[0] == 3
        return contrastive_loss(
            embs[0],
            embs[1],
            embs[2] if triplet else None,
            anchor_fp=batch.get("anchor_fp"),
            positive_fp=batch.get("positive_fp"),
            negative_fp=batch.get("negative_fp"),
            scale=cfg.scale,
            directions=cfg.triplet_directions if triplet else cfg.pair_directions,
            partition_mode=cfg.partition_mode,
            mask_false_negatives=cfg.mask_false_negatives,
        )

    return loss


register_loss("contrastive", contrastive_from_config)
