"""The cases and synthetic batches both sides of bench/bench_gpu.py train on (no JAX, no PyTorch)."""

from __future__ import annotations

import types

import numpy as np

CASES = {
    # name: (model_type, hidden, layers, heads, intermediate, vocab, max_positions, pad_id)
    "minilm": ("bert", 384, 6, 12, 1536, 30522, 512, 0),
    "large": ("roberta", 1024, 24, 16, 4096, 50265, 514, 1),
    "tiny": ("bert", 32, 2, 2, 64, 1000, 128, 0),
}
WARMUP_BATCHES = 2  # batches 0 and 1: ST's warm-up; both sides time the batches after them
COLUMNS = ("anchor", "positive")


def encoder_shape(model: str) -> types.SimpleNamespace:
    """What trainer/plan/flops.py reads of an encoder config (no JAX needed)."""
    _, h, nl, _, inter, *_ = CASES[model]
    return types.SimpleNamespace(hidden_size=h, num_hidden_layers=nl, intermediate_size=inter)


def synthetic_batches(n: int, batch: int, median_len: int, max_len: int, vocab: int, pad: int, seed: int = 0):
    """n pair batches: {column: (ids [B, Lmax] int32, lengths [B])} with log-normal text lengths."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        b = {}
        for col in COLUMNS:
            lengths = np.clip(np.round(rng.lognormal(np.log(median_len), 0.6, size=batch)), 4, max_len).astype(int)
            ids = rng.integers(5, vocab, size=(batch, max_len)).astype(np.int32)
            ids[:, 0] = 0 if pad != 0 else 101  # a CLS-like first token
            ids[np.arange(max_len)[None, :] >= lengths[:, None]] = pad
            b[col] = (ids, lengths)
        out.append(b)
    return out


def longest_text(b: dict) -> int:
    """L_st: the batch's longest text, the padded length of ST's largest forward call."""
    return max(int(ln.max()) for _, ln in b.values())
