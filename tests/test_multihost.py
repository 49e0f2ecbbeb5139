"""Tests of trainer/multihost.py: what the hosts agree on, given what the collective returns.

The collective itself (process_allgather over real processes) runs in the slow two-host tests
(tests/test_multihost_training.py); here it is replaced by the maximum another host would report."""

import numpy as np
import pytest

from trainer import multihost
from trainer.data import packing
from trainer.data.shapes import Chunking, agree_on_shape

PAD = 0


@pytest.fixture
def two_hosts(monkeypatch):
    """This host plus one whose arrays are larger on every axis by `other` (set by the test)."""
    other = {}
    monkeypatch.setattr(multihost.jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost, "max_over_hosts", lambda v: np.maximum(np.asarray(v), other["shape"]))
    return other


def _padded(n, length, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, length + 1, size=(2, n))
    batch = {}
    for i, col in enumerate(("anchor", "positive")):
        mask = (np.arange(length)[None, :] < lengths[i][:, None]).astype(np.int32)
        batch[f"{col}_ids"] = np.where(mask, rng.integers(5, 99, size=(n, length)), PAD).astype(np.int32)
        batch[f"{col}_mask"] = mask
        batch[f"{col}_fp"] = rng.integers(-(2**31), 2**31 - 1, size=n).astype(np.int32)
    return batch


def test_one_host_keeps_the_batch():
    batch = _padded(4, 16)
    out = agree_on_shape(batch, PAD, Chunking(batch_size=16, n_shards=2))
    assert all(out[k] is batch[k] for k in batch)


def test_padded_batches_grow_to_the_longest_bucket_of_any_host(two_hosts):
    two_hosts["shape"] = 128
    batch = _padded(8, 32)
    out = agree_on_shape(batch, PAD, Chunking(batch_size=16, n_shards=2))
    for col in ("anchor", "positive"):
        assert out[f"{col}_ids"].shape == (8, 128)
        np.testing.assert_array_equal(out[f"{col}_ids"][:, :32], batch[f"{col}_ids"])
        assert not out[f"{col}_mask"][:, 32:].any() and np.all(out[f"{col}_ids"][:, 32:] == PAD)
        np.testing.assert_array_equal(out[f"{col}_fp"], batch[f"{col}_fp"])
    two_hosts["shape"] = 16  # a host with shorter texts does not shrink this one's
    assert agree_on_shape(batch, PAD, Chunking(batch_size=16, n_shards=2))["anchor_ids"].shape == (8, 32)


def test_packed_batches_grow_to_the_most_and_longest_rows_of_any_host(two_hosts):
    packed = packing.pack_batch(_padded(16, 24), n_shards=2, buckets=(16, 24, 32, 64), min_row_length=32, pad_id=PAD)
    _, rows, row_length = packed["packed_ids"].shape
    two_hosts["shape"] = (rows + 3, 64)
    out = agree_on_shape(packed, PAD, Chunking(batch_size=16, n_shards=2))
    assert out["packed_ids"].shape == (2, rows + 3, 64)
    for key, fill in zip(packing.PACKED_KEYS, (PAD, 0, -1)):
        np.testing.assert_array_equal(out[key][:, :rows, :row_length], packed[key])
        assert np.all(out[key][:, rows:] == fill) and np.all(out[key][:, :, row_length:] == fill)
