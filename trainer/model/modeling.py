"""The Flax encoder: BERT / RoBERTa / XLM-RoBERTa, configured from a Hugging Face `config.json`.

It computes what the PyTorch `BertModel` / `RobertaModel` compute (post-layer-norm blocks, absolute
position embeddings, padding-masked attention) so that Hugging Face weights load by name and exported
models give the same embeddings in sentence-transformers. TensorFlow-free and torch-free.

Parameter tree of `SentenceEncoder` (the variables passed to `apply`):

    {"params": {"encoder": {
        "embeddings": {"word_embeddings": {"embedding"}, "position_embeddings": {"embedding"},
                       "token_type_embeddings": {"embedding"}, "LayerNorm": {"scale", "bias"}},
        "layer_0": {"query", "key", "value", "attention_output", "intermediate", "output": {"kernel", "bias"},
                    "attention_layer_norm", "output_layer_norm": {"scale", "bias"}},
        ..., "layer_{N-1}": {...}}}}

`Encoder` alone has the tree under "encoder" (without that key). Parameters are float32 whatever
the compute dtype; `trainer/model/hf_loading.py` maps them to and from Hugging Face names.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.ad_checkpoint import checkpoint_name

from trainer.model.pooling import check_mode, packed_pool, pool

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")
_ROBERTA_LIKE = ("roberta", "xlm-roberta")

# Hugging Face activation names (transformers.activations.ACT2FN) that these encoders use.
_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    # Exact GELU as torch writes it, x/2 (1 + erf(x/sqrt 2)): XLA's erf is a short polynomial,
    # cheaper on CPU than the erfc (exp + rational) that jax.nn.gelu(approximate=False) uses.
    "gelu": lambda x: 0.5 * x * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0)))),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


@dataclasses.dataclass(frozen=True)  # frozen: hashable, so a Flax module field and a jit static arg
class EncoderConfig:
    model_type: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"unsupported model_type {self.model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {self.hidden_act!r}; supported: {', '.join(_ACTIVATIONS)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )

    @property
    def roberta_like(self) -> bool:
        return self.model_type in _ROBERTA_LIKE

    @property
    def max_input_length(self) -> int:
        """Longest input the position table allows (RoBERTa spends padding_idx+1 rows on offsets)."""
        if self.roberta_like:
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "EncoderConfig":
        """From a Hugging Face `config.json` dict; unknown keys are ignored, unsupported features refused."""
        model_type = d.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
        pos_type = d.get("position_embedding_type", "absolute") or "absolute"
        if pos_type != "absolute":
            raise ValueError(f"unsupported position_embedding_type {pos_type!r}; only 'absolute' is implemented")
        if d.get("is_decoder") or d.get("add_cross_attention"):
            raise ValueError("decoder / cross-attention configurations are not supported; this is an encoder")
        kw = {f.name: d[f.name] for f in dataclasses.fields(cls) if d.get(f.name) is not None}
        if d.get("pad_token_id") is None:  # HF defaults: BERT pads with 0, RoBERTa with 1
            kw["pad_token_id"] = 1 if model_type in _ROBERTA_LIKE else 0
        return cls(**kw)

    def to_hf_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["position_embedding_type"] = "absolute"
        return d


def _dense(features: int, cfg: EncoderConfig, dtype: Any, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.normal(cfg.initializer_range),
        name=name,
    )


class _DenseParams(nn.Module):
    """The float32 kernel [in, features] and bias of a dense layer, for callers that fuse several."""

    features: int
    config: EncoderConfig

    @nn.compact
    def __call__(self):
        fan_in = self.config.hidden_size
        kernel = self.param(
            "kernel", nn.initializers.normal(self.config.initializer_range), (fan_in, self.features), jnp.float32
        )
        return kernel, self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)


def _layer_norm(cfg: EncoderConfig, dtype: Any, name: str) -> nn.LayerNorm:
    # Two-pass variance (use_fast_variance=False): E[x^2]-E[x]^2 loses digits on BERT's large activations.
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps, dtype=dtype, param_dtype=jnp.float32, use_fast_variance=False, name=name
    )


def position_ids(input_ids: jax.Array, cfg: EncoderConfig) -> jax.Array:
    """BERT counts positions from 0; RoBERTa counts non-padding tokens from padding_idx+1 and gives
    padding tokens position padding_idx (as transformers' create_position_ids_from_input_ids)."""
    if cfg.roberta_like:
        not_pad = (input_ids != cfg.pad_token_id).astype(jnp.int32)
        return jnp.cumsum(not_pad, axis=1) * not_pad + cfg.pad_token_id
    return jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)


def offset_positions(positions: jax.Array, cfg: EncoderConfig) -> jax.Array:
    """0-based token positions within each text -> position-table rows (RoBERTa starts at padding_idx+1)."""
    return positions + (cfg.pad_token_id + 1 if cfg.roberta_like else 0)


def packed_attention_mask(text_index: jax.Array) -> jax.Array:
    """[B, L] text index per token (-1 = padding) -> [B, L, L] bool: a token sees only its own text."""
    return (text_index[:, :, None] == text_index[:, None, :]) & (text_index[:, None, :] >= 0)


def _mix32(x: jax.Array) -> jax.Array:
    """lowbias32 (C. Wellons' hash-prospector): a bijective, fully avalanching uint32 -> uint32 hash."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


# Dropout is a function of (seed, step, site, text, position within the text, unit), never of where a
# token sits in memory: padded or packed rows, 1 or 8 devices, gradient-caching chunks or none give the
# same masks, so a memory plan cannot change the math. A token's identity is its text's index in the
# global batch (column-major: column * B + row) and its position within the text.
POSITION_BITS = 12  # positions < 4096 (BERT/RoBERTa: 512)
MAX_DROPOUT_TEXTS = 1 << (32 - POSITION_BITS)  # texts per global batch (all columns) < 2^20
MAX_DROPOUT_POSITIONS = 1 << POSITION_BITS


def check_dropout_identity_range(num_texts: int, length: int) -> None:
    """Beyond these bounds two tokens would share an identity, hence a dropout mask, silently: refused
    at trace time (both are static shapes)."""
    if num_texts > MAX_DROPOUT_TEXTS:
        raise ValueError(
            f"dropout identities hold at most {MAX_DROPOUT_TEXTS:,} texts per global batch "
            f"(2^{32 - POSITION_BITS}, all columns), got {num_texts:,}"
        )
    if length > MAX_DROPOUT_POSITIONS:
        raise ValueError(
            f"dropout identities hold at most {MAX_DROPOUT_POSITIONS:,} positions per text "
            f"(2^{POSITION_BITS}), got a sequence length of {length:,}"
        )


def dropout_token_ids(text_index: jax.Array, positions: jax.Array, *, num_texts: int, length: int) -> jax.Array:
    """uint32 identity of each token: (global text index < num_texts, 0-based position within its text
    < length), hashed. The bounds are the caller's static shapes, checked (check_dropout_identity_range)."""
    check_dropout_identity_range(num_texts, length)
    t = text_index.astype(jnp.uint32) << POSITION_BITS
    return _mix32(t | positions.astype(jnp.uint32))


def default_dropout_token_ids(shape: tuple[int, int], positions: jax.Array | None = None) -> jax.Array:
    """Identities when the caller gives none: row r holds text r, positions count from 0 (or `positions`)."""
    b, l = shape
    rows = jax.lax.broadcasted_iota(jnp.int32, (b, l), 0)
    pos = jax.lax.broadcasted_iota(jnp.int32, (b, l), 1) if positions is None else positions
    return dropout_token_ids(rows, pos, num_texts=b, length=l)


def _threshold(rate: float) -> jax.Array:
    return jnp.uint32(min(round(rate * (1 << 32)), (1 << 32) - 1))


def hidden_keep_mask(seed: jax.Array, token_ids: jax.Array, units: int, rate: float) -> jax.Array:
    """Keep mask [B, L, units] of Bernoulli(1 - rate): hash of (seed, token identity, unit).

    One multiply-xorshift hash per element (threefry's 20 rounds, as jax.random.bernoulli draws them,
    cost over 10% of a CPU training step); the per-token and per-unit parts are hashed once each."""
    tok = _mix32(token_ids ^ seed)  # [B, L]
    unit = _mix32(jax.lax.iota(jnp.uint32, units) + jnp.uint32(0x9E3779B9))  # [units]
    return _mix32(tok[..., None] ^ unit) >= _threshold(rate)


def attention_keep_mask(seed: jax.Array, token_ids: jax.Array, heads: int, rate: float) -> jax.Array:
    """Keep mask [B, heads, L, L] for attention probabilities: hash of (seed, query token, head, key token).
    Query and key are named by their identities, so the mask of a (query, key) pair of one text is the
    same wherever the text lies; pairs across texts have zero probability and any mask."""
    q = _mix32(token_ids ^ seed)  # [B, L]
    head = _mix32((jax.lax.iota(jnp.uint32, heads) + jnp.uint32(1)) * jnp.uint32(0x9E3779B9) ^ seed)  # [heads]
    k = _mix32(token_ids[:, None, :] ^ head[None, :, None])  # [B, heads, L]
    return _mix32(q[:, None, :, None] ^ k[:, :, None, :]) >= _threshold(rate)


class Dropout(nn.Module):
    """Inverted dropout (as nn.Dropout) of [B, L, H] activations with layout-invariant masks
    (`hidden_keep_mask`); `attention` applies `attention_keep_mask` itself, from this module's `seed`.
    The seed is this site's draw from the "dropout" rng (Flax folds in the module path), so sites and
    steps differ."""

    rate: float

    @nn.compact
    def __call__(self, x, token_ids, deterministic: bool):
        if deterministic or self.rate == 0.0:
            return x
        if self.rate >= 1.0:
            return jnp.zeros_like(x)
        keep = hidden_keep_mask(self.seed(), token_ids, x.shape[-1], self.rate)
        return jnp.where(keep, x / jnp.asarray(1.0 - self.rate, x.dtype), jnp.zeros((), x.dtype))

    def seed(self) -> jax.Array:
        """This site's uint32 seed for the step (for callers that apply the mask themselves: `attention`)."""
        return jax.random.bits(self.make_rng("dropout"), (), jnp.uint32)


# ------------------------------------------------------------------------------------- attention
#
# softmax(q k^T, masked) v with dropout on the probabilities, in a form that stores nothing of the
# scores' size: the forward keeps the unnormalised exp(s - max) only inside its fusion and divides the
# [L, d] product by the row sums (not the [L, L] probabilities); the backward (a custom VJP, as flash
# attention's) recomputes the scores from q and k and the dropout mask from its hash, so a training
# step saves q, k, v, the output and two float32 per query and head per layer. Without it XLA keeps
# float32 scores, probabilities and masks of every layer for the backward pass, and on TPU recomputed
# matmuls to fit them (+25.7% FLOPs at roberta-large's 256 x 128 rows per v3 core; this attention with
# --remat=qkv: +9.9%, docs/tpu.md). Scores are float32 in float32 and as the compute
# dtype rounds them in bfloat16, then widened: the softmax's max, exp and row sums run in float32.


def _scores(q, k, keep):
    s = jnp.einsum("bnqd,bnkd->bnqk", q, k).astype(jnp.float32)
    # Masked keys get the float32 minimum, as an added bias of 0 or the minimum: s + 0 is s, and the
    # minimum absorbs any score under 1e31 without overflowing, so these are the numbers of a `where`
    # (bit for bit), but XLA's CPU library fusion takes the add into the softmax instead of a pass of
    # its own over the scores (-25% of the attention's time at 8 x 512). An all-padding row (batch
    # filler) then attends uniformly instead of producing NaN.
    return s + jnp.where(keep, 0.0, jnp.finfo(jnp.float32).min)


def _dropped(p, rate, seed, token_ids):
    """Inverted dropout of [B, heads, L, L] probabilities (`attention_keep_mask`): p itself at rate 0."""
    if seed is None:
        return p
    keep = attention_keep_mask(seed, token_ids, p.shape[1], rate)
    return jnp.where(keep, p * jnp.asarray(1.0 / (1.0 - rate), p.dtype), jnp.zeros((), p.dtype))


def _attention_forward(q, k, v, keep, rate, seed, token_ids):
    s = _scores(q, k, keep)
    m = jnp.max(s, axis=-1, keepdims=True)
    e = jnp.exp(s - m)
    den = jnp.sum(e, axis=-1, keepdims=True)
    ctx = jnp.einsum(
        "bnqk,bnkd->bnqd", _dropped(e, rate, seed, token_ids).astype(q.dtype), v, preferred_element_type=jnp.float32
    )
    # The row max and sum, not their log-sum-exp: on an all-masked row the max is the float32 minimum,
    # which absorbs log(den), and the recomputed probabilities would be 1, not 1/L.
    return (ctx / den).astype(q.dtype), (m, den)


# Inference on CPU splits the queries into blocks (a loop over blocks, each seeing every key) when a
# text's [L, L] scores per head exceed this many elements: XLA's CPU library fusion (YNNPACK) runs
# the softmax and the product with v per row and head, and past about 2^16 float32 (256 KiB; the
# development machine's L2 is 1 MiB per core) it slows 2-3x (8 x 512: 204 ms CPU per layer
# unblocked, 76 ms in 4 blocks of 128 queries; 8 x 384: 75 and 45 ms; up to 256 x 256, blocks only
# add work). Each query row still reduces over all its keys in one piece, so the numbers are those
# of the unblocked form.
SCORE_BLOCK_ELEMENTS = 1 << 16


def query_blocks(shape: tuple[int, ...], max_scores: int | None = None) -> int:
    """How many query blocks attention at q's shape [B, heads, L, d] uses: the fewest (a power of two
    dividing L, blocks of at least 16 queries) whose [L / blocks, L] scores per text and head fit
    max_scores (default SCORE_BLOCK_ELEMENTS)."""
    l = shape[2]
    max_scores = SCORE_BLOCK_ELEMENTS if max_scores is None else max_scores
    blocks = 1
    while (l // blocks) * l > max_scores and l % (2 * blocks) == 0 and l // (2 * blocks) >= 16:
        blocks *= 2
    return blocks


def _blocked_forward(q, k, v, keep, blocks):
    """The inference forward (no dropout) one block of queries at a time: [B, heads, L, d]."""
    b, n, l, d = q.shape

    def split(t):  # [B, heads, L, last] -> [blocks, B, heads, L / blocks, last]
        return jnp.moveaxis(t.reshape(*t.shape[:2], blocks, l // blocks, t.shape[-1]), 2, 0)

    if keep.shape[2] == 1:  # a key mask: the same for every block
        out = jax.lax.map(lambda qi: _attention_forward(qi, k, v, keep, 0.0, None, None)[0], split(q))
    else:  # a query-key mask (packed rows): each block takes its rows
        keep = jnp.broadcast_to(keep, (b, keep.shape[1], l, l))
        out = jax.lax.map(lambda a: _attention_forward(a[0], k, v, a[1], 0.0, None, None)[0], (split(q), split(keep)))
    return jnp.moveaxis(out, 0, 2).reshape(b, n, l, d)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 7))
def _attention(q, k, v, keep, rate, seed, token_ids, blocks):
    # Not differentiated (inference): blocked on CPU; other platforms (the TPU plan) keep one fusion.
    if seed is None and blocks > 1:
        return jax.lax.platform_dependent(
            q,
            k,
            v,
            keep,
            cpu=functools.partial(_blocked_forward, blocks=blocks),
            default=lambda *a: _attention_forward(*a, 0.0, None, None)[0],
        )
    return _attention_forward(q, k, v, keep, rate, seed, token_ids)[0]


def _attention_fwd(q, k, v, keep, rate, seed, token_ids, blocks):
    out, stats = _attention_forward(q, k, v, keep, rate, seed, token_ids)
    return out, (q, k, v, keep, seed, token_ids, out, stats)


def _attention_bwd(rate, blocks, res, g):
    q, k, v, keep, seed, token_ids, out, (m, den) = res
    p = jnp.exp(_scores(q, k, keep) - m) / den  # the forward's probabilities, recomputed
    dv = jnp.einsum("bnqk,bnqd->bnkd", _dropped(p, rate, seed, token_ids).astype(v.dtype), g)
    dp = _dropped(jnp.einsum("bnqd,bnkd->bnqk", g, v).astype(jnp.float32), rate, seed, token_ids)
    # softmax's backward, p (dp - sum_k p dp): the row sum equals sum_d g * out (dropout included).
    row = jnp.sum(g.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    ds = jnp.where(keep, p * (dp - row), 0.0).astype(q.dtype)
    dq = jnp.einsum("bnqk,bnkd->bnqd", ds, k)
    dk = jnp.einsum("bnqk,bnqd->bnkd", ds, q)
    return dq, dk, dv, None, None, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def attention(
    q, k, v, keep, rate: float = 0.0, seed=None, token_ids=None, max_block_scores: int | None = None
) -> jax.Array:
    """Context [B, heads, L, d] of q (already scaled by 1/sqrt(d)), k, v [B, heads, L, d] in the compute
    dtype; `keep`: bool, broadcastable to [B, heads, L, L] (True: the query sees the key). Dropout of
    the probabilities at `rate` with `attention_keep_mask(seed, token_ids, ...)` when `seed` is given.
    Inference on CPU runs `query_blocks(q.shape, max_block_scores)` blocks of queries in turn."""
    if seed is not None and token_ids is None:
        raise ValueError("attention dropout needs the tokens' dropout identities (token_ids)")
    return _attention(q, k, v, keep, rate, seed, token_ids, query_blocks(q.shape, max_block_scores))


class Embeddings(nn.Module):
    config: EncoderConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids, token_ids, deterministic: bool = True, positions=None):
        cfg = self.config
        init = nn.initializers.normal(cfg.initializer_range)

        def embed(n, name):
            return nn.Embed(
                n, cfg.hidden_size, dtype=self.dtype, param_dtype=jnp.float32, embedding_init=init, name=name
            )

        x = embed(cfg.vocab_size, "word_embeddings")(input_ids)
        pos = position_ids(input_ids, cfg) if positions is None else offset_positions(positions, cfg)
        x = x + embed(cfg.max_position_embeddings, "position_embeddings")(pos)
        # Single-segment inputs: token type 0 everywhere, as sentence-transformers feeds them.
        x = x + embed(cfg.type_vocab_size, "token_type_embeddings")(jnp.zeros_like(input_ids))
        x = _layer_norm(cfg, self.dtype, "LayerNorm")(x)
        return Dropout(cfg.hidden_dropout_prob)(x, token_ids, deterministic)


class Layer(nn.Module):
    """One post-layer-norm transformer block."""

    config: EncoderConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, attention_mask, token_ids, deterministic: bool = True):
        cfg = self.config
        b, l, h = x.shape
        n = cfg.num_attention_heads
        d = h // n

        # One [H, 3H] matmul for query, key and value (kept as three parameters, Hugging Face's
        # layout): one large dot is faster than three small ones on CPU and no slower elsewhere.
        wq, wk, wv = (_DenseParams(h, cfg, name=name)() for name in ("query", "key", "value"))
        kernel = jnp.concatenate([wq[0], wk[0], wv[0]], axis=1).astype(self.dtype)
        bias = jnp.concatenate([wq[1], wk[1], wv[1]]).astype(self.dtype)
        qkv = (jnp.dot(x.astype(self.dtype), kernel) + bias).reshape(b, l, 3, n, d)
        # Heads first ([3, B, heads, L, d]): the attention's batched products then run on contiguous
        # [L, d] blocks (XLA's CPU dot otherwise copies per head; 2x faster at 16 x 256).
        q, k, v = jnp.transpose(qkv, (2, 0, 3, 1, 4))
        q = q * jnp.asarray(1.0 / math.sqrt(d), self.dtype)
        # [B, L] key mask, or [B, L, L] query-key mask (packed rows: block-diagonal per text).
        keep = (attention_mask[:, None, None, :] if attention_mask.ndim == 2 else attention_mask[:, None]).astype(bool)
        # The attention-probability dropout's seed is drawn by the site that drew it before (Dropout_0),
        # so the masks, and the losses, are those of the unfused formulation.
        drop = Dropout(cfg.attention_probs_dropout_prob)
        rate = 0.0 if deterministic else cfg.attention_probs_dropout_prob
        seed = drop.seed() if 0.0 < rate < 1.0 else None
        ctx = attention(q, k, v, keep, rate, seed, token_ids if seed is not None else None)
        if rate >= 1.0:
            ctx = jnp.zeros_like(ctx)
        ctx = jnp.transpose(ctx, (0, 2, 1, 3)).reshape(b, l, h)
        a = checkpoint_name(_dense(h, cfg, self.dtype, "attention_output")(ctx), "attention_output")
        a = Dropout(cfg.hidden_dropout_prob)(a, token_ids, deterministic)
        x = _layer_norm(cfg, self.dtype, "attention_layer_norm")(a + x)

        f = checkpoint_name(_dense(cfg.intermediate_size, cfg, self.dtype, "intermediate")(x), "intermediate")
        f = checkpoint_name(_dense(h, cfg, self.dtype, "output")(_ACTIVATIONS[cfg.hidden_act](f)), "output")
        f = Dropout(cfg.hidden_dropout_prob)(f, token_ids, deterministic)
        return _layer_norm(cfg, self.dtype, "output_layer_norm")(f + x)


# Rematerialisation (activation checkpointing) of each encoder block in the backward pass:
#   "none": keep every activation; "full": keep only each block's input (~1/3 more compute);
#   "dots": keep the outputs of the weight matmuls, recompute the cheap rest (the attention's forward,
#           GELU, LayerNorm, dropout): +0.8% of a step's FLOPs for ~2.5 of the ~14 [tokens, hidden]
#           bfloat16 values "none" keeps per block (4-layer roberta-large at 256 x 128 per v3 core).
#   "qkv":  keep the block's input and the attention-output, intermediate and output matmuls' results;
#           recompute the query/key/value matmul and the attention (1/4 of the block's forward
#           FLOPs, +8.3% of a step's): ~3 values per token fewer than "dots" (docs/tpu.md).
# A per-layer mix "dots:7,qkv:17" (counts in layer order, summing to the layer count) gives each block
# its own mode: memory.RematPlan chooses it per program, recomputing only as many blocks as must be.
REMAT_POLICIES = {
    "none": None,
    "full": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "qkv": jax.checkpoint_policies.save_only_these_names("attention_output", "intermediate", "output"),
}


def remat_mode(remat: bool | str) -> str:
    """The remat spec of `remat` (a flag value, or a per-layer mix as `layer_modes` reads it)."""
    mode = ("full" if remat else "none") if isinstance(remat, bool) else remat
    if mode == "auto":  # chosen per program shape by the train step (trainer/train/memory.py RematPlan)
        return "none"
    if mode not in REMAT_POLICIES and not _MIX.fullmatch(mode):
        raise ValueError(f"remat must be one of {', '.join(REMAT_POLICIES)} or a mix like dots:7,qkv:17, got {remat!r}")
    return mode


_MIX = re.compile(rf"(?:{'|'.join(REMAT_POLICIES)}):\d+(?:,(?:{'|'.join(REMAT_POLICIES)}):\d+)*")


def layer_modes(remat: bool | str, layers: int) -> tuple[str, ...]:
    """Each block's remat mode: one mode for all, or a mix "dots:7,qkv:17" whose counts sum to `layers`."""
    mode = remat_mode(remat)
    if mode in REMAT_POLICIES:
        return (mode,) * layers
    out = tuple(m for part in mode.split(",") for m, n in [part.split(":")] for _ in range(int(n)))
    if len(out) != layers:
        raise ValueError(f"remat mix {mode!r} covers {len(out)} layers, the encoder has {layers}")
    return out


def remat_mix(counts: dict[str, int]) -> str:
    """The spec of `counts` (mode -> layers, in the order given): one mode's name when one mode has them all."""
    parts = [(m, n) for m, n in counts.items() if n > 0]
    return parts[0][0] if len(parts) == 1 else ",".join(f"{m}:{n}" for m, n in parts)


@functools.cache  # one remat class per mode, not per layer
def _block(mode: str) -> Any:
    return Layer if mode == "none" else nn.remat(Layer, static_argnums=(4,), policy=REMAT_POLICIES[mode])


class Encoder(nn.Module):
    """Token ids [B, L] and attention mask [B, L] (1 = token, 0 = padding) -> last hidden states [B, L, H]
    in the compute dtype. Packed rows (several texts per row) pass a [B, L, L] mask and `positions`
    (0-based within each text). Dropout (deterministic=False) draws from the "dropout" rng collection,
    per token by `token_ids` (`dropout_token_ids`; default: row r is text r). `remat`: see REMAT_POLICIES."""

    config: EncoderConfig
    dtype: Any = jnp.float32
    remat: bool | str = "none"

    @nn.compact
    def __call__(self, input_ids, attention_mask, deterministic: bool = True, positions=None, token_ids=None):
        if input_ids.shape[1] > self.config.max_input_length:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds the model's {self.config.max_input_length} positions"
            )
        if token_ids is None and not deterministic:  # identities bound the length: inference needs none
            token_ids = default_dropout_token_ids(input_ids.shape, positions)
        x = Embeddings(self.config, self.dtype, name="embeddings")(input_ids, token_ids, deterministic, positions)
        for i, mode in enumerate(layer_modes(self.remat, self.config.num_hidden_layers)):
            x = _block(mode)(self.config, self.dtype, name=f"layer_{i}")(x, attention_mask, token_ids, deterministic)
        return x


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps), as torch.nn.functional.normalize; an all-zero row stays zero."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class SentenceEncoder(nn.Module):
    """Encoder -> pooling (trainer/model/pooling.py: mean, cls, max, lasttoken) -> L2 normalisation:
    unit-norm float32 embeddings [B, H]. Variables: {"params": {"encoder": <Encoder tree>}} (see the
    module docstring); pooling has no parameters."""

    config: EncoderConfig
    dtype: Any = jnp.float32
    remat: bool | str = "none"
    pooling: str = "mean"

    def setup(self):
        check_mode(self.pooling)
        self.encoder = Encoder(self.config, self.dtype, self.remat)

    def __call__(self, input_ids, attention_mask, deterministic: bool = True, token_ids=None):
        hidden = self.encoder(input_ids, attention_mask, deterministic, token_ids=token_ids)
        return l2_normalize(pool(hidden, attention_mask, self.pooling))

    def packed(self, input_ids, positions, text_index, num_texts: int, deterministic: bool = True, token_ids=None):
        """Embeddings of packed rows: ids / positions / text_index [S, R, L] (S shards of R rows, each row
        holding whole texts back to back; text_index numbers a shard's texts 0..num_texts-1, -1 = padding)
        -> unit-norm float32 [S, num_texts, H]. Same embeddings as `__call__` on the texts one per row.
        `token_ids` [S, R, L]: dropout identities (default: shard-local text index and position)."""
        s, r, l = input_ids.shape
        flat = lambda t: t.reshape(s * r, l)
        if token_ids is None and not deterministic:  # shard-local text t of shard i is text i * num_texts + t
            shard = jax.lax.broadcasted_iota(jnp.int32, text_index.shape, 0)
            token_ids = dropout_token_ids(
                shard * num_texts + jnp.maximum(text_index, 0), positions, num_texts=s * num_texts, length=l
            )
        hidden = self.encoder(
            flat(input_ids),
            packed_attention_mask(flat(text_index)),
            deterministic,
            flat(positions),
            None if token_ids is None else flat(token_ids),
        )
        pooled = jax.vmap(lambda h, t, p: packed_pool(h, t, p, num_texts, self.pooling))(
            hidden.reshape(s, r * l, -1), text_index.reshape(s, r * l), positions.reshape(s, r * l)
        )
        return l2_normalize(pooled)

    def hidden_states(self, input_ids, attention_mask, deterministic: bool = True):
        """Token states [B, L, H]: `model.apply(v, ids, mask, method=SentenceEncoder.hidden_states)`."""
        return self.encoder(input_ids, attention_mask, deterministic)
