import pytest

import train_main
from trainer.config import PRESETS, TrainConfig


def test_reference_preset_is_the_published_recipe():
    ref = PRESETS["reference"]
    assert (ref.batch_size, ref.train_steps, ref.learning_rate, ref.warmup_steps, ref.max_seq_length, ref.scale) == (
        1024, 540_000, 2e-5, 500, 128, 20.0)
    assert "roberta-large" in ref.model and ref.weight_decay == 0.01 and ref.grad_clip_norm == 1.0
    # The v3-8 memory plan (tests/test_aot.py, slow: it fits every shape there).
    assert (ref.dtype, ref.shard_optimizer, ref.chunk_tokens, ref.pack_min_row_length, ref.pack_row_steps) == (
        "bfloat16", True, 32768, 128, 4)


def test_flags_override_single_fields():
    args = train_main.build_parser().parse_args(
        ["--config=reference", "--batch_size=256", "--bucket_lengths=16,32", "--sts_dev=none",
         "--mask_false_negatives=false", "--learning_rate=1e-4"])
    cfg = train_main.config_from_args(args)
    assert cfg.batch_size == 256 and cfg.bucket_lengths == (16, 32) and cfg.sts_dev is None
    assert cfg.mask_false_negatives is False and cfg.learning_rate == 1e-4
    assert cfg.train_steps == 540_000  # untouched fields keep the preset's values


def test_every_config_field_is_a_flag():
    help_text = train_main.build_parser().format_help()
    import dataclasses

    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name}" in help_text


def test_unknown_preset_is_refused():
    with pytest.raises(SystemExit):
        train_main.build_parser().parse_args(["--config=huge"])
