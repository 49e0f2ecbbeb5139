"""Batched, jit-compiled sentence encoding.

Sentences are tokenized once, sorted by token count (longest first) so each batch wastes little
padding, padded to one of a few bucket lengths (so only a few programs compile), run through the
jitted SentenceEncoder, and returned in the caller's order. TensorFlow-free.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import numpy as np

from trainer.data import batching


def load_tokenizer(source_dir: str):
    """The model's fast (Rust) tokenizer from a local directory."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source_dir, use_fast=True)
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"no fast tokenizer for {source_dir} (needs tokenizer.json or a convertible vocab)")
    return tok


@functools.lru_cache(maxsize=16)
def _jitted_apply(model) -> Any:
    # One jitted function per (hashable) model, so repeated encode calls reuse compiled programs.
    return jax.jit(lambda params, ids, mask: model.apply(params, ids, mask))


def tokenize(tokenizer, sentences: Sequence[str], max_seq_length: int) -> list[list[int]]:
    """Token ids with special tokens, truncated to max_seq_length, unpadded."""
    bad = [i for i, s in enumerate(sentences) if not isinstance(s, str)]
    if bad:
        raise TypeError(f"sentences must be str; positions {bad[:10]} are not")
    enc = tokenizer(list(sentences), truncation=True, max_length=max_seq_length, padding=False)
    return enc["input_ids"]


def encode(
    model,
    params: Any,
    tokenizer,
    sentences: Sequence[str],
    batch_size: int = 64,
    max_seq_length: int = 128,
    buckets: Sequence[int] | None = None,
    mesh: Any = None,
) -> np.ndarray:
    """Unit-norm float32 embeddings [len(sentences), hidden] in the input order."""
    # Never past the position table (sentence-transformers caps its tokenizer the same way).
    max_seq_length = min(max_seq_length, model.config.max_input_length)
    ids = tokenize(tokenizer, sentences, max_seq_length) if len(sentences) else []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else model.config.pad_token_id
    return encode_ids(model, params, ids, pad_id, batch_size, max_seq_length, buckets, mesh)


def encode_ids(
    model,
    params: Any,
    ids: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = 64,
    max_seq_length: int = 128,
    buckets: Sequence[int] | None = None,
    mesh: Any = None,
) -> np.ndarray:
    """Embeddings of already-tokenized texts (ids with special tokens, at most max_seq_length long).
    With a `jax.sharding.Mesh` (one host's devices), each batch's rows are split over its devices
    (batch_size rounded up to a multiple of them) and the parameters replicated on each."""
    n = len(ids)
    if n == 0:
        return np.zeros((0, model.config.hidden_size), np.float32)
    max_seq_length = min(max_seq_length, model.config.max_input_length)
    # The caller's buckets (or a ladder of them), capped, plus max_seq_length so every sentence fits one.
    buckets = batching.effective_buckets(buckets or batching.bucket_ladder(max_seq_length), max_seq_length)
    lengths = np.array([len(x) for x in ids])
    if lengths.max() > max_seq_length:
        raise ValueError(f"a text has {lengths.max()} tokens, more than max_seq_length {max_seq_length}")
    order = np.argsort(-lengths, kind="stable")
    apply = _jitted_apply(model)
    put = lambda x: x  # noqa: E731
    if mesh is not None:
        from trainer.mesh import batch_sharding, data_shards, replicated

        batch_size = -(-batch_size // data_shards(mesh)) * data_shards(mesh)
        params = jax.device_put(params, replicated(mesh))  # a no-op when already placed so
        put = functools.partial(jax.device_put, device=batch_sharding(mesh))
    outs = []
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        width = batching.bucket_length(int(lengths[idx[0]]), buckets)
        # A short last batch keeps the full batch size (filler rows are all padding) so shapes stay static.
        batch = np.full((batch_size, width), pad_id, np.int32)
        mask = np.zeros((batch_size, width), np.int32)
        for row, j in enumerate(idx):
            batch[row, : lengths[j]] = ids[j]
            mask[row, : lengths[j]] = 1
        # Dispatch is asynchronous: the next batch is padded on the host while this one runs.
        outs.append((apply(params, put(batch), put(mask)), len(idx)))
    emb = np.concatenate([np.asarray(o)[:k] for o, k in outs], axis=0)
    result = np.empty_like(emb)
    result[order] = emb
    return result
