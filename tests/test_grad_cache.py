"""Gradient caching: the chunk layout, exact loss and gradients against the plain step (pairs and
triplets, several chunk sizes), the same dropout in both passes, and the 8-device mesh."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests._tiny import random_batch, run_on_cpu_devices, tiny_model
from trainer.config import TrainConfig
from trainer.train.grad_cache import embed_in_chunks, from_chunks, stack_columns, to_chunks
from trainer.train.train_step import (
    as_apply_fn,
    batch_columns,
    loss_and_grads,
    make_loss_of_embeddings,
    padded_token_ids,
)

CFG = TrainConfig()


def _leaves(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(tree)])


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_chunk_layout_takes_rows_from_every_shard_and_round_trips():
    x = jnp.arange(2 * 16).reshape(2, 16)  # 2 columns, batch 16; 4 shards of 4 rows
    c = to_chunks(x, chunk=8, n_shards=4)  # 2 chunks per column, 2 rows of each shard per chunk
    assert c.shape == (4, 8)
    np.testing.assert_array_equal(c[0], [0, 1, 4, 5, 8, 9, 12, 13])
    np.testing.assert_array_equal(c[1], [2, 3, 6, 7, 10, 11, 14, 15])
    np.testing.assert_array_equal(c[2], [16, 17, 20, 21, 24, 25, 28, 29])
    np.testing.assert_array_equal(from_chunks(c, 2, 4), x)
    with pytest.raises(ValueError, match="divide"):
        to_chunks(x, chunk=6, n_shards=1)
    with pytest.raises(ValueError, match="multiple"):
        to_chunks(x, chunk=8, n_shards=3)


@pytest.fixture(scope="module")
def tiny():
    model, params = tiny_model()
    return as_apply_fn(model), params


@pytest.mark.parametrize("triplet,chunks", [(False, (2, 8)), (True, (4,))])
def test_cached_loss_and_gradients_equal_plain(tiny, triplet, chunks):
    apply_fn, params = tiny
    batch = random_batch(20 + triplet, batch=16, triplet=triplet)
    key = jax.random.PRNGKey(1)

    def run(chunk):
        cfg = CFG.replace(grad_cache_chunk=chunk)
        return jax.jit(lambda p, b: loss_and_grads(apply_fn, p, b, cfg, key, True))(params, batch)

    plain_loss, plain_grads = run(0)
    for chunk in chunks:
        loss, grads = run(chunk)
        assert float(loss) == pytest.approx(float(plain_loss), rel=1e-5), chunk
        assert _rel(_leaves(grads), _leaves(plain_grads)) < 1e-5, chunk


def test_dropout_is_the_same_in_both_passes_and_in_every_chunking(tiny):
    """With dropout on, the cached gradient equals full autodiff through the chunked forward (it would
    not if pass 2 drew other masks than pass 1), and every chunk size gives the plain step's numbers:
    masks follow each token's identity, not its chunk."""
    apply_fn, params = tiny
    batch = random_batch(23, batch=16, triplet=True)
    key = jax.random.PRNGKey(2)
    cfg = CFG.replace(grad_cache_chunk=4)
    cols = batch_columns(batch)

    @jax.jit
    def reference(p, b):
        ids, masks = stack_columns(b, cols)
        loss_fn = make_loss_of_embeddings(cfg, b)
        tok = padded_token_ids(*ids.shape)
        return jax.value_and_grad(lambda q: loss_fn(embed_in_chunks(apply_fn, q, ids, masks, tok, key, 4, False)))(p)

    want_loss, want_grads = reference(params, batch)
    loss, grads = jax.jit(lambda p, b: loss_and_grads(apply_fn, p, b, cfg, key, False))(params, batch)
    det_loss, _ = jax.jit(lambda p, b: loss_and_grads(apply_fn, p, b, cfg, key, True))(params, batch)
    assert float(loss) != pytest.approx(float(det_loss), rel=1e-3)  # dropout is really on
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-5)
    assert _rel(_leaves(grads), _leaves(want_grads)) < 1e-5
    plain, plain_g = jax.jit(lambda p, b: loss_and_grads(apply_fn, p, b, CFG, key, False))(params, batch)
    for chunk in (8, 16):  # 4 is `cfg` above
        c = CFG.replace(grad_cache_chunk=chunk)
        got, got_g = jax.jit(lambda p, b, c=c: loss_and_grads(apply_fn, p, b, c, key, False))(params, batch)
        assert float(got) == pytest.approx(float(plain), rel=1e-5), chunk
        assert _rel(_leaves(got_g), _leaves(plain_g)) < 1e-5, chunk


MESH = textwrap.dedent("""
    import json, jax, numpy as np
    from tests._tiny import random_batch, tiny_model
    from trainer.config import TrainConfig
    from trainer.mesh import create_mesh, shard_batch
    from trainer.train.train_step import create_train_state, make_train_step
    model, params = tiny_model()
    res = {}
    for name, chunk, devs in (("plain1", 0, jax.devices()[:1]), ("cached8", 8, jax.devices())):
        cfg = TrainConfig(learning_rate=1e-3, warmup_steps=1, train_steps=10, grad_cache_chunk=chunk)
        mesh = create_mesh(devs)
        step = make_train_step(model, cfg, mesh, dropout=False)
        state = create_train_state(params, cfg, mesh)
        out = []
        for i, triplet in enumerate((True,)):
            state, m = step(state, shard_batch(random_batch(30 + i, triplet=triplet), mesh))
            out.append([float(m["loss"]), float(m["grad_norm"])])
        flat = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(state.params)])
        res[name] = {"metrics": out, "params": flat.tolist()}
    print("RESULT" + json.dumps(res))
""")


@pytest.mark.slow  # 8 CPU devices in a fresh process, ~20 s; CI: the layout-invariance test (chunked on 8)
def test_cached_step_on_eight_devices_equals_plain_step_on_one():
    res = run_on_cpu_devices(MESH, 8)
    np.testing.assert_allclose(res["cached8"]["metrics"], res["plain1"]["metrics"], rtol=1e-5)
    np.testing.assert_allclose(res["cached8"]["params"], res["plain1"]["params"], rtol=1e-4, atol=1e-6)
