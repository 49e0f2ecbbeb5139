"""trainer/mining/embeddings.py: shards written as computed, resumed, and the model's fingerprint."""

import os
import shutil

import numpy as np
import pytest

from trainer.mining.embeddings import EmbeddingShards, load_encoder, model_fingerprint


class CountingEncoder:
    def __init__(self, fail_after=None):
        self.calls, self.fail_after = [], fail_after

    def __call__(self, texts):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt  # a killed run
        self.calls.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts], np.float32)


def test_shards_are_written_as_computed_and_a_rerun_continues(tmp_path):
    texts = [f"text {i}" * (i % 3 + 1) for i in range(10)]
    shards = EmbeddingShards(str(tmp_path), "pool", len(texts), 4)
    assert shards.n_shards == 3 and shards.rows(2) == (8, 10) and shards.missing() == [0, 1, 2]
    with pytest.raises(KeyboardInterrupt):
        shards.compute(texts, CountingEncoder(fail_after=2))
    assert shards.missing() == [2] and sorted(os.listdir(tmp_path)) == ["pool-00000.npy", "pool-00001.npy"]
    again, seen = CountingEncoder(), []
    assert shards.compute(texts, again, seen.append) == 2
    assert again.calls == [texts[8:]] and seen == [4, 4, 2]  # skipped shards still move the progress bar
    full = np.concatenate([shards.load(i) for i in range(3)])
    np.testing.assert_array_equal(full[:, 0], [len(t) for t in texts])


def test_a_shard_of_the_wrong_size_is_refused(tmp_path):
    EmbeddingShards(str(tmp_path), "a", 4, 4).compute(["x"] * 4, CountingEncoder())
    with pytest.raises(ValueError, match="expected 3 rows"):
        EmbeddingShards(str(tmp_path), "a", 3, 4).load(0)


def test_the_fingerprint_follows_weights_and_pooling(tmp_path, tiny_st_model):
    copy = str(tmp_path / "m")
    shutil.copytree(tiny_st_model, copy)
    fp = model_fingerprint(copy)
    assert fp == model_fingerprint(tiny_st_model) and len(fp) == 16
    with open(os.path.join(copy, "README.md"), "a") as f:
        f.write("a card does not change embeddings")
    assert model_fingerprint(copy) == fp
    with open(os.path.join(copy, "1_Pooling", "config.json"), "a") as f:
        f.write(" ")
    assert model_fingerprint(copy) != fp


def test_the_encoder_uses_the_models_length_and_our_encode(tiny_st_model):
    from trainer.mesh import create_mesh
    from trainer.model.encode import encode

    enc = load_encoder(tiny_st_model, None, 8, create_mesh())
    assert enc.max_seq_length == 32 and enc.dim == 32 and enc.fingerprint == model_fingerprint(tiny_st_model)
    texts = ["a short one", "a somewhat longer sentence with more words in it", "x"]
    ref = encode(enc.model, enc.params, enc.tokenizer, texts, batch_size=8, max_seq_length=32)
    np.testing.assert_allclose(enc(texts), ref, atol=1e-6)
