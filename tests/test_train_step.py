"""The jit train step: its loss and gradients, dropout keys, the non-finite guard, bfloat16, and
8 devices against 1 (in a subprocess, since XLA_FLAGS is read when JAX starts)."""

import math
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests._tiny import random_batch, run_on_cpu_devices, tiny_model
from trainer.config import TrainConfig
from trainer.mesh import create_mesh
from trainer.train.loss import contrastive_loss
from trainer.train.train_step import compute_dtype, create_train_state, loss_and_grads, make_train_step

CFG = TrainConfig(learning_rate=1e-3, warmup_steps=2, train_steps=50, batch_size=16, seed=7)


def _leaves(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(tree)])


def _rel(a, b):
    """Relative error of a whole gradient: ||a - b|| / ||b|| (element-wise rtol trips on near-zero entries)."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def test_step_loss_and_gradients_equal_direct_computation(tiny):
    model, params = tiny
    batch = random_batch(0, triplet=True)

    def direct(p):
        emb = [
            model.apply({"params": p}, batch[f"{c}_ids"], batch[f"{c}_mask"])
            for c in ("anchor", "positive", "negative")
        ]
        return contrastive_loss(
            *emb,
            anchor_fp=batch["anchor_fp"],
            positive_fp=batch["positive_fp"],
            negative_fp=batch["negative_fp"],
            directions=CFG.triplet_directions,
            partition_mode=CFG.partition_mode,
        )

    want_loss, want_grads = jax.jit(jax.value_and_grad(direct))(params)
    loss, grads = jax.jit(lambda p, b: loss_and_grads(model_apply(model), p, b, CFG, jax.random.PRNGKey(0), True))(
        params, batch
    )
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-6)
    assert _rel(_leaves(grads), _leaves(want_grads)) < 1e-5


def model_apply(model):
    from trainer.train.train_step import as_apply_fn

    return as_apply_fn(model)


def test_training_lowers_the_loss_and_reports_metrics(tiny):
    model, params = tiny
    mesh = create_mesh()
    step = make_train_step(model, CFG, mesh)
    state = create_train_state(params, CFG, mesh)
    batch = random_batch(1)
    losses = []
    for i in range(8):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
        assert bool(m["finite"])
    assert int(state.step) == 8
    assert float(m["learning_rate"]) == pytest.approx(1e-3 * (50 - 7) / 48)
    assert float(m["grad_norm"]) > 0
    assert losses[-1] < losses[0] - 0.3, losses


def test_dropout_key_depends_on_seed_and_step_only(tiny):
    model, params = tiny
    mesh = create_mesh()
    step = make_train_step(model, CFG, mesh, donate=False)
    batch = random_batch(2)
    s0 = create_train_state(params, CFG, mesh)
    a, ma = step(s0, batch)
    b, mb = step(create_train_state(params, CFG, mesh), batch)
    assert float(ma["loss"]) == float(mb["loss"])  # same (seed, step): same dropout, bit for bit
    np.testing.assert_array_equal(_leaves(a.params), _leaves(b.params))
    later = s0.replace(step=jnp.asarray(5, jnp.int32))
    _, mc = step(later, batch)
    assert float(mc["loss"]) != float(ma["loss"])  # another step draws another dropout
    det = make_train_step(model, CFG, mesh, dropout=False, donate=False)
    _, md = det(s0, batch)
    assert float(md["loss"]) != float(ma["loss"])  # dropout is really on in training


def test_pair_and_triplet_batches_use_their_directions(tiny):
    model, params = tiny
    batch = random_batch(3)
    sym = TrainConfig(pair_directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction")
    one = TrainConfig(pair_directions=("query_to_doc",), partition_mode="per_direction")
    apply = model_apply(model)
    key = jax.random.PRNGKey(0)
    l_sym, _ = jax.jit(lambda p, b: loss_and_grads(apply, p, b, sym, key, True))(params, batch)
    l_one, _ = jax.jit(lambda p, b: loss_and_grads(apply, p, b, one, key, True))(params, batch)
    emb = [
        jax.jit(apply, static_argnums=4)(params, batch[f"{c}_ids"], batch[f"{c}_mask"], None, True, key)
        for c in ("anchor", "positive")
    ]
    fwd = contrastive_loss(*emb, anchor_fp=batch["anchor_fp"], positive_fp=batch["positive_fp"])
    bwd = contrastive_loss(emb[1], emb[0], anchor_fp=batch["positive_fp"], positive_fp=batch["anchor_fp"])
    assert float(l_one) == pytest.approx(float(fwd), rel=1e-6)
    assert float(l_sym) == pytest.approx((float(fwd) + float(bwd)) / 2, rel=1e-5)


def test_non_finite_loss_keeps_the_old_state(tiny):
    model, params = tiny
    mesh = create_mesh()
    cfg = CFG.replace(scale=float("nan"))
    step = make_train_step(model, cfg, mesh, donate=False)
    state = create_train_state(params, cfg, mesh)
    new, m = step(state, random_batch(4))
    assert not bool(m["finite"])
    assert int(new.step) == 0
    np.testing.assert_array_equal(_leaves(new.params), _leaves(state.params))
    np.testing.assert_array_equal(_leaves(new.opt_state), _leaves(state.opt_state))


@pytest.mark.parametrize("packed", [False, True])
def test_a_batch_of_more_texts_than_dropout_identities_hold_is_refused_when_traced(tiny, packed):
    # 2^19 + 1 pairs: 2^20 + 2 texts, past the 2^20 the dropout hash holds (trainer/model/modeling.py).
    model, params = tiny
    mesh = create_mesh()
    state = create_train_state(params, CFG, mesh)
    b = 2**19 + 1
    spec = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)
    batch = {"anchor_fp": spec(b), "positive_fp": spec(b)}
    if packed:
        batch.update(packed_ids=spec(1, 4, 32), packed_positions=spec(1, 4, 32), packed_text=spec(1, 4, 32))
    else:
        batch.update(anchor_ids=spec(b, 8), anchor_mask=spec(b, 8), positive_ids=spec(b, 8), positive_mask=spec(b, 8))
    step = make_train_step(model, CFG, mesh, donate=False)
    with pytest.raises(ValueError, match=r"at most 1,048,576 texts per global batch .* got 1,048,578"):
        jax.eval_shape(step, state, batch)


@pytest.mark.slow  # ~35 s; bfloat16 compute stays covered by tests/test_modeling.py
def test_bfloat16_step_is_finite_and_close_to_float32():
    batch = random_batch(5, triplet=True)
    out = {}
    for dtype in ("float32", "bfloat16"):
        model, params = tiny_model(compute_dtype(dtype))
        cfg = CFG.replace(dtype=dtype)
        mesh = create_mesh()
        state = create_train_state(params, cfg, mesh)
        new, m = make_train_step(model, cfg, mesh, dropout=False, donate=False)(state, batch)
        assert bool(m["finite"])
        assert jax.tree_util.tree_leaves(new.params)[0].dtype == jnp.float32  # params stay float32
        assert jax.tree_util.tree_leaves(new.opt_state)[1].dtype == jnp.float32
        _, grads = jax.jit(
            lambda p, b, model=model, cfg=cfg: loss_and_grads(
                model_apply(model), p, b, cfg, jax.random.PRNGKey(0), True
            )
        )(params, batch)
        out[dtype] = (float(m["loss"]), _leaves(grads))
    (l32, g32), (l16, g16) = out["float32"], out["bfloat16"]
    # Stated tolerance: loss within 2% relative, gradient direction cosine > 0.98.
    assert l16 == pytest.approx(l32, rel=2e-2)
    assert g16 @ g32 / (np.linalg.norm(g16) * np.linalg.norm(g32)) > 0.98


MULTI = textwrap.dedent("""
    import json, jax, numpy as np
    from tests._tiny import random_batch, tiny_model
    from trainer.config import TrainConfig
    from trainer.mesh import create_mesh, shard_batch
    from trainer.train.train_step import create_train_state, make_train_step
    assert jax.device_count() == 8, jax.devices()
    model, params = tiny_model()
    cfg = TrainConfig(learning_rate=1e-3, warmup_steps=1, train_steps=10, seed=3)
    res = {}
    for name, devs in (("one", jax.devices()[:1]), ("eight", jax.devices())):
        mesh = create_mesh(devs)
        step = make_train_step(model, cfg, mesh)
        state = create_train_state(params, cfg, mesh)
        losses, norms = [], []
        for i, triplet in enumerate((False, True)):
            batch = shard_batch(random_batch(10 + i, triplet=triplet), mesh)
            if name == "eight":
                assert len(batch["anchor_ids"].sharding.device_set) == 8
            state, m = step(state, batch)
            losses.append(float(m["loss"])); norms.append(float(m["grad_norm"]))
        flat = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(state.params)])
        res[name] = {"losses": losses, "norms": norms, "params": flat.tolist()}
    print("RESULT" + json.dumps(res))
""")


@pytest.mark.slow  # ~1 min; CI keeps tests/test_layout_invariance.py and test_memory.py (8 devices)
def test_eight_devices_equal_one_device():
    res = run_on_cpu_devices(MULTI, 8)
    one, eight = res["one"], res["eight"]
    # Dropout is on: the keys and the (partitionable) random bits do not depend on the device count.
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose(eight["norms"], one["norms"], rtol=1e-4)
    np.testing.assert_allclose(eight["params"], one["params"], rtol=1e-4, atol=1e-6)
    assert one["losses"][0] > 1.0


def _toy_loss(cfg, batch):
    """A loss of this test file alone: the mean squared distance of each anchor to its positive, times
    cfg.scale (no negatives, no normalisation): --loss=toy once registered."""
    return lambda embs: cfg.scale * jnp.mean(jnp.sum((embs[0] - embs[1]) ** 2, axis=-1))


# The plain step is -m slow (suite time): the gradient-caching case runs the registered loss through
# Matryoshka and the cache, which wrap the same loss_of_embeddings the plain step uses.
@pytest.mark.parametrize(
    "memory", [pytest.param({}, marks=pytest.mark.slow), {"grad_cache_chunk": 4}], ids=["plain", "grad_cache"]
)
def test_a_loss_registered_from_outside_trains_through_caching_and_matryoshka(tiny, monkeypatch, memory):
    """--loss picks a loss registered in trainer/train/loss.py LOSSES; the step, gradient caching and the
    Matryoshka sizes take it as they take the contrastive loss."""
    from trainer.train import loss as loss_lib

    monkeypatch.setitem(loss_lib.LOSSES, "toy", _toy_loss)
    model, params = tiny
    batch = random_batch(3)
    cfg = CFG.replace(loss="toy", scale=2.0, matryoshka_dims=(16, 4), matryoshka_weights=(1.0, 0.5), **memory)

    def direct(p):  # the toy loss at both sizes, by hand
        a, b = (model.apply({"params": p}, batch[f"{c}_ids"], batch[f"{c}_mask"]) for c in ("anchor", "positive"))
        return sum(w * 2.0 * jnp.mean(jnp.sum((a[:, :d] - b[:, :d]) ** 2, axis=-1)) for d, w in ((16, 1.0), (4, 0.5)))

    want_loss, want_grads = jax.jit(jax.value_and_grad(direct))(params)
    loss, grads = jax.jit(lambda p, b: loss_and_grads(model_apply(model), p, b, cfg, jax.random.PRNGKey(0), True))(
        params, batch
    )
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-5) and float(loss) > 0
    assert _rel(_leaves(grads), _leaves(want_grads)) < 1e-4
    if memory:  # the rest is the same with gradient caching
        return
    contrastive, _ = jax.jit(
        lambda p, b: loss_and_grads(
            model_apply(model), p, b, cfg.replace(loss="contrastive"), jax.random.PRNGKey(0), True
        )
    )(params, batch)
    assert abs(float(contrastive) - float(loss)) > 1e-3  # the name chose the loss

    mesh = create_mesh()
    state, metrics = make_train_step(model, cfg, mesh, dropout=False)(create_train_state(params, cfg, mesh), batch)
    assert int(state.step) == 1 and bool(metrics["finite"])
    assert float(metrics["loss"]) == pytest.approx(float(want_loss), rel=1e-5)


def test_auto_remat_recomputes_only_the_shapes_over_the_budget_and_changes_no_number(tiny):
    """--remat=auto: a batch shape whose estimated bytes exceed the budget compiles with qkv remat, a
    smaller one without (its program has no remat); the same parameters, loss and update as --remat=none
    (dropout on)."""
    from trainer.mesh import replicated
    from trainer.train.memory import AUTO_HEADROOM, remat_plan
    from trainer.train.train_step import batch_program_shape

    model, params = tiny
    mesh = create_mesh()
    auto, none = CFG.replace(remat="auto"), CFG.replace(remat="none")
    big, small = random_batch(4, length=12), random_batch(5, length=4)
    plan = remat_plan(auto, model.config, create_train_state(params, auto), replicated(mesh), None)
    tokens = batch_program_shape(big, auto, 1).tokens_per_device
    assert tokens == 2 * 16 * 12 and batch_program_shape(small, auto, 1).tokens_per_device == 2 * 16 * 4
    budget = math.ceil(plan.estimate("qkv", tokens) / AUTO_HEADROOM)  # room for qkv, not for none
    steps = {c.remat: make_train_step(model, c, mesh, memory_budget=budget, donate=False) for c in (auto, none)}
    state = create_train_state(params, auto, mesh)
    assert "remat" in str(steps["auto"].trace(state, big).jaxpr)
    assert "remat" not in str(steps["auto"].trace(state, small).jaxpr)
    (s1, m1), (s2, m2) = (steps[mode](state, big) for mode in ("auto", "none"))
    assert float(m1["loss"]) == pytest.approx(float(m2["loss"]), rel=1e-6)
    assert float(m1["grad_norm"]) == pytest.approx(float(m2["grad_norm"]), rel=1e-5)
    assert jax.tree_util.tree_structure(s1.params) == jax.tree_util.tree_structure(s2.params)
    np.testing.assert_allclose(_leaves(s1.params), _leaves(s2.params), rtol=1e-5, atol=1e-7)
