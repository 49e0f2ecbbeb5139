"""Every training hyperparameter in one place, with the reference run's defaults and presets.

`reference` reproduces the published recipe (roberta-large on a TPU v3-8); `demo` is a CPU run on the
bundled samples. Command-line flags override single fields (see train_main.py). Every value is
checked where a TrainConfig is built (`check_config`): a ConfigError names the flag.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import re
from typing import Any, Sequence

import numpy as np

from pipeline.model_source import DEMO_MODEL
from pipeline.user_errors import UserError

DTYPES = ("float32", "bfloat16")  # compute dtype (train_step.COMPUTE_DTYPES) and AdamW's mu (optimizer.MU_DTYPES)
REMAT_MODES = ("none", "dots", "full", "qkv", "auto")  # modeling.REMAT_POLICIES; auto: memory.RematPlan
# The demo's BEIR-format retrieval set (samples/make_samples.py), found from this file as the Beam job
# finds the sample corpora (pipeline/options.py), so the demo preset works from any directory.
SAMPLE_BEIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples", "beir", "sample_ir")


# The rules of fields whose modules sit above this one (tests/test_imports.py: the config imports none of
# them); those modules import their rules from here.
POOLING_MODES = ("mean", "cls", "max", "lasttoken")  # trainer/model/pooling.py
DIRECTIONS = ("query_to_doc", "doc_to_query", "query_to_query", "doc_to_doc")
PARTITION_MODES = ("joint", "per_direction")


def validate_loss_options(directions: Sequence[str], partition_mode: str) -> tuple[str, ...]:
    """Raise ValueError on options sentence-transformers also rejects; returns directions as a tuple."""
    directions = tuple(directions)
    if not directions:
        raise ValueError("at least one loss direction is needed")
    bad = set(directions) - set(DIRECTIONS)
    if bad:
        raise ValueError(f"unknown loss directions {sorted(bad)}; valid: {', '.join(DIRECTIONS)}")
    if "query_to_doc" not in directions:
        raise ValueError("'query_to_doc' must be among the directions (it holds the positive pair)")
    if len(set(directions)) != len(directions):
        raise ValueError(f"duplicate loss directions in {directions}")
    if partition_mode not in PARTITION_MODES:
        raise ValueError(f"partition_mode must be one of {PARTITION_MODES}, got {partition_mode!r}")
    if partition_mode == "per_direction" and set(directions) & {"query_to_query", "doc_to_doc"}:
        raise ValueError(
            "partition_mode='per_direction' cannot be used with query_to_query or doc_to_doc "
            "(their pools hold no positive); use partition_mode='joint'"
        )
    return directions


def check_dims(dims: Sequence[int], weights: Sequence[float], hidden_size: int | None = None) -> None:
    """ValueError unless dims are distinct positive sizes (<= hidden_size when known) and weights are
    empty (all 1) or one positive number per size."""
    if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in dims):
        raise ValueError(f"matryoshka_dims must be positive integers, got {list(dims)}")
    if len(set(dims)) != len(dims):
        raise ValueError(f"matryoshka_dims repeats a size: {list(dims)}")
    if weights and not dims:
        raise ValueError("matryoshka_weights needs matryoshka_dims")
    if weights and len(weights) != len(dims):
        raise ValueError(f"matryoshka_weights needs one weight per size: {len(weights)} weights for {len(dims)} sizes")
    if any(not np.isfinite(w) or w <= 0 for w in weights):
        raise ValueError(f"matryoshka_weights must be positive numbers, got {list(weights)}")
    if hidden_size is not None and dims and max(dims) > hidden_size:
        raise ValueError(f"matryoshka_dims {list(dims)}: the model's embeddings have {hidden_size} dimensions")


_MTEB_CLASS_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def mteb_task_entries(spec: str) -> list[str]:
    """--mteb_tasks' entries (trainer/evaluators/mteb_tasks.py), stripped, empty ones dropped."""
    return [s.strip() for s in spec.split(",") if s.strip()]


def mteb_spec_problem(spec: Any) -> str | None:
    """What is wrong with --mteb_tasks' form, or None. Only the form: the
    names themselves are looked up by `resolve_tasks` at start-up, where mteb is imported."""
    if not isinstance(spec, str):
        return "comma-separated MTEB task names or package.module:ClassName entries"
    for entry in mteb_task_entries(spec):
        if ":" in entry and not _MTEB_CLASS_SPEC.fullmatch(entry):
            return f"package.module:ClassName for a task class (got {entry!r})"
    if len(set(mteb_task_entries(spec))) < len(mteb_task_entries(spec)):
        return "distinct entries (each names its metrics)"
    return None


def ir_dataset_name(path: str) -> str:
    """An --ir_eval directory's last component: it names the metrics (eval/ir/<name>/...)."""
    return path.rstrip("/").rsplit("/", 1)[-1]


class ConfigError(UserError):
    """A TrainConfig value out of range; the message names its flag."""


@dataclasses.dataclass
class TrainConfig:
    # Model
    model: str = "FacebookAI/roberta-large"  # HF name, local or gs:// dir, or DEMO_MODEL
    from_scratch: bool = False  # random init from the model's config.json instead of its weights
    dtype: str = "float32"  # compute dtype: float32 | bfloat16 (params and optimizer stay float32)
    max_seq_length: int = 128
    # Pooling of token states (trainer/model/pooling.py): mean | cls | max | lasttoken, or "auto": the source
    # model's (its 1_Pooling/config.json), else mean. The export writes the same mode.
    pooling: str = "auto"
    # The loss, by name in trainer/train/loss.py LOSSES: "contrastive" (cosine similarity x scale, cross
    # entropy against the true pair, in-batch negatives; the fields below) or one registered there.
    # Gradient caching and Matryoshka wrap whichever is chosen.
    loss: str = "contrastive"
    scale: float = 20.0
    # Directions for pair batches (symmetric loss, as the reference run) and for triplet batches.
    pair_directions: tuple[str, ...] = ("query_to_doc", "doc_to_query")
    triplet_directions: tuple[str, ...] = ("query_to_doc",)
    partition_mode: str = "per_direction"  # joint | per_direction
    mask_false_negatives: bool = True
    # Matryoshka loss (trainer/train/matryoshka.py): the loss summed over the embedding cut to each of these
    # sizes (e.g. 1024,512,256,128,64; include the full size), times matryoshka_weights (empty: all 1).
    # Empty: off (the reference run). Evaluation then reports every size (eval/dim<d>/...).
    matryoshka_dims: tuple[int, ...] = ()
    matryoshka_weights: tuple[float, ...] = ()
    # Optimisation: AdamW, linear warm-up then linear decay to zero, clipping.
    learning_rate: float = 2e-5
    warmup_steps: int = 500
    weight_decay: float = 0.01
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-6
    grad_clip_norm: float = 1.0
    train_steps: int = 540_000
    batch_size: int = 1024  # global batch, over all devices and hosts
    adam_mu_dtype: str = "float32"  # AdamW's first moment: float32 | bfloat16 (the second stays float32)
    # Memory plan (trainer/train/memory.py; none of it changes the numbers, only memory and speed):
    grad_cache_chunk: int = 0  # 0 = off; else embed every batch in chunks of this many texts
    chunk_tokens: int = 0  # per device, most tokens one encoder pass holds; larger shapes are chunked
    shard_optimizer: bool = False  # ZeRO-2: AdamW moments, gradients and update sharded over the devices
    remat: str = "none"  # none | dots | full | qkv | auto (per program shape): recompute in the backward pass
    # Data
    mixed_batch_share: float = 0.0  # share of batches drawn from all corpora (reference: 0)
    # Each batch is padded to the smallest bucket that fits it: static shapes (one compiled program
    # per bucket and batch kind) with at most ~1/3 padding; short-text corpora do not pay for 128.
    bucket_lengths: tuple[int, ...] = (16, 24, 32, 48, 64, 96, 128)
    # Sequence packing (trainer/data/packing.py): each device's texts go back to back into rows of a bucket
    # length >= pack_min_row_length, attending within their own text; same embeddings, far fewer tokens.
    packing: bool = True
    pack_min_row_length: int = 64
    # Rows per device come from a ladder with this many steps per doubling (padding rows < 1/steps):
    # more steps waste fewer tokens, fewer steps compile fewer programs (trainer/plan/program_count.py).
    pack_row_steps: int = 16
    # > 0: instead, this many row counts in all (over batch kinds and row lengths), fitted to the data's
    # lengths (the manifest's, or the stated table) to pad the fewest rows (trainer/data/row_fit.py fit_ladder);
    # counts above the fitted ones still come from the pack_row_steps ladder.
    pack_programs: int = 0
    # Deal each batch's texts over the devices, longest first, so every device needs the same rows
    # (the fullest one sets the shape); the same numbers either way (trainer/data/packing.py).
    pack_even_cores: bool = True
    shuffle_buffer: int = 10_000
    seed: int = 42
    # Loop
    log_every: int = 50
    eval_every: int = 5000
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    eval_max_examples: int = 1000  # per corpus validation split, for retrieval eval
    sts_dev: str | None = None
    # A prompt for both sentences of each STS pair (STS is symmetric): a name in the manifest's prompt
    # table ("": none), as sentence-transformers' encode(prompt_name=...) (trainer/evaluators/sts.py).
    sts_prompt_name: str = ""
    # Retrieval evaluation on BEIR-format directories (corpus.jsonl, queries.jsonl, qrels/test.tsv; local
    # or gs://): eval/ir/<directory name>/ndcg@10, mrr@10, recall@100, map@100 (trainer/evaluators/ir.py).
    ir_eval: tuple[str, ...] = ()
    # Prompts for those queries and documents: names in the manifest's prompt table ("": none), as
    # sentence-transformers' InformationRetrievalEvaluator(query_prompt_name=..., corpus_prompt_name=...).
    ir_query_prompt_name: str = ""
    ir_corpus_prompt_name: str = ""
    # MTEB tasks run on the export at the end of training, where `mteb` is installed and their data cached
    # (trainer/evaluators/mteb_tasks.py): comma-separated MTEB task names (STSBenchmark,SciFact) and/or a
    # task class of your own as package.module:ClassName (an mteb AbsTask subclass, e.g. on private data).
    # Metrics mteb/<task>/<split>/main_score; mteb's files in <workdir>/mteb. "": none.
    mteb_tasks: str = ""
    # The evaluators, by name in trainer/evaluators/suite.py EVALUATORS, in this order: each runs when its
    # own inputs are set (sts: --sts_dev, ir: --ir_eval, mteb: --mteb_tasks; retrieval: always).
    evaluators: tuple[str, ...] = ("retrieval", "sts", "ir", "mteb")
    export_dir: str | None = None  # default: <workdir>/export
    # Start-up: compile the worst-case batch shapes and stop before step 1 if one does not fit
    # (trainer/train/preflight.py); the budget is the device's memory, or this many GiB when > 0.
    preflight: bool = True
    memory_budget_gib: float = 0.0
    # JAX's persistent compilation cache, so that a restarted run does not compile its programs again:
    # "auto" (<workdir>/compilation_cache on TPU and GPU; off on CPU, where writing the entries cost
    # more than the restart saved: BENCHMARKS.md), "workdir" (there, always), "off", or a directory
    # (local or gs://).
    compilation_cache: str = "auto"

    def __post_init__(self):
        check_config(self)

    def replace(self, **kw: Any) -> "TrainConfig":
        return dataclasses.replace(self, **kw)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Integer fields: the least value, and what the bound means where it is not plain.
_INT_MINIMUMS: dict[str, tuple[int, str]] = {
    "max_seq_length": (2, "room for the special tokens"),
    "train_steps": (1, ""),
    "batch_size": (1, "the global batch, over all devices"),
    "warmup_steps": (0, ""),
    "grad_cache_chunk": (0, "0: off"),
    "chunk_tokens": (0, "0: off"),
    "pack_min_row_length": (1, ""),
    "pack_row_steps": (1, ""),
    "pack_programs": (0, "0: the pack_row_steps ladder"),
    "shuffle_buffer": (1, ""),
    "log_every": (1, ""),
    "eval_every": (0, "0: no evaluation during training"),
    "checkpoint_every": (1, ""),
    "keep_checkpoints": (1, ""),
    "eval_max_examples": (0, ""),
}
# Number fields: (low, low excluded, high or None, high excluded). NaN is not refused: the loop
# stops on the non-finite loss it gives (exit 3), and tests provoke one that way.
_RANGES: dict[str, tuple[float, bool, float | None, bool]] = {
    "scale": (0.0, True, None, False),
    "learning_rate": (0.0, True, None, False),
    "weight_decay": (0.0, False, None, False),
    "adam_b1": (0.0, False, 1.0, True),
    "adam_b2": (0.0, False, 1.0, True),
    "adam_eps": (0.0, True, None, False),
    "grad_clip_norm": (0.0, False, None, False),  # 0: no clipping
    "mixed_batch_share": (0.0, False, 1.0, False),
    "memory_budget_gib": (0.0, False, None, False),  # 0: the device's own limit
}


def _shown(value: Any) -> str:
    """A value as its flag is written: tuples comma-separated."""
    return repr(",".join(map(str, value)) if isinstance(value, (tuple, list)) else value)


def _refuse(name: str, value: Any, want: str) -> None:
    raise ConfigError(f"--{name} must be {want}, got {_shown(value)}")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _range_text(low: float, low_out: bool, high: float | None, high_out: bool) -> str:
    if high is None:
        return f"a number {'>' if low_out else '>='} {low:g}"
    return f"a number in {'(' if low_out else '['}{low:g}, {high:g}{')' if high_out else ']'}"


def check_config(cfg: TrainConfig) -> None:
    """Every value of `cfg` in its range, or a ConfigError naming the flag; runs whenever a
    TrainConfig is built (flags, presets, replace)."""
    for name, (least, note) in _INT_MINIMUMS.items():
        v = getattr(cfg, name)
        if not _is_int(v) or v < least:
            _refuse(name, v, f"an integer >= {least}" + (f" ({note})" if note else ""))
    for name, (low, low_out, high, high_out) in _RANGES.items():
        v = getattr(cfg, name)
        if (
            not isinstance(v, numbers.Real)
            or isinstance(v, bool)
            or v < low
            or (low_out and v == low)
            or (high is not None and (v > high or (high_out and v == high)))
        ):
            _refuse(name, v, _range_text(low, low_out, high, high_out))
    if cfg.pack_row_steps & (cfg.pack_row_steps - 1):
        _refuse("pack_row_steps", cfg.pack_row_steps, "a power of two (row counts per doubling)")
    if not all(_is_int(b) and b >= 1 for b in cfg.bucket_lengths):
        _refuse("bucket_lengths", cfg.bucket_lengths, "positive integers (comma-separated)")
    if cfg.grad_cache_chunk and cfg.chunk_tokens:
        raise ConfigError(
            f"set either --grad_cache_chunk or --chunk_tokens, not both (got {cfg.grad_cache_chunk} "
            f"and {cfg.chunk_tokens})"
        )
    for name, choices in (("dtype", DTYPES), ("adam_mu_dtype", DTYPES), ("remat", REMAT_MODES)):
        if getattr(cfg, name) not in choices:
            _refuse(name, getattr(cfg, name), f"one of {', '.join(choices)}")
    for name in ("model", "compilation_cache", "loss"):
        if not isinstance(getattr(cfg, name), str) or not getattr(cfg, name):
            _refuse(name, getattr(cfg, name), "a non-empty string")
    _check_evaluation_options(cfg)
    _check_loss_options(cfg)


def _check_evaluation_options(cfg: TrainConfig) -> None:
    """Pooling among trainer/model/pooling.py's modes; BEIR directories with distinct names (they name the
    metrics); prompt names that are strings; MTEB task entries in their form (train_main.py looks them
    up in mteb before the run starts)."""
    if cfg.pooling not in ("auto",) + POOLING_MODES:
        _refuse("pooling", cfg.pooling, f"one of auto, {', '.join(POOLING_MODES)}")
    if not isinstance(cfg.ir_eval, tuple) or not all(isinstance(d, str) and ir_dataset_name(d) for d in cfg.ir_eval):
        _refuse("ir_eval", cfg.ir_eval, "BEIR-format directories (comma-separated)")
    names = [ir_dataset_name(d) for d in cfg.ir_eval]
    if len(set(names)) < len(names):
        _refuse("ir_eval", cfg.ir_eval, "directories with distinct names (each names its metrics)")
    # Prompt names, resolved against the manifest at start-up.
    for name in ("ir_query_prompt_name", "ir_corpus_prompt_name", "sts_prompt_name"):
        if not isinstance(getattr(cfg, name), str):
            _refuse(name, getattr(cfg, name), "a prompt name of the manifest's 'prompts' (or empty: none)")
    if (
        not isinstance(cfg.evaluators, tuple)
        or not all(isinstance(e, str) and e for e in cfg.evaluators)
        or len(set(cfg.evaluators)) < len(cfg.evaluators)
    ):
        _refuse("evaluators", cfg.evaluators, "distinct evaluator names (comma-separated)")
    problem = mteb_spec_problem(cfg.mteb_tasks)
    if problem:
        _refuse("mteb_tasks", cfg.mteb_tasks, problem)


def _check_loss_options(cfg: TrainConfig) -> None:
    """The loss's own rules (trainer/train/loss.py: known directions, query_to_doc among them, per_direction
    only with query_to_doc and doc_to_query)."""
    if cfg.partition_mode not in PARTITION_MODES:
        _refuse("partition_mode", cfg.partition_mode, f"one of {', '.join(PARTITION_MODES)}")
    for name in ("pair_directions", "triplet_directions"):
        try:
            validate_loss_options(getattr(cfg, name), cfg.partition_mode)
        except ValueError as e:
            raise ConfigError(f"--{name}={_shown(getattr(cfg, name))}: {e}") from None
    try:
        check_dims(cfg.matryoshka_dims, cfg.matryoshka_weights)
    except ValueError as e:  # its messages start with the field's name
        raise ConfigError(f"--{e}") from None


PRESETS: dict[str, TrainConfig] = {
    # The TPU v3-8 memory plan, from the compiler (docs/tpu.md): AdamW moments, gradients and update
    # sharded over the 8 cores (ZeRO-2), gradient caching only for shapes over 32,768 tokens per core
    # (only the all-long triplet batch: 384 rows x 128), one row length and 16 row counts fitted to the
    # data's lengths, texts dealt evenly over the cores: 1.026 token slots per real token (4 per
    # doubling, per-core slices: 1.14).
    "reference": TrainConfig(
        dtype="bfloat16",
        shard_optimizer=True,
        chunk_tokens=32768,
        remat="auto",
        pack_min_row_length=128,
        pack_row_steps=4,
        pack_programs=16,
    ),
    "demo": TrainConfig(
        model=DEMO_MODEL,
        train_steps=200,
        batch_size=32,
        learning_rate=2e-5,
        warmup_steps=20,
        max_seq_length=128,
        shuffle_buffer=1000,
        log_every=10,
        eval_every=100,
        checkpoint_every=100,
        eval_max_examples=500,
        ir_eval=(SAMPLE_BEIR,),
    ),
}


def get_preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"--config: unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])
