"""Every training hyperparameter in one place, with the reference run's defaults and presets.

`reference` reproduces the published recipe (roberta-large on a TPU v3-8); `demo` is a CPU run on the
bundled samples. Command-line flags override single fields (see train_main.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.model_source import DEMO_MODEL


@dataclasses.dataclass
class TrainConfig:
    # Model
    model: str = "FacebookAI/roberta-large"  # HF name, local or gs:// dir, or DEMO_MODEL
    from_scratch: bool = False  # random init from the model's config.json instead of its weights
    dtype: str = "float32"  # compute dtype: float32 | bfloat16 (params and optimizer stay float32)
    max_seq_length: int = 128
    # Loss: cosine similarity x scale, cross entropy against the true pair, in-batch negatives.
    scale: float = 20.0
    # Directions for pair batches (symmetric loss, as the reference run) and for triplet batches.
    pair_directions: tuple[str, ...] = ("query_to_doc", "doc_to_query")
    triplet_directions: tuple[str, ...] = ("query_to_doc",)
    partition_mode: str = "per_direction"  # joint | per_direction
    mask_false_negatives: bool = True
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
    # Memory plan (trainer/memory_plan.py; none of it changes the numbers, only memory and speed):
    grad_cache_chunk: int = 0  # 0 = off; else embed every batch in chunks of this many texts
    chunk_tokens: int = 0  # per device, most tokens one encoder pass holds; larger shapes are chunked
    shard_optimizer: bool = False  # ZeRO-1: AdamW moments sharded over the devices
    remat: str = "none"  # none | dots | full: recompute parts of each block in the backward pass
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
    # more steps waste fewer tokens, fewer steps compile fewer programs (trainer/program_count.py).
    pack_row_steps: int = 16
    shuffle_buffer: int = 10_000
    seed: int = 42
    # Loop
    log_every: int = 50
    eval_every: int = 5000
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    eval_max_examples: int = 1000  # per corpus validation split, for retrieval eval
    sts_dev: str | None = None
    export_dir: str | None = None  # default: <workdir>/export
    # Start-up: compile the worst-case batch shapes and stop before step 1 if one does not fit
    # (trainer/preflight.py); the budget is the device's memory, or this many GiB when > 0.
    preflight: bool = True
    memory_budget_gib: float = 0.0
    # JAX's persistent compilation cache, so that a restarted run does not compile its programs again:
    # "auto" (<workdir>/compilation_cache on TPU and GPU; off on CPU, where writing the entries cost
    # more than the restart saved: BENCHMARKS.md), "workdir" (there, always), "off", or a directory
    # (local or gs://).
    compilation_cache: str = "auto"

    def replace(self, **kw: Any) -> "TrainConfig":
        return dataclasses.replace(self, **kw)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, TrainConfig] = {
    # The TPU v3-8 memory plan, from the compiler (docs/tpu.md): AdamW moments sharded over the 8 cores
    # (ZeRO-1), gradient caching only for shapes over 32,768 tokens per core (only the all-long triplet
    # batch: 384 rows x 128), one row length and 4 row counts per doubling (12 programs in all).
    "reference": TrainConfig(dtype="bfloat16", shard_optimizer=True, chunk_tokens=32768, pack_min_row_length=128,
                             pack_row_steps=4),
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
    ),
}


def get_preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])
