"""Batched, jit-compiled sentence encoding.

Sentences are tokenized once, sorted by token count (longest first) so each batch wastes little
padding, padded to one of a few bucket lengths (so only a few programs compile), run through the
jitted SentenceEncoder, and returned in the caller's order. A call holds at most `batch_size` texts
and about `max_tokens` token slots: long texts go in fewer rows per call (16 x 256 tokens costs
~1.2x per token what 8 x 256 does on a 2-core CPU, 64 x 128 ~1.8x what 16 x 128 does: the
attention's [L, L] tensors and the activations fall out of cache). TensorFlow-free.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import numpy as np

from trainer.data import padding

# Token slots per padded call, at most (see the module docstring).
MAX_TOKENS = 2048


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
    packing: bool = False,
    max_tokens: int = MAX_TOKENS,
) -> np.ndarray:
    """Unit-norm float32 embeddings [len(sentences), hidden] in the input order (`packing`, `max_tokens`:
    see encode_ids)."""
    # Never past the position table (sentence-transformers caps its tokenizer the same way).
    max_seq_length = min(max_seq_length, model.config.max_input_length)
    ids = tokenize(tokenizer, sentences, max_seq_length) if len(sentences) else []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else model.config.pad_token_id
    return encode_ids(model, params, ids, pad_id, batch_size, max_seq_length, buckets, mesh, packing, max_tokens)


def encode_ids(
    model,
    params: Any,
    ids: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = 64,
    max_seq_length: int = 128,
    buckets: Sequence[int] | None = None,
    mesh: Any = None,
    packing: bool = False,
    max_tokens: int = MAX_TOKENS,
) -> np.ndarray:
    """Embeddings of already-tokenized texts (ids with special tokens, at most max_seq_length long).
    With a `jax.sharding.Mesh` (one host's devices), each batch's rows are split over its devices
    (batch_size rounded up to a multiple of them) and the parameters replicated on each.
    `packing`: several texts per row (`_encode_packed`), else one text per row padded to a bucket,
    batch_size rows per call, fewer where the bucket is long: the most (a multiple of the devices, at
    least one per device) whose slots stay within `max_tokens`. The numbers do not depend on either."""
    n = len(ids)
    if n == 0:
        return np.zeros((0, model.config.hidden_size), np.float32)
    max_seq_length = min(max_seq_length, model.config.max_input_length)
    # The caller's buckets (or a ladder of them), capped, plus max_seq_length so every sentence fits one.
    buckets = padding.effective_buckets(buckets or padding.bucket_ladder(max_seq_length), max_seq_length)
    lengths = np.array([len(x) for x in ids])
    if lengths.max() > max_seq_length:
        raise ValueError(f"a text has {lengths.max()} tokens, more than max_seq_length {max_seq_length}")
    shards, put = 1, (lambda x: x)
    if mesh is not None:
        from trainer.mesh import batch_sharding, data_shards, replicated

        shards = data_shards(mesh)
        params = jax.device_put(params, replicated(mesh))  # a no-op when already placed so
        put = functools.partial(jax.device_put, device=batch_sharding(mesh))
    if packing:
        return _encode_packed(model, params, ids, lengths, pad_id, batch_size, buckets, shards, put)
    return _encode_padded(model, params, ids, lengths, pad_id, batch_size, buckets, shards, put, max_tokens)


def rows_per_call(width: int, batch_size: int, max_tokens: int, shards: int = 1) -> int:
    """Rows of a padded call at bucket `width`: batch_size (rounded up to a multiple of the shards), cut
    to the most multiples of the shards whose width x rows stay within max_tokens (one per shard at least)."""
    full = -(-batch_size // shards) * shards
    return min(full, max(shards, max_tokens // width // shards * shards))


def _encode_padded(model, params, ids, lengths, pad_id, batch_size, buckets, shards, put, max_tokens) -> np.ndarray:
    """Longest first, each call padded to the bucket of its longest text, `rows_per_call` texts."""
    n = len(ids)
    order = np.argsort(-lengths, kind="stable")
    apply = _jitted_apply(model)
    outs = []
    start = 0
    while start < n:
        width = padding.bucket_length(int(lengths[order[start]]), buckets)
        rows = rows_per_call(width, batch_size, max_tokens, shards)
        idx = order[start : start + rows]
        start += len(idx)
        # A short last batch keeps the full row count (filler rows are all padding) so shapes stay static.
        batch = np.full((rows, width), pad_id, np.int32)
        mask = np.zeros((rows, width), np.int32)
        for row, j in enumerate(idx):
            batch[row, : lengths[j]] = ids[j]
            mask[row, : lengths[j]] = 1
        # Dispatch is asynchronous: the next batch is padded on the host while this one runs.
        outs.append((apply(params, put(batch), put(mask)), len(idx)))
    emb = np.concatenate([np.asarray(o)[:k] for o, k in outs], axis=0)
    result = np.empty_like(emb)
    result[order] = emb
    return result


@functools.lru_cache(maxsize=16)
def _jitted_packed(model, num_texts: int) -> Any:
    return jax.jit(
        lambda params, ids, pos, text: model.apply(params, ids, pos, text, num_texts, method=type(model).packed)
    )


def _encode_packed(model, params, ids, lengths, pad_id, batch_size, buckets, shards, put) -> np.ndarray:
    """Texts back to back in rows (best-fit decreasing, trainer/data/packing.py), each attending only
    within itself with positions restarting (`SentenceEncoder.packed`): almost no padding is computed,
    where length-sorted bucket-padded batches compute up to a third. Rows are as long as the bucket of
    the longest text (one program per row length); a call holds about `batch_size` texts' tokens (the
    encoder's speed per token on CPU falls with larger calls). Same embeddings as padded, to rounding."""
    from trainer.data.packing import best_fit_decreasing, row_bucket

    n = len(ids)
    if lengths.min() < 1:
        raise ValueError("a text has no tokens (a tokenizer adds at least its special tokens)")
    row_len = padding.bucket_length(int(lengths.max()), buckets)
    bins, offsets, n_bins = best_fit_decreasing(lengths, row_len)
    # Rows per shard and call: a power of two, so that calls on texts of one distribution share a program.
    rows = row_bucket(-(-int(np.ceil(batch_size * lengths.mean() / row_len)) // shards), steps=1)
    # Texts per shard and call: at most what its rows hold (a text has >= 2 tokens with its special tokens).
    num_texts = rows * row_len // (2 if lengths.min() >= 2 else 1)
    apply = _jitted_packed(model, num_texts)
    by_bin = np.argsort(bins, kind="stable")
    starts = np.searchsorted(bins[by_bin], np.arange(n_bins + 1))
    shape = (shards, rows, row_len)
    outs = []
    for first in range(0, n_bins, rows * shards):
        p_ids, p_pos, p_text = np.full(shape, pad_id, np.int32), np.zeros(shape, np.int32), np.full(shape, -1, np.int32)
        slots = np.full((shards, num_texts), -1, np.int64)  # shard-local text number -> input index
        count = np.zeros(shards, np.int64)
        for b in range(first, min(first + rows * shards, n_bins)):
            s, r = divmod(b - first, rows)
            for i in by_bin[starts[b] : starts[b + 1]].tolist():
                o, k, t = int(offsets[i]), int(lengths[i]), int(count[s])
                p_ids[s, r, o : o + k] = ids[i]
                p_pos[s, r, o : o + k] = np.arange(k)
                p_text[s, r, o : o + k] = t
                slots[s, t] = i
                count[s] += 1
        outs.append((apply(params, put(p_ids), put(p_pos), put(p_text)), slots))
    result = np.empty((n, model.config.hidden_size), np.float32)
    for emb, slots in outs:
        keep = slots >= 0
        result[slots[keep]] = np.asarray(emb)[keep]
    return result
