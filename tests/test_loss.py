"""Contrastive loss: parity with sentence-transformers' MultipleNegativesRankingLoss, and masking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from sentence_transformers.sentence_transformer.losses.multiple_negatives_ranking import (
    MultipleNegativesRankingLoss,
)

from trainer.train.loss import contrastive_loss

jax.config.update("jax_enable_x64", False)

B, H = 8, 16


def _embeddings(seed, n_cols, b=B, h=H):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(b, h)).astype(np.float32) for _ in range(n_cols)]


def _st_loss_and_grads(cols, directions, partition_mode, scale=20.0):
    tensors = [torch.tensor(c, dtype=torch.float64, requires_grad=True) for c in cols]
    st = MultipleNegativesRankingLoss(None, scale=scale, directions=directions, partition_mode=partition_mode)
    loss = st.compute_loss_from_embeddings(tensors, labels=None)
    loss.backward()
    return loss.item(), [t.grad.numpy() for t in tensors]


def _ours_loss_and_grads(cols, directions, partition_mode, scale=20.0):
    def f(*embs):
        neg = embs[2] if len(embs) == 3 else None
        return contrastive_loss(
            embs[0],
            embs[1],
            neg,
            scale=scale,
            directions=directions,
            partition_mode=partition_mode,
            mask_false_negatives=False,
        )

    loss, grads = jax.value_and_grad(f, argnums=tuple(range(len(cols))))(*[jnp.asarray(c) for c in cols])
    return float(loss), [np.asarray(g) for g in grads]


CASES = [
    # (n_cols, directions, partition_mode): the reference configurations first.
    (3, ("query_to_doc",), "joint"),
    (2, ("query_to_doc", "doc_to_query"), "per_direction"),
    (2, ("query_to_doc",), "joint"),
    (2, ("query_to_doc", "doc_to_query"), "joint"),
    (3, ("query_to_doc", "doc_to_query"), "per_direction"),
    (2, ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"), "joint"),
    (3, ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"), "joint"),
    (3, ("query_to_doc", "doc_to_doc"), "joint"),
]


@pytest.mark.parametrize("n_cols,directions,partition_mode", CASES)
def test_matches_sentence_transformers_loss_and_embedding_gradients(n_cols, directions, partition_mode):
    cols = _embeddings(0, n_cols)
    st_loss, st_grads = _st_loss_and_grads(cols, directions, partition_mode)
    loss, grads = _ours_loss_and_grads(cols, directions, partition_mode)
    assert loss == pytest.approx(st_loss, rel=1e-4)
    assert loss > 0.1  # a real loss, not a degenerate zero
    for g, sg in zip(grads, st_grads):
        np.testing.assert_allclose(g, sg, rtol=1e-4, atol=1e-4 * np.abs(sg).max())


def _reference_masked_loss(cols, fps, directions, partition_mode, scale=20.0):
    """Float64 loss that builds each row's candidate list explicitly, dropping masked columns."""
    q, dp = [c / np.linalg.norm(c, axis=1, keepdims=True) for c in cols[:2]]
    docs = [dp] + ([cols[2] / np.linalg.norm(cols[2], axis=1, keepdims=True)] if len(cols) == 3 else [])
    docs_all = np.concatenate(docs)
    afp, pfp = fps[0], fps[1]
    doc_fps = np.concatenate(fps[1:])
    b = len(q)
    losses = []
    for i in range(b):
        pools = {}
        keep = [c for c in range(len(docs_all)) if c == i or (doc_fps[c] != pfp[i] and doc_fps[c] != afp[i])]
        pools["query_to_doc"] = [q[i] @ docs_all[c] for c in keep]
        if "query_to_query" in directions:
            pools["query_to_query"] = [
                q[i] @ q[j] for j in range(b) if j != i and afp[j] != afp[i] and afp[j] != pfp[i]
            ]
        if "doc_to_query" in directions:
            pools["doc_to_query"] = [
                dp[i] @ q[j] for j in range(b) if j == i or (afp[j] != afp[i] and afp[j] != pfp[i])
            ]
        if "doc_to_doc" in directions:
            pools["doc_to_doc"] = [
                dp[i] @ docs_all[c]
                for c in range(len(docs_all))
                if c % b != i and doc_fps[c] != pfp[i] and doc_fps[c] != afp[i]
            ]
        pos = scale * (q[i] @ dp[i])
        lse = lambda xs: np.log(np.sum(np.exp(scale * np.asarray(xs, dtype=np.float64))))
        if partition_mode == "joint":
            log_z = lse([x for p in pools.values() for x in p])
        else:
            log_z = np.mean([lse(p) for p in pools.values()])
        losses.append(log_z - pos)
    return float(np.mean(losses))


def _planted_batch(n_cols):
    cols = _embeddings(1, n_cols)
    # Fingerprints: distinct texts get distinct ids; plant duplicates by copying text and embedding.
    fps = [np.arange(B, dtype=np.int32) + 100 * k for k in range(n_cols)]
    # anchor 3's positive is the same text as anchor 5's positive (duplicate positive).
    fps[1][3] = fps[1][5]
    cols[1][3] = cols[1][5]
    # anchors 0 and 6 are the same question (duplicate anchors).
    fps[0][6] = fps[0][0]
    cols[0][6] = cols[0][0]
    # positive 2 is the same text as anchor 4 (symmetric corpus).
    fps[1][2] = fps[0][4]
    cols[1][2] = cols[0][4]
    if n_cols == 3:
        # the hard negative of pair 1 is the positive of pair 7; the hard negative of pair 4 is its own query.
        fps[2][1] = fps[1][7]
        cols[2][1] = cols[1][7]
        fps[2][4] = fps[0][4]
        cols[2][4] = cols[0][4]
    return cols, fps


MASK_CASES = [
    (2, ("query_to_doc",), "joint"),
    (3, ("query_to_doc",), "joint"),
    (2, ("query_to_doc", "doc_to_query"), "per_direction"),
    (3, ("query_to_doc", "doc_to_query"), "joint"),
    (3, ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"), "joint"),
]


@pytest.mark.parametrize("n_cols,directions,partition_mode", MASK_CASES)
def test_false_negative_mask_equals_loss_with_columns_removed(n_cols, directions, partition_mode):
    cols, fps = _planted_batch(n_cols)
    expected = _reference_masked_loss(cols, fps, directions, partition_mode)
    neg = jnp.asarray(cols[2]) if n_cols == 3 else None
    nfp = jnp.asarray(fps[2]) if n_cols == 3 else None
    masked = float(
        contrastive_loss(
            jnp.asarray(cols[0]),
            jnp.asarray(cols[1]),
            neg,
            anchor_fp=jnp.asarray(fps[0]),
            positive_fp=jnp.asarray(fps[1]),
            negative_fp=nfp,
            directions=directions,
            partition_mode=partition_mode,
        )
    )
    unmasked = float(
        contrastive_loss(
            jnp.asarray(cols[0]),
            jnp.asarray(cols[1]),
            neg,
            directions=directions,
            partition_mode=partition_mode,
            mask_false_negatives=False,
        )
    )
    assert masked == pytest.approx(expected, rel=1e-5)
    # The planted duplicates are near-perfect "negatives": removing them must lower the loss.
    assert masked < unmasked - 0.05


def test_mask_without_duplicates_changes_nothing():
    cols = _embeddings(2, 3)
    fps = [jnp.arange(B) + 100 * k for k in range(3)]
    args = [jnp.asarray(c) for c in cols]
    a = contrastive_loss(*args, anchor_fp=fps[0], positive_fp=fps[1], negative_fp=fps[2])
    b = contrastive_loss(*args, mask_false_negatives=False)
    assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_masked_gradients_are_finite_and_zero_for_fully_masked_copies():
    cols, fps = _planted_batch(3)
    fps = [jnp.asarray(f) for f in fps]

    def f(n):
        return contrastive_loss(
            jnp.asarray(cols[0]), jnp.asarray(cols[1]), n, anchor_fp=fps[0], positive_fp=fps[1], negative_fp=fps[2]
        )

    g = jax.grad(f)(jnp.asarray(cols[2]))
    assert np.isfinite(np.asarray(g)).all()
    # Negative 4 equals query 4; it is masked in row 4 but remains a candidate for other rows.
    assert np.abs(np.asarray(g)[4]).sum() > 0


def test_bfloat16_embeddings_are_computed_in_float32():
    cols = _embeddings(3, 2)
    f32 = contrastive_loss(*[jnp.asarray(c) for c in cols], mask_false_negatives=False)
    b16 = contrastive_loss(*[jnp.asarray(c, jnp.bfloat16) for c in cols], mask_false_negatives=False)
    assert b16.dtype == jnp.float32
    assert float(b16) == pytest.approx(float(f32), rel=2e-2)


@pytest.mark.parametrize(
    "directions,partition_mode,match",
    [
        (("doc_to_query",), "joint", "query_to_doc"),
        (("query_to_doc", "sideways"), "joint", "unknown"),
        (("query_to_doc", "doc_to_doc"), "per_direction", "per_direction"),
        (("query_to_doc",), "both", "partition_mode"),
    ],
)
def test_invalid_options_raise(directions, partition_mode, match):
    cols = [jnp.asarray(c) for c in _embeddings(4, 2)]
    with pytest.raises(ValueError, match=match):
        contrastive_loss(*cols, directions=directions, partition_mode=partition_mode, mask_false_negatives=False)


def test_masking_requires_fingerprints():
    cols = [jnp.asarray(c) for c in _embeddings(4, 2)]
    with pytest.raises(ValueError, match="fingerprint|_fp"):
        contrastive_loss(*cols)


@pytest.mark.parametrize("triplet", [False, True])
def test_end_to_end_through_a_tiny_encoder_matches_sentence_transformers(tmp_path, triplet):
    """Same random BERT in torch (ST) and Flax: loss and every parameter gradient agree."""
    from tests._tiny import TwinBert
    from trainer.config import TrainConfig

    twin = TwinBert(tmp_path, triplet=triplet)
    directions = ("query_to_doc",) if triplet else ("query_to_doc", "doc_to_query")
    mode = "joint" if triplet else "per_direction"
    st_loss, st_grads = twin.st_loss_and_grads(
        MultipleNegativesRankingLoss(twin.st, directions=directions, partition_mode=mode)
    )
    cfg = TrainConfig(
        triplet_directions=directions, pair_directions=directions, partition_mode=mode, mask_false_negatives=False
    )
    loss, grads = twin.our_loss_and_grads(cfg)
    assert loss == pytest.approx(st_loss, rel=1e-4)
    a, t = twin.common_gradients(grads, st_grads)
    assert np.linalg.norm(a - t) / np.linalg.norm(t) < 1e-4
