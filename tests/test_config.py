"""TrainConfig checks every value where it is built (flags, presets, replace): a ConfigError, a
UserError whose message names the flag, so train_main.py answers it in one line."""

import pytest

from pipeline.user_errors import UserError
from trainer.config import PRESETS, ConfigError, TrainConfig, check_config, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate(name):
    check_config(PRESETS[name])
    assert get_preset(name) == PRESETS[name]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"batch_size": 0}, "--batch_size must be an integer >= 1 (the global batch, over all devices), got 0"),
        ({"train_steps": -5}, "--train_steps must be an integer >= 1, got -5"),
        ({"max_seq_length": 1}, "--max_seq_length must be an integer >= 2 (room for the special tokens), got 1"),
        ({"learning_rate": 0.0}, "--learning_rate must be a number > 0, got 0.0"),
        ({"warmup_steps": -1}, "--warmup_steps must be an integer >= 0, got -1"),
        ({"adam_b2": 1.0}, "--adam_b2 must be a number in [0, 1), got 1.0"),
        ({"mixed_batch_share": 1.5}, "--mixed_batch_share must be a number in [0, 1], got 1.5"),
        ({"dtype": "float16"}, "--dtype must be one of float32, bfloat16, got 'float16'"),
        ({"remat": "all"}, "--remat must be one of none, dots, full, qkv, auto, got 'all'"),
        ({"pack_row_steps": 12}, "--pack_row_steps must be a power of two (row counts per doubling), got 12"),
        ({"bucket_lengths": (16, 0)}, "--bucket_lengths must be positive integers (comma-separated), got '16,0'"),
        ({"partition_mode": "both"}, "--partition_mode must be one of joint, per_direction, got 'both'"),
        ({"pair_directions": ()}, "--pair_directions='': at least one loss direction is needed"),
        (
            {"triplet_directions": ("doc_to_query",)},
            "--triplet_directions='doc_to_query': 'query_to_doc' must be among the directions",
        ),
        ({"pair_directions": ("query_to_doc", "sideways")}, "--pair_directions='query_to_doc,sideways': unknown loss"),
        ({"grad_cache_chunk": 8, "chunk_tokens": 4096}, "set either --grad_cache_chunk or --chunk_tokens, not both"),
        ({"compilation_cache": ""}, "--compilation_cache must be a non-empty string, got ''"),
        ({"pooling": "first"}, "--pooling must be one of auto, mean, cls, max, lasttoken, got 'first'"),
        (
            {"ir_eval": ("a/beir/x", "b/x/")},
            "--ir_eval must be directories with distinct names (each names its metrics)",
        ),
        (
            {"ir_query_prompt_name": None},
            "--ir_query_prompt_name must be a prompt name of the manifest's 'prompts' (or empty: none), got None",
        ),
        (
            {"sts_prompt_name": 3},
            "--sts_prompt_name must be a prompt name of the manifest's 'prompts' (or empty: none), got 3",
        ),
    ],
)
def test_bad_values_name_their_flag(change, message):
    with pytest.raises(ConfigError) as e:
        PRESETS["demo"].replace(**change)
    assert str(e.value).startswith(message)
    assert isinstance(e.value, UserError)


def test_bounds_that_mean_off_are_accepted():
    cfg = TrainConfig(
        warmup_steps=0,
        eval_every=0,
        grad_cache_chunk=0,
        chunk_tokens=0,
        grad_clip_norm=0.0,
        weight_decay=0.0,
        memory_budget_gib=0.0,
        mixed_batch_share=1.0,
        eval_max_examples=0,
        pack_row_steps=1,
        bucket_lengths=(),
    )
    assert cfg.pack_row_steps == 1
    # The loss's other directions stay available with the joint partition (trainer/train/loss.py).
    TrainConfig(pair_directions=("query_to_doc", "query_to_query"), partition_mode="joint")
    with pytest.raises(ConfigError, match="use partition_mode='joint'"):
        TrainConfig(pair_directions=("query_to_doc", "query_to_query"), partition_mode="per_direction")


def test_unknown_preset():
    with pytest.raises(ConfigError, match="--config: unknown preset 'huge'; choose one of reference, demo"):
        get_preset("huge")
