"""Sequence packing: the packer's layout, and packed training equal to padded training."""

from __future__ import annotations

import textwrap

import jax
import numpy as np
import pytest

from tests._tiny import TINY, random_batch, run_on_cpu_devices, tiny_model
from trainer.config import TrainConfig
from trainer.data.packing import best_fit_decreasing, pack_batch, pad_packed, row_bucket
from trainer.model.modeling import EncoderConfig
from trainer.train.train_step import as_apply_fn, as_packed_apply_fn, loss_and_grads

BUCKETS = (8, 12, 16, 24, 32)
CFG = TrainConfig(learning_rate=1e-3, warmup_steps=1, train_steps=10)


def _leaves(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(tree)])


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_row_bucket_wastes_under_a_sixteenth():
    assert [row_bucket(n) for n in (0, 1, 5, 16, 17, 31, 32, 33, 65, 66, 201)] == [
        1,
        1,
        5,
        16,
        17,
        31,
        32,
        34,
        68,
        68,
        208,
    ]
    for n in range(1, 5000):
        b = row_bucket(n)
        assert n <= b < n * 17 / 16 + 1 and row_bucket(b) == b
    assert len({row_bucket(n) for n in range(65, 129)}) == 16


def test_best_fit_decreasing_places_every_item_without_overlap():
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 40, size=300)
    bins, offsets, n_bins = best_fit_decreasing(lengths, 40)
    fill = np.zeros((n_bins, 40), int)
    for b, o, n in zip(bins, offsets, lengths):
        assert 0 <= o and o + n <= 40
        fill[b, o : o + n] += 1
    assert fill.max() == 1 and fill.sum() == lengths.sum()
    assert n_bins <= -(-lengths.sum() // 40) * 11 // 9 + 1  # within FFD's bound of the optimum
    # Items that tile a bin exactly fill it exactly.
    assert best_fit_decreasing(np.array([10, 30, 20, 20, 25, 15]), 40)[2] == 3


@pytest.mark.parametrize("triplet", [False, True])
def test_pack_batch_keeps_every_token_in_its_shard_in_order(triplet):
    batch = random_batch(1, batch=12, length=16, triplet=triplet)
    cols = ("anchor", "positive", "negative") if triplet else ("anchor", "positive")
    out = pack_batch(batch, 3, BUCKETS, 12, pad_id=0)
    s, rows, length = out["packed_ids"].shape
    assert s == 3 and length == 16 and rows == row_bucket(rows)  # longest text is 16 tokens
    b = 12 // 3
    for shard in range(3):
        for c, col in enumerate(cols):
            for i in range(b):
                sel = out["packed_text"][shard] == c * b + i
                want = batch[f"{col}_ids"][shard * b + i][batch[f"{col}_mask"][shard * b + i] == 1]
                np.testing.assert_array_equal(out["packed_ids"][shard][sel], want)
                np.testing.assert_array_equal(out["packed_positions"][shard][sel], np.arange(want.size))
                assert np.unique(np.nonzero(sel)[0]).size == 1  # one row per text
    real = sum(int(batch[f"{c}_mask"].sum()) for c in cols)
    assert (out["packed_text"] >= 0).sum() == real
    assert (out["packed_ids"][out["packed_text"] < 0] == 0).all()
    for col in cols:
        np.testing.assert_array_equal(out[f"{col}_fp"], batch[f"{col}_fp"])


def test_pack_batch_row_length_multiple_and_host_sync():
    batch = random_batch(2, batch=8, length=10)
    assert pack_batch(batch, 1, BUCKETS, 4, pad_id=0)["packed_ids"].shape[2] == 12  # bucket of the longest (10)
    assert pack_batch(batch, 1, BUCKETS, 20, pad_id=0)["packed_ids"].shape[2] == 24  # at least the minimum
    assert pack_batch(batch, 1, BUCKETS, 99, pad_id=0)["packed_ids"].shape[2] == 32  # capped at the last bucket
    grow = lambda rows, length: -(-rows // 4) * 4  # noqa: E731  (a memory plan's rows: multiples of 4 chunks)
    assert pack_batch(batch, 2, BUCKETS, 8, pad_id=0, rows_for=grow)["packed_ids"].shape[1] % 4 == 0
    # Several hosts: each grows its packed rows to the longest and most any host has.
    out = pack_batch(batch, 2, BUCKETS, 8, pad_id=7)
    _, rows, length = out["packed_ids"].shape
    grown = pad_packed(out, 24, rows + 3, pad_id=7)
    assert grown["packed_ids"].shape == (2, rows + 3, 24)
    assert (grown["packed_ids"][:, rows:] == 7).all() and (grown["packed_text"][:, rows:] == -1).all()
    assert (grown["packed_text"][:, :, length:] == -1).all()
    np.testing.assert_array_equal(grown["packed_ids"][:, :rows, :length], out["packed_ids"])
    np.testing.assert_array_equal(grown["packed_positions"][:, :rows, :length], out["packed_positions"])
    with pytest.raises(ValueError, match="cannot shrink"):
        pad_packed(out, length - 1, rows, pad_id=7)


def test_pack_batch_rejects_bad_input():
    batch = random_batch(3, batch=6)
    with pytest.raises(ValueError, match="does not split over 4"):
        pack_batch(batch, 4, BUCKETS, 8, pad_id=0)
    del batch["negative_fp" if "negative_fp" in batch else "positive_fp"]
    with pytest.raises(ValueError, match="fingerprints"):
        pack_batch(batch, 2, BUCKETS, 8, pad_id=0)


ROBERTA = EncoderConfig(**{**TINY.__dict__, "model_type": "roberta", "pad_token_id": 1, "max_position_embeddings": 40})


@pytest.mark.parametrize("config", [TINY, ROBERTA], ids=["bert", "roberta"])
@pytest.mark.parametrize("triplet", [False, True])
def test_packed_loss_and_gradients_equal_padded(config, triplet):
    model, params = tiny_model(config=config)
    batch = random_batch(4 + triplet, batch=16, length=14, triplet=triplet)
    if config.pad_token_id:
        for c in ("anchor", "positive", "negative"):
            if f"{c}_ids" in batch:
                batch[f"{c}_ids"] = np.where(batch[f"{c}_mask"] == 1, batch[f"{c}_ids"], config.pad_token_id)
    key = jax.random.PRNGKey(0)
    want_loss, want = jax.jit(lambda p, b: loss_and_grads(as_apply_fn(model), p, b, CFG, key, True))(params, batch)
    packed = pack_batch(batch, 2, BUCKETS, 16, pad_id=config.pad_token_id)
    assert packed["packed_ids"].size < sum(
        batch[f"{c}_ids"].size for c in ("anchor", "positive", "negative") if f"{c}_ids" in batch
    )
    loss, grads = jax.jit(lambda p, b: loss_and_grads(as_packed_apply_fn(model), p, b, CFG, key, True))(params, packed)
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-5)
    assert _rel(_leaves(grads), _leaves(want)) < 1e-5


def _rows_multiple_of(n):
    return lambda rows, length: -(-rows // n) * n


@pytest.mark.parametrize("chunk", [8, 4])
def test_packed_gradient_caching_equals_packed_plain(chunk):
    """Dropout on: chunks of packed rows give the plain packed step's loss and gradients."""
    model, params = tiny_model()
    batch = random_batch(6, batch=16, triplet=True)
    fn, key = as_packed_apply_fn(model), jax.random.PRNGKey(1)
    packed = pack_batch(batch, 2, BUCKETS, 12, pad_id=0, rows_for=_rows_multiple_of(16 // chunk))
    plain_loss, plain = jax.jit(lambda p, b: loss_and_grads(fn, p, b, CFG, key, False))(params, packed)
    det_loss, _ = jax.jit(lambda p, b: loss_and_grads(fn, p, b, CFG, key, True))(params, packed)
    assert float(plain_loss) != pytest.approx(float(det_loss), rel=1e-3)  # dropout is really on
    cfg = CFG.replace(grad_cache_chunk=chunk)
    loss, grads = jax.jit(lambda p, b: loss_and_grads(fn, p, b, cfg, key, False))(params, packed)
    assert float(loss) == pytest.approx(float(plain_loss), rel=1e-5)
    assert _rel(_leaves(grads), _leaves(plain)) < 1e-5


MESH = textwrap.dedent("""
    import json, jax, numpy as np
    from tests._tiny import random_batch, tiny_model
    from trainer.config import TrainConfig
    from trainer.mesh import create_mesh, shard_batch
    from trainer.data.packing import pack_batch
    from trainer.train.train_step import create_train_state, make_train_step
    model, params = tiny_model()
    res = {}
    for name, packed, chunk, devs in (("padded1", False, 0, 1), ("packed8", True, 0, 8), ("cached8", True, 8, 8)):
        cfg = TrainConfig(learning_rate=1e-3, warmup_steps=1, train_steps=10, grad_cache_chunk=chunk)
        mesh = create_mesh(jax.devices()[:devs])
        step = make_train_step(model, cfg, mesh)  # dropout on: masks follow the texts, not the layout
        state = create_train_state(params, cfg, mesh)
        out = []
        for i, triplet in enumerate((False, True)):
            batch = random_batch(40 + i, triplet=triplet)
            if packed:
                n = 16 // chunk if chunk else 1
                batch = pack_batch(batch, devs, (8, 12, 16), 8, 0, rows_for=lambda r, l: -(-r // n) * n)
                assert len(shard_batch(batch, mesh)["packed_ids"].sharding.device_set) == devs
            state, m = step(state, shard_batch(batch, mesh))
            out.append([float(m["loss"]), float(m["grad_norm"])])
        flat = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(state.params)])
        res[name] = {"metrics": out, "params": flat.tolist()}
    print("RESULT" + json.dumps(res))
""")


@pytest.mark.slow  # ~1 min; CI keeps tests/test_layout_invariance.py (8 devices, packed, through train_main)
def test_packed_steps_on_eight_devices_equal_the_padded_step_on_one():
    res = run_on_cpu_devices(MESH, 8)
    for name in ("packed8", "cached8"):
        np.testing.assert_allclose(res[name]["metrics"], res["padded1"]["metrics"], rtol=1e-5)
        np.testing.assert_allclose(res[name]["params"], res["padded1"]["params"], rtol=1e-4, atol=1e-6)


# Unchunked is -m slow (suite time): the chunked case covers the even-cores packing in CI, and
# test_layout_invariance.py's packed runs use it (on by default).
@pytest.mark.parametrize("chunk", [pytest.param(0, marks=pytest.mark.slow), 4])
def test_even_cores_give_today_s_loss_with_fewer_rows(chunk):
    """Texts dealt over the shards (even=True) give the per-shard packing's loss and gradients, dropout
    on (each slot's packed_source keeps its text's dropout identity), plain and in gradient-caching
    chunks; the fullest shard needs fewer rows and the shards' rows differ by at most one."""
    model, params = tiny_model()
    fn, key, cfg = as_packed_apply_fn(model), jax.random.PRNGKey(2), CFG.replace(grad_cache_chunk=chunk)
    rng = np.random.default_rng(7)
    batch = random_batch(8, batch=32, length=16, triplet=True)
    for c in ("anchor", "positive", "negative"):  # lopsided: the long texts all in the first rows
        lengths = np.sort(rng.integers(2, 17, 32))[::-1]
        batch[f"{c}_mask"] = (np.arange(16)[None, :] < lengths[:, None]).astype(np.int32)
        batch[f"{c}_ids"] = batch[f"{c}_ids"] * batch[f"{c}_mask"]
    rows_for = _rows_multiple_of(chunk // 4 or 1) if chunk else None
    today = pack_batch(batch, 4, BUCKETS, 16, pad_id=0, row_steps=1, rows_for=rows_for)
    even = pack_batch(batch, 4, BUCKETS, 16, pad_id=0, row_steps=1, rows_for=rows_for, even=True)
    assert "packed_source" not in today and sorted(even["packed_source"].ravel()) == list(range(3 * 32))
    rows = [int((even["packed_text"][s] >= 0).any(axis=1).sum()) for s in range(4)]
    assert max(rows) - min(rows) <= 1 and even["packed_ids"].shape[1] < today["packed_ids"].shape[1]
    want_loss, want = jax.jit(lambda p, b: loss_and_grads(fn, p, b, cfg, key, False))(params, today)
    loss, grads = jax.jit(lambda p, b: loss_and_grads(fn, p, b, cfg, key, False))(params, even)
    det_loss, _ = jax.jit(lambda p, b: loss_and_grads(fn, p, b, cfg, key, True))(params, even)
    assert float(det_loss) != pytest.approx(float(loss), rel=1e-3)  # dropout is on
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-5)
    assert _rel(_leaves(grads), _leaves(want)) < 1e-5
