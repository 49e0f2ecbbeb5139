"""Pooling: token states -> one vector per text, as sentence-transformers' `Pooling` module computes it.

Modes: `mean` (the reference recipe), `cls` (the first token), `max` (per-dimension maximum over the
text's tokens), `lasttoken` (the text's last token: [SEP] for BERT, </s> for RoBERTa). Padded rows
pool over their mask; packed rows (several texts per row, trainer/data/packing.py) pool per text with
segment ops, and give the same vectors. A text without tokens (batch filler) pools to zero in every
mode, so no NaN reaches the loss. The mode is read from a SentenceTransformers directory's
`1_Pooling/config.json` (either key layout) and written back by the export (`pooling_config`).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp

from pipeline.user_errors import UserError
from trainer.config import POOLING_MODES

# sentence-transformers' legacy boolean keys, in the order it concatenates them.
_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def check_mode(mode: str) -> str:
    if mode not in POOLING_MODES:
        raise ValueError(f"pooling must be one of {', '.join(POOLING_MODES)}, got {mode!r}")
    return mode


def mean_pool(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Mean of the token states over the mask, in float32 (sentence-transformers' Pooling, mean mode)."""
    m = attention_mask.astype(jnp.float32)[..., None]
    summed = jnp.sum(hidden.astype(jnp.float32) * m, axis=1)
    return summed / jnp.maximum(jnp.sum(m, axis=1), 1e-9)


def pool(hidden: jax.Array, attention_mask: jax.Array, mode: str = "mean") -> jax.Array:
    """Token states [B, L, H] and mask [B, L] (1 = token; right padding) -> float32 [B, H]."""
    if check_mode(mode) == "mean":
        return mean_pool(hidden, attention_mask)
    h, m = hidden.astype(jnp.float32), attention_mask.astype(bool)
    if mode == "max":
        out = jnp.max(jnp.where(m[..., None], h, -jnp.inf), axis=1)
    else:  # cls: the first token of the mask; lasttoken: its last one
        first = jnp.argmax(m, axis=1)
        idx = first if mode == "cls" else m.shape[1] - 1 - jnp.argmax(m[:, ::-1], axis=1)
        out = jnp.take_along_axis(h, idx[:, None, None], axis=1)[:, 0]
    return jnp.where(jnp.any(m, axis=1)[:, None], out, 0.0)


def packed_pool(
    hidden: jax.Array, text_index: jax.Array, positions: jax.Array, num_texts: int, mode: str = "mean"
) -> jax.Array:
    """Token states [N, H] of packed rows, flattened, with each token's text (text_index [N], -1 =
    padding) and 0-based position in its text (positions [N]) -> float32 [num_texts, H]."""
    check_mode(mode)
    seg = jnp.where(text_index >= 0, text_index, num_texts)  # padding -> an extra segment, dropped
    n = num_texts + 1
    h = hidden.astype(jnp.float32)
    counts = jax.ops.segment_sum(jnp.ones(seg.shape, jnp.float32), seg, num_segments=n)[:num_texts]
    if mode == "mean":
        return jax.ops.segment_sum(h, seg, num_segments=n)[:num_texts] / jnp.maximum(counts, 1e-9)[:, None]
    if mode == "max":
        out = jax.ops.segment_max(h, seg, num_segments=n)[:num_texts]  # -inf for a text without tokens
        return jnp.where(counts[:, None] > 0, out, 0.0)
    # cls / lasttoken: one token per text (position 0, or the text's highest position); a sum over one
    # token with exact zeros elsewhere is that token's state, bit for bit.
    if mode == "cls":
        pick = positions == 0
    else:
        last = jax.ops.segment_max(positions, seg, num_segments=n)
        pick = positions == last[seg]
    pick &= text_index >= 0
    return jax.ops.segment_sum(jnp.where(pick[:, None], h, 0.0), seg, num_segments=n)[:num_texts]


# ------------------------------------------------------------------------------ the config file


def _st_modules(st_dir: str) -> list[dict]:
    path = os.path.join(st_dir, "modules.json")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _st_root(model_dir: str) -> str | None:
    """The SentenceTransformers directory that `model_dir` (the Transformer module's folder) belongs
    to: itself, or its parent when the parent's modules.json names it (old `0_Transformer/` layouts)."""
    if _st_modules(model_dir):
        return model_dir
    parent = os.path.dirname(os.path.abspath(model_dir))
    for m in _st_modules(parent):
        if m.get("type", "").endswith("Transformer") and os.path.abspath(
            os.path.join(parent, m.get("path", ""))
        ) == os.path.abspath(model_dir):
            return parent
    return None


def source_pooling_mode(model_dir: str) -> str | None:
    """The pooling mode of the SentenceTransformers model around `model_dir` (its Pooling module's
    config.json), or None when it is a plain Hugging Face model (sentence-transformers pools those by
    mean). A mode this encoder lacks is a UserError."""
    root = _st_root(model_dir)
    if root is None:
        return None
    pooling = [m for m in _st_modules(root) if m.get("type", "").endswith(".Pooling")]
    if not pooling:
        return None
    path = os.path.join(root, pooling[0].get("path", ""), "config.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    modes = cfg.get("pooling_mode")
    if modes is None:  # the legacy layout: one boolean per mode; none set means mean
        modes = [mode for key, mode in _LEGACY_KEYS.items() if cfg.get(key)] or ["mean"]
    modes = [modes] if isinstance(modes, str) else list(modes)
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise UserError(
            f"{path}: pooling {'+'.join(map(str, modes))} is not implemented by the Flax encoder "
            f"(it has {', '.join(POOLING_MODES)}); choose one with --pooling"
        )
    return modes[0]


def pooling_config(mode: str, dimension: int) -> dict:
    """1_Pooling/config.json in the legacy key layout, which every sentence-transformers release reads."""
    check_mode(mode)
    cfg = {"word_embedding_dimension": dimension, "include_prompt": True}
    cfg.update({key: key_mode == mode for key, key_mode in _LEGACY_KEYS.items()})
    return cfg
