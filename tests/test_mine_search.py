"""trainer/mining/search.py: blocked top-k over the mesh against a brute-force numpy search."""

import io

import numpy as np
import pytest

from pipeline import storage
from tests._tiny import run_on_cpu_devices
from trainer.mining.embeddings import EmbeddingShards


def _unit(rng, n, dim=24):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _pool(tmp_path, emb, shard_size):
    shards = EmbeddingShards(str(tmp_path), "pool", len(emb), shard_size)
    for i in range(shards.n_shards):
        a, b = shards.rows(i)
        buf = io.BytesIO()
        np.save(buf, emb[a:b])
        storage.write_bytes(shards.path(i), buf.getvalue())
    return shards


def _brute(q, pool, k):
    s = q @ pool.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


@pytest.mark.parametrize("shard_size,query_block,k", [(1000, 64, 7), (37, 16, 7), (37, 16, 50), (5, 3, 12)])
def test_blocked_search_equals_brute_force(tmp_path, shard_size, query_block, k):
    from trainer.mesh import create_mesh
    from trainer.mining.search import Searcher

    rng = np.random.default_rng(0)
    pool, q = _unit(rng, 300), _unit(rng, 45)
    pos = rng.integers(0, 300, size=(45, 2)).astype(np.int32)
    pos[::3, 1] = -1
    searcher = Searcher(create_mesh(), _pool(tmp_path, pool, shard_size), k, 2, query_block)
    scores, idx, pos_scores = searcher.search(q, pos)
    ref_s, ref_i = _brute(q, pool, k)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(scores, ref_s, atol=1e-6)
    ref_pos = np.where(pos >= 0, np.einsum("qd,qpd->qp", q, pool[np.maximum(pos, 0)]), -np.inf)
    np.testing.assert_allclose(pos_scores, ref_pos, atol=1e-6)


def test_a_pool_smaller_than_k_pads_with_minus_one(tmp_path):
    from trainer.mesh import create_mesh
    from trainer.mining.search import Searcher

    rng = np.random.default_rng(1)
    pool = _unit(rng, 4)
    searcher = Searcher(create_mesh(), _pool(tmp_path, pool, 2), 4, 1, 8)
    scores, idx, _ = searcher.search(pool[:2], np.array([[0], [1]], np.int32))
    assert sorted(idx[0].tolist()) == [0, 1, 2, 3] and idx[0, 0] == 0 and idx[1, 0] == 1
    with pytest.raises(ValueError, match="k=5 must be between 1 and the pool size 4"):
        Searcher(create_mesh(), _pool(tmp_path, pool, 2), 5, 1)


def test_approx_max_k_on_cpu_is_exact_and_recall_is_measured(tmp_path):
    from trainer.mesh import create_mesh
    from trainer.mining.search import Searcher, recall_against_exact

    rng = np.random.default_rng(2)
    pool, q = _unit(rng, 200), _unit(rng, 20)
    searcher = Searcher(create_mesh(), _pool(tmp_path, pool, 64), 10, 1, 8)
    pos = np.zeros((20, 1), np.int32)
    exact, approx = searcher.search(q, pos)[1], searcher.search(q, pos, approx_recall=0.9)[1]
    assert recall_against_exact(approx, exact) == 1.0
    assert recall_against_exact(np.array([[1, 2, 3, 4]]), np.array([[1, 2, 5, 6]])) == 0.5


SCRIPT = """
import io, json, sys, tempfile
import numpy as np
import jax
from pipeline import storage
from trainer.mesh import create_mesh
from trainer.mining.embeddings import EmbeddingShards
from trainer.mining.search import Searcher
rng = np.random.default_rng(3)
x = rng.normal(size=(500, 24)).astype(np.float32); x /= np.linalg.norm(x, axis=1, keepdims=True)
d = tempfile.mkdtemp()
shards = EmbeddingShards(d, "pool", 400, 128)
for i in range(shards.n_shards):
    a, b = shards.rows(i); buf = io.BytesIO(); np.save(buf, x[a:b]); storage.write_bytes(shards.path(i), buf.getvalue())
pos = np.arange(100, dtype=np.int32)[:, None] * 4
s, i, p = Searcher(create_mesh(), shards, 20, 1, 32).search(x[400:], pos)
print("RESULT" + json.dumps({"devices": jax.device_count(), "scores": s.tolist(), "idx": i.tolist(),
                             "pos": p.tolist()}))
"""


def test_eight_devices_find_what_one_finds():
    one, eight = run_on_cpu_devices(SCRIPT, devices=1), run_on_cpu_devices(SCRIPT, devices=8)
    assert (one["devices"], eight["devices"]) == (1, 8)
    assert one["idx"] == eight["idx"]
    np.testing.assert_allclose(one["scores"], eight["scores"], atol=1e-6)
    np.testing.assert_allclose(one["pos"], eight["pos"], atol=1e-6)
