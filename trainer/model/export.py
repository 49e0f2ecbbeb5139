"""Export our parameters as a SentenceTransformers model directory (local or gs://).

Layout (what `sentence_transformers.SentenceTransformer(path)` loads):
  config.json, model.safetensors (Hugging Face names), tokenizer files      -> 0: Transformer
  1_Pooling/config.json (the encoder's pooling: mean, cls, max, lasttoken)   -> 1: Pooling
  2_Normalize/config.json                                                   -> 2: Normalize
  modules.json, sentence_bert_config.json, config_sentence_transformers.json, README.md (model card)

CLI (trainer/cli.py; console script set-export):
  python -m trainer.cli export --init_from=MODEL --output_dir=OUT   # round trip through our parameters
  python -m trainer.cli export --workdir=W --output_dir=OUT         # latest training checkpoint
TensorFlow-free and torch-free.
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from typing import Any

import numpy as np

from pipeline import storage
from pipeline.model_source import DEMO_HUB_NAME, DEMO_MODEL, is_hub_name
from pipeline.user_errors import UserError
from trainer.model.hf_loading import architecture_name, params_to_hf_state_dict, tokenizer_files
from trainer.model.modeling import EncoderConfig
from trainer.model.pooling import pooling_config

MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]


# Local aliases whose Hugging Face id is known (for the model card's base_model).
HUB_IDS = {DEMO_MODEL: DEMO_HUB_NAME}


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _fmt(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (dict, list, tuple)) else str(v)


def cleaning_lines(cleaning: dict | None) -> list[str]:
    """The model card's account of the training data's cleaning (the manifest's `cleaning` record,
    pipeline/cleaning.py): the evaluation sets it was kept apart from, or that it was not."""
    if cleaning is None:
        return [
            "Not recorded: the training data was written by a job from before the cleaning stages, so it "
            "was not checked against evaluation sets, and duplicates were not removed."
        ]
    out = [
        ("Duplicate tuples were removed (texts compared after " + cleaning.get("normalization", "normalisation") + ").")
        if cleaning.get("deduplicate")
        else "Duplicate tuples were kept."
    ]
    sets = cleaning.get("decontaminate") or []
    if not sets:
        return out + [
            "The training data was **not** checked against any evaluation set: scores on benchmarks "
            "built from the same sources may not be zero-shot."
        ]
    out += [f"Cleaned against these evaluation sets ({cleaning.get('rule')}):", ""]
    out += [
        f"- {s['name']} ({s.get('texts_of', s.get('kind'))}; {s.get('texts', 0)} texts): "
        f"{s.get('removed_lines', 0)} training lines removed"
        for s in sets
    ]
    return out


def render_model_card(
    model_card: dict | str | None, config: EncoderConfig, max_seq_length: int, pooling: str = "mean"
) -> str:
    """Markdown with Hugging Face front matter. A str is used verbatim; a dict may carry `title`,
    `base_model`, `description`, `matryoshka` ({dims, weights}), `data_mix` (list of {name, weight, ...}
    or {name: weight}), `data_cleaning` (the manifest's `cleaning` record), `run` (hyperparameters) and
    `metrics`; other keys are listed under "Details"."""
    if isinstance(model_card, str):
        return model_card
    card = dict(model_card or {})
    title = card.pop("title", "Sentence embedding model")
    base = card.pop("base_model", None)
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags:",
        "- sentence-transformers",
        "- feature-extraction",
        "- sentence-similarity",
    ]
    hub_id = HUB_IDS.get(base, base) if isinstance(base, str) else None
    if hub_id and "/" in hub_id and is_hub_name(hub_id):
        lines.append(f"base_model: {hub_id}")  # only a Hugging Face id belongs in the front matter
    lines += ["---", "", f"# {title}", ""]
    lines.append(
        card.pop(
            "description",
            (
                f"A [sentence-transformers](https://www.SBERT.net) model: it maps sentences and paragraphs to a "
                f"{config.hidden_size}-dimensional unit vector ({pooling} pooling, L2 normalisation); "
                f"compare them by cosine similarity (a dot product). "
                f"Trained with a contrastive in-batch-negatives loss in JAX/Flax."
            ),
        )
    )
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "model = SentenceTransformer('PATH_TO_THIS_DIRECTORY')",
        "embeddings = model.encode(['This is an example sentence', 'Each sentence is converted'])",
        "```",
        "",
        "## Architecture",
        "",
        f"- {config.model_type}, {config.num_hidden_layers} layers, hidden size {config.hidden_size}, "
        f"{config.num_attention_heads} heads",
        f"- max_seq_length {max_seq_length}; {pooling} pooling; normalised",
    ]
    if base:
        lines.append(f"- base model: {base}")
    matryoshka = card.pop("matryoshka", None)
    if matryoshka:
        dims = sorted(matryoshka["dims"], reverse=True)
        lines += [
            "",
            "## Matryoshka dimensions",
            "",
            f"Trained with the Matryoshka loss at sizes {', '.join(map(str, dims))} (weights "
            f"{', '.join(map(_fmt, matryoshka['weights']))}): the first d components of an embedding, "
            "re-normalised, are an embedding of their own. To use d of them:",
            "",
            "```python",
            f"model = SentenceTransformer('PATH_TO_THIS_DIRECTORY', truncate_dim={dims[-1]})",
            "```",
        ]
    mix = card.pop("data_mix", None)
    if mix:
        lines += ["", "## Training data", "", "| corpus | weight | details |", "|---|---|---|"]
        items = mix.items() if isinstance(mix, dict) else [(m.get("name"), m) for m in mix]
        for name, m in items:
            if isinstance(m, dict):
                rest = {k: v for k, v in m.items() if k not in ("name", "weight")}
                lines.append(
                    f"| {name} | {m.get('weight', '')} | {', '.join(f'{k}={_fmt(v)}' for k, v in rest.items())} |"
                )
            else:
                lines.append(f"| {name} | {m} | |")
    if "data_cleaning" in card:
        lines += ["", "## Data cleaning", ""] + cleaning_lines(card.pop("data_cleaning"))
    for section, key in (("Training run", "run"), ("Evaluation", "metrics")):
        d = card.pop(key, None)
        if d:
            lines += ["", f"## {section}", ""] + [f"- {k}: {_fmt(v)}" for k, v in d.items()]
    if card:
        lines += ["", "## Details", ""] + [f"- {k}: {_fmt(v)}" for k, v in card.items()]
    return "\n".join(lines) + "\n"


def export_sentence_transformers(
    params: Any,
    config: EncoderConfig,
    hf_config: dict,
    tokenizer_dir: str,
    output_dir: str,
    max_seq_length: int = 128,
    model_card: dict | str | None = None,
    extra_tensors: dict | None = None,
    pooling: str = "mean",
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
) -> str:
    """Writes the SentenceTransformers directory; returns output_dir. `params` in any form
    hf_loading.encoder_tree accepts; `tokenizer_dir` a local or remote directory with tokenizer files;
    `extra_tensors` HF-named tensors written as well (the base checkpoint's pooler: see
    hf_loading.pooler_tensors); `pooling` the encoder's mode (trainer/model/pooling.py); `prompts` (name -> text)
    and `default_prompt_name` go to config_sentence_transformers.json, where `encode(prompt_name=...)`
    finds them (the manifest's table, for a trained model)."""
    from safetensors.numpy import save_file

    if default_prompt_name is not None and default_prompt_name not in (prompts or {}):
        raise ValueError(
            f"default_prompt_name {default_prompt_name!r} is not among the prompts {sorted(prompts or {})}"
        )
    if max_seq_length > config.max_input_length:
        raise UserError(f"--max_seq_length={max_seq_length} exceeds the model's {config.max_input_length} positions")
    state_dict = params_to_hf_state_dict(params, config)  # validates the tree before anything is written
    pooling_json = pooling_config(pooling, config.hidden_size)
    for name, value in (extra_tensors or {}).items():
        if name in state_dict:
            raise ValueError(f"extra tensor {name!r} would overwrite an encoder parameter")
        state_dict[name] = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    tokenizer_dir = storage.local_dir(tokenizer_dir)
    tok_files = tokenizer_files(tokenizer_dir)
    if "tokenizer.json" not in tok_files and not {"vocab.txt", "vocab.json", "sentencepiece.bpe.model"} & set(
        tok_files
    ):
        raise FileNotFoundError(f"no tokenizer files in {tokenizer_dir}")

    with storage.staged_dir(output_dir) as stage:  # a remote output_dir is uploaded when complete
        hf = {k: v for k, v in hf_config.items() if k not in ("_name_or_path", "architectures")}
        hf.update(config.to_hf_dict())
        hf["architectures"] = [architecture_name(config)]
        storage.write_json(os.path.join(stage, "config.json"), hf)
        save_file(state_dict, os.path.join(stage, "model.safetensors"), metadata={"format": "pt"})
        storage.copy_files(tokenizer_dir, tok_files, stage)
        storage.write_json(os.path.join(stage, "modules.json"), MODULES)
        storage.write_json(
            os.path.join(stage, "sentence_bert_config.json"), {"max_seq_length": max_seq_length, "do_lower_case": False}
        )
        storage.write_json(os.path.join(stage, "1_Pooling", "config.json"), pooling_json)
        # A file, not an empty folder: object stores (gs://) have no empty folders.
        storage.write_json(os.path.join(stage, "2_Normalize", "config.json"), {})
        storage.write_json(
            os.path.join(stage, "config_sentence_transformers.json"),
            {
                "model_type": "SentenceTransformer",
                # Only versions that are installed: sentence-transformers parses the one under its name.
                "__version__": {
                    k: v
                    for k, v in (
                        ("sentence_transformers", _version("sentence-transformers")),
                        ("transformers", _version("transformers")),
                        ("pytorch", _version("torch")),
                        ("jax", _version("jax")),
                        ("flax", _version("flax")),
                    )
                    if v
                },
                "prompts": dict(prompts or {}),
                "default_prompt_name": default_prompt_name,
                "similarity_fn_name": "cosine",
            },
        )
        with open(os.path.join(stage, "README.md"), "w", encoding="utf-8") as f:
            f.write(render_model_card(model_card, config, max_seq_length, pooling))
    return output_dir


def sentence_bert_max_len(model_dir: str, default: int = 128) -> int:
    path = os.path.join(model_dir, "sentence_bert_config.json")
    if os.path.isfile(path):
        with open(path) as f:
            return int(json.load(f).get("max_seq_length", default))
    return default


def sentence_transformers_prompts(model_dir: str) -> tuple[dict[str, str], str | None]:
    """The prompt table and default prompt name of a SentenceTransformers directory's
    config_sentence_transformers.json ({} and None without one)."""
    path = os.path.join(model_dir, "config_sentence_transformers.json")
    if not os.path.isfile(path):
        return {}, None
    with open(path) as f:
        st_config = json.load(f)
    return dict(st_config.get("prompts") or {}), st_config.get("default_prompt_name")


def export_from_pretrained(init_from: str, output_dir: str, max_seq_length: int | None = None) -> str:
    """Loads a model into our parameters and exports it (a round trip that checks both directions)."""
    from trainer.model.hf_loading import load_pretrained

    pre = load_pretrained(init_from)
    if max_seq_length is None:
        max_seq_length = min(sentence_bert_max_len(pre.source_dir), pre.config.max_input_length)
    card = {"base_model": init_from, "description": f"{init_from}, exported through the Flax encoder of this project."}
    prompts, default_prompt_name = sentence_transformers_prompts(pre.source_dir)  # the source's, kept
    return export_sentence_transformers(
        pre.params,
        pre.config,
        pre.hf_config,
        pre.source_dir,
        output_dir,
        max_seq_length,
        card,
        extra_tensors=pre.extras,
        pooling=pre.model.pooling,
        prompts=prompts,
        default_prompt_name=default_prompt_name,
    )


def export_from_checkpoint(
    params: Any, meta: dict, workdir: str, output_dir: str, max_seq_length: int | None = None
) -> str:
    """Exports a training workdir's checkpoint: its `params` and `meta` as
    trainer/train/checkpointing.py `restore_latest_params(workdir)` returns them (the command line,
    trainer/cli.py, restores them). config.json and the tokenizer files come from `meta["model_source"]`
    (the copy the trainer keeps in the workdir) or else from the model named by `meta["model"]`;
    `meta["hf_config"]`, if present, is the config."""
    from trainer.model.hf_loading import read_hf_config, read_pooler, resolve_model_dir

    model_ref = meta.get("model")
    source = meta.get("model_source")
    if not model_ref and not source:
        raise UserError(f"checkpoint metadata in {workdir} names no model (meta keys: {sorted(meta)})")
    if source and storage.exists(storage.join(source, "config.json")):
        model_dir = storage.local_dir(source)
    else:
        model_dir = resolve_model_dir(model_ref)
    hf_config = meta.get("hf_config") or read_hf_config(model_dir)
    config = EncoderConfig.from_hf_dict(hf_config)
    train_cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    if max_seq_length is None:
        max_seq_length = int(train_cfg.get("max_seq_length") or meta.get("max_seq_length") or 128)
    card = {
        "base_model": model_ref,
        "run": {"workdir": workdir, "step": meta.get("step"), **{k: v for k, v in train_cfg.items() if v is not None}},
    }
    if meta.get("data_mix"):
        card["data_mix"] = meta["data_mix"]
    if "data_cleaning" in meta:  # the training data's manifest record (checkpoints from before it have none)
        card["data_cleaning"] = meta["data_cleaning"]
    if meta.get("metrics"):
        card["metrics"] = meta["metrics"]
    # The base model's pooler (training never touches it), so transformers loads a complete model;
    # best effort: the export is complete for sentence embeddings without it.
    extras = read_pooler(model_dir, config)  # {} for the trainer's model_source copy (no weights)
    if not extras and model_ref:
        try:
            extras = read_pooler(resolve_model_dir(model_ref), config)
        except Exception:  # noqa: BLE001 - e.g. a hub name without network: export without the pooler
            extras = {}
    # The run's pooling (meta["pooling"]; runs from before pooling modes pooled by mean) and the prompt
    # table of its manifest (meta["prompts"]; none in runs from before prompts).
    return export_sentence_transformers(
        params,
        config,
        hf_config,
        model_dir,
        output_dir,
        max_seq_length,
        card,
        extra_tensors=extras,
        pooling=meta.get("pooling") or "mean",
        prompts=meta.get("prompts"),
        default_prompt_name=meta.get("default_prompt_name"),
    )
