"""Optimizer: schedule values, the weight-decay mask on the real encoder tree, and AdamW + clipping
against a hand-written NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trainer.config import TrainConfig
from trainer.model.modeling import EncoderConfig, SentenceEncoder
from trainer.train.optimizer import learning_rate_schedule, make_optimizer, weight_decay_mask


def test_schedule_warms_up_then_decays_linearly_to_zero():
    sched = learning_rate_schedule(TrainConfig(learning_rate=1e-3, warmup_steps=10, train_steps=110))
    expected = {0: 0.0, 1: 1e-4, 5: 5e-4, 10: 1e-3, 35: 7.5e-4, 60: 5e-4, 109: 1e-5, 110: 0.0, 500: 0.0}
    for step, lr in expected.items():
        assert float(sched(step)) == pytest.approx(lr, abs=1e-9), step


def test_schedule_without_warmup_starts_at_peak():
    sched = learning_rate_schedule(TrainConfig(learning_rate=2e-5, warmup_steps=0, train_steps=100))
    assert float(sched(0)) == pytest.approx(2e-5)
    assert float(sched(50)) == pytest.approx(1e-5)


def test_decay_mask_excludes_biases_and_layer_norms_of_the_encoder():
    cfg = EncoderConfig(
        vocab_size=50,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    params = jax.eval_shape(
        lambda: SentenceEncoder(cfg).init(
            jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32)
        )
    )["params"]
    flat = {
        "/".join(str(k.key) for k in path): v
        for path, v in jax.tree_util.tree_flatten_with_path(weight_decay_mask(params))[0]
    }
    assert flat["encoder/layer_0/query/kernel"] is True
    assert flat["encoder/layer_0/intermediate/kernel"] is True
    assert flat["encoder/embeddings/word_embeddings/embedding"] is True
    assert flat["encoder/layer_0/query/bias"] is False
    assert flat["encoder/layer_0/attention_layer_norm/scale"] is False
    assert flat["encoder/layer_0/output_layer_norm/bias"] is False
    assert flat["encoder/embeddings/LayerNorm/scale"] is False
    decayed = sum(flat.values())
    assert decayed == 9  # 3 embeddings + 6 kernels
    assert len(flat) - decayed == 12  # 6 biases + 3 layer norms x 2


def _numpy_adamw(params, grads_seq, lrs, wd, b1, b2, eps, clip, decay):
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    p = {k: x.copy() for k, x in params.items()}
    for t, (g, lr) in enumerate(zip(grads_seq, lrs), start=1):
        norm = np.sqrt(sum((x**2).sum() for x in g.values()))
        g = {k: x * min(1.0, clip / norm) for k, x in g.items()}
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            upd = (m[k] / (1 - b1**t)) / (np.sqrt(v[k] / (1 - b2**t)) + eps)
            if decay[k]:
                upd = upd + wd * p[k]
            p[k] = p[k] - lr * upd
    return p


def test_adamw_with_clipping_matches_numpy_reference():
    cfg = TrainConfig(
        learning_rate=0.1, warmup_steps=1, train_steps=4, weight_decay=0.01, grad_clip_norm=1.0, adam_eps=1e-6
    )
    rng = np.random.default_rng(0)
    params = {
        "dense": {
            "kernel": rng.normal(size=(3, 2)).astype(np.float32),
            "bias": rng.normal(size=(2,)).astype(np.float32),
        }
    }
    # Step 1 is clipped (norm ~ 50), step 2 and 3 are not (norm < 1): clipping changes Adam's moments.
    grads = [
        {
            "dense": {
                "kernel": rng.normal(size=(3, 2)).astype(np.float32) * s,
                "bias": rng.normal(size=(2,)).astype(np.float32) * s,
            }
        }
        for s in (30.0, 0.1, 0.2)
    ]
    tx = make_optimizer(cfg)
    p = jax.tree_util.tree_map(jnp.asarray, params)
    state = tx.init(p)
    for g in grads:
        upd, state = tx.update(jax.tree_util.tree_map(jnp.asarray, g), state, p)
        p = jax.tree_util.tree_map(lambda a, b: a + b, p, upd)
    sched = learning_rate_schedule(cfg)
    lrs = [float(sched(i)) for i in range(3)]
    assert lrs == pytest.approx([0.0, 0.1, 2 / 30])
    flat = lambda t: {"kernel": t["dense"]["kernel"], "bias": t["dense"]["bias"]}
    expected = _numpy_adamw(
        flat(params), [flat(g) for g in grads], lrs, 0.01, 0.9, 0.999, 1e-6, 1.0, {"kernel": True, "bias": False}
    )
    for k in expected:
        np.testing.assert_allclose(np.asarray(flat(p)[k]), expected[k], rtol=1e-5, atol=1e-6)
    # And without clipping the result differs (the test can tell clipping apart).
    unclipped = _numpy_adamw(
        flat(params), [flat(g) for g in grads], lrs, 0.01, 0.9, 0.999, 1e-6, 1e9, {"kernel": True, "bias": False}
    )
    assert np.abs(unclipped["kernel"] - expected["kernel"]).max() > 1e-3
