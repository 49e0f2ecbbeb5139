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
the compute dtype; `trainer/hf_loading.py` maps them to and from Hugging Face names.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")
_ROBERTA_LIKE = ("roberta", "xlm-roberta")

# Hugging Face activation names (transformers.activations.ACT2FN) that these encoders use.
_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # exact erf GELU, as torch's default
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
            raise ValueError(
                f"unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
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


class Embeddings(nn.Module):
    config: EncoderConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids, deterministic: bool = True):
        cfg = self.config
        init = nn.initializers.normal(cfg.initializer_range)

        def embed(n, name):
            return nn.Embed(n, cfg.hidden_size, dtype=self.dtype, param_dtype=jnp.float32, embedding_init=init, name=name)

        x = embed(cfg.vocab_size, "word_embeddings")(input_ids)
        x = x + embed(cfg.max_position_embeddings, "position_embeddings")(position_ids(input_ids, cfg))
        # Single-segment inputs: token type 0 everywhere, as sentence-transformers feeds them.
        x = x + embed(cfg.type_vocab_size, "token_type_embeddings")(jnp.zeros_like(input_ids))
        x = _layer_norm(cfg, self.dtype, "LayerNorm")(x)
        return nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


class Layer(nn.Module):
    """One post-layer-norm transformer block."""

    config: EncoderConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, attention_mask, deterministic: bool = True):
        cfg = self.config
        b, l, h = x.shape
        n = cfg.num_attention_heads
        d = h // n

        def heads(t):
            return t.reshape(b, l, n, d)

        q = heads(_dense(h, cfg, self.dtype, "query")(x))
        k = heads(_dense(h, cfg, self.dtype, "key")(x))
        v = heads(_dense(h, cfg, self.dtype, "value")(x))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(d)
        # Masked keys get the float32 minimum (a `where`, not an add, so nothing overflows): an
        # all-padding row (batch filler) then attends uniformly instead of producing NaN.
        keep = attention_mask[:, None, None, :].astype(bool)
        scores = jnp.where(keep, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)  # softmax in float32 even under bf16
        probs = nn.Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, l, h)
        a = _dense(h, cfg, self.dtype, "attention_output")(ctx)
        a = nn.Dropout(cfg.hidden_dropout_prob)(a, deterministic=deterministic)
        x = _layer_norm(cfg, self.dtype, "attention_layer_norm")(a + x)

        f = _ACTIVATIONS[cfg.hidden_act](_dense(cfg.intermediate_size, cfg, self.dtype, "intermediate")(x))
        f = _dense(h, cfg, self.dtype, "output")(f)
        f = nn.Dropout(cfg.hidden_dropout_prob)(f, deterministic=deterministic)
        return _layer_norm(cfg, self.dtype, "output_layer_norm")(f + x)


class Encoder(nn.Module):
    """Token ids [B, L] and attention mask [B, L] (1 = token, 0 = padding) -> last hidden states [B, L, H]
    in the compute dtype. Dropout (deterministic=False) draws from the "dropout" rng collection.
    `remat=True` recomputes each block's activations in the backward pass (less memory, ~1/3 more compute)."""

    config: EncoderConfig
    dtype: Any = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, input_ids, attention_mask, deterministic: bool = True):
        if input_ids.shape[1] > self.config.max_input_length:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds the model's {self.config.max_input_length} positions"
            )
        x = Embeddings(self.config, self.dtype, name="embeddings")(input_ids, deterministic)
        block = nn.remat(Layer, static_argnums=(3,)) if self.remat else Layer
        for i in range(self.config.num_hidden_layers):
            x = block(self.config, self.dtype, name=f"layer_{i}")(x, attention_mask, deterministic)
        return x


def mean_pool(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Mean of the token states over the mask, in float32 (sentence-transformers' Pooling, mean mode)."""
    m = attention_mask.astype(jnp.float32)[..., None]
    summed = jnp.sum(hidden.astype(jnp.float32) * m, axis=1)
    return summed / jnp.maximum(jnp.sum(m, axis=1), 1e-9)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps), as torch.nn.functional.normalize; an all-zero row stays zero."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class SentenceEncoder(nn.Module):
    """Encoder -> mean pooling -> L2 normalisation: unit-norm float32 embeddings [B, H].
    Variables: {"params": {"encoder": <Encoder tree>}} (see the module docstring)."""

    config: EncoderConfig
    dtype: Any = jnp.float32
    remat: bool = False

    def setup(self):
        self.encoder = Encoder(self.config, self.dtype, self.remat)

    def __call__(self, input_ids, attention_mask, deterministic: bool = True):
        return l2_normalize(mean_pool(self.encoder(input_ids, attention_mask, deterministic), attention_mask))

    def hidden_states(self, input_ids, attention_mask, deterministic: bool = True):
        """Token states [B, L, H]: `model.apply(v, ids, mask, method=SentenceEncoder.hidden_states)`."""
        return self.encoder(input_ids, attention_mask, deterministic)
