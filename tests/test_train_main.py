import json
import os
import re
import subprocess
import sys

import pytest

import train_main
from tests._xla import cpu_devices_env
from trainer.config import PRESETS, TrainConfig
from trainer.tf_log import cuda_driver_installed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_reference_preset_is_the_published_recipe():
    ref = PRESETS["reference"]
    assert (ref.batch_size, ref.train_steps, ref.learning_rate, ref.warmup_steps, ref.max_seq_length, ref.scale) == (
        1024,
        540_000,
        2e-5,
        500,
        128,
        20.0,
    )
    assert "roberta-large" in ref.model and ref.weight_decay == 0.01 and ref.grad_clip_norm == 1.0
    # The v3-8 memory plan (tests/test_aot.py, slow: it fits every shape there).
    assert (ref.dtype, ref.shard_optimizer, ref.chunk_tokens, ref.pack_min_row_length, ref.pack_row_steps) == (
        "bfloat16",
        True,
        32768,
        128,
        4,
    )


def test_flags_override_single_fields():
    args = train_main.build_parser().parse_args(
        [
            "--config=reference",
            "--batch_size=256",
            "--bucket_lengths=16,32",
            "--sts_dev=none",
            "--mask_false_negatives=false",
            "--learning_rate=1e-4",
        ]
    )
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


# User errors: one line on stderr, `train_main.py: error: <message>`, exit status 2, before any work.


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.rstrip("\n")


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--batch_size=0", "--batch_size must be an integer >= 1 (the global batch, over all devices), got 0"),
        ("--dtype=float16", "--dtype must be one of float32, bfloat16, got 'float16'"),
        ("--model=/no/such/dir", "--model=/no/such/dir: no such directory"),
        ("--ir_eval=/no/beir", "--ir_eval=/no/beir: no corpus.jsonl there (a BEIR-format directory"),
        ("--pooling=first", "--pooling must be one of auto, mean, cls, max, lasttoken, got 'first'"),
        ("--loss=triplet", "--loss: unknown loss 'triplet'; registered: contrastive"),
        (
            "--evaluators=retrieval,bleu",
            "--evaluators: unknown evaluator(s) 'bleu'; registered: retrieval, sts, ir, mteb",
        ),
        ("--evaluators=ir,ir", "--evaluators must be distinct evaluator names (comma-separated), got 'ir,ir'"),
    ],
)
def test_bad_values_are_one_line(tmp_path, capsys, flag, message):
    assert train_main.main([f"--data_dir={tmp_path}", f"--workdir={tmp_path / 'run'}", flag]) == 2
    assert _one_line(capsys).startswith(f"train_main.py: error: {message}")
    assert not (tmp_path / "run").exists()


def test_missing_manifest_is_one_line(tmp_path, capsys):
    assert train_main.main([f"--data_dir={tmp_path / 'nope'}", f"--workdir={tmp_path / 'run'}"]) == 2
    assert _one_line(capsys) == (
        f"train_main.py: error: no manifest at {tmp_path / 'nope' / 'manifest.json'}: "
        "run the Beam job (beam_main.py) there first"
    )


def test_ir_and_sts_prompt_names_are_looked_up_in_the_manifest(tmp_path, capsys):
    tok = {"name": "t", "vocab_fingerprint": "f" * 64, "vocab_size": 5, "pad_token_id": 0}
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "schema_version": 1,
                "tokenizer": tok,
                "prompts": {"query": "query: "},
                "corpora": [
                    {"name": "c", "record_format": "pair", "weight": 1, "train_files": ["c/train-0.tfrecord.gz"]}
                ],
            }
        )
    )
    assert (
        train_main.main(
            [
                f"--data_dir={tmp_path}",
                f"--workdir={tmp_path / 'run'}",
                "--ir_query_prompt_name=query",
                "--ir_corpus_prompt_name=passage",
            ]
        )
        == 2
    )
    assert _one_line(capsys) == (
        f"train_main.py: error: --ir_corpus_prompt_name=passage: the manifest "
        f"{tmp_path / 'manifest.json'} has no prompt 'passage' (it has 'query')"
    )
    assert train_main.main([f"--data_dir={tmp_path}", f"--workdir={tmp_path / 'run'}", "--sts_prompt_name=doc"]) == 2
    assert _one_line(capsys) == (
        f"train_main.py: error: --sts_prompt_name=doc: the manifest "
        f"{tmp_path / 'manifest.json'} has no prompt 'doc' (it has 'query')"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--learning_rate=abc", "argument --learning_rate: expected a number, got 'abc'"),
        ("--shard_optimizer=maybe", "argument --shard_optimizer: expected true or false (or 1/0, yes/no), got 'maybe'"),
        ("--bucket_lengths=16,x", "argument --bucket_lengths: expected comma-separated values, each an integer"),
        ("--config=huge", "argument --config: invalid choice: 'huge'"),
    ],
)
def test_unparseable_flags_are_one_line(capsys, flag, message):
    with pytest.raises(SystemExit) as e:
        train_main.main([flag])
    assert e.value.code == 2
    assert _one_line(capsys).startswith(f"train_main.py: error: {message}")


def test_booleans_are_strict():
    args = train_main.build_parser().parse_args(["--packing=0", "--preflight=YES", "--shard_optimizer=n"])
    assert (args.packing, args.preflight, args.shard_optimizer) == (False, True, False)


def test_script_batch_that_does_not_divide_over_the_devices(tmp_path):
    """The script itself, on 2 CPU devices: one line and exit status 2 before the trainer starts."""
    env = cpu_devices_env(2)
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "train_main.py"),
            f"--data_dir={tmp_path}",
            f"--workdir={tmp_path / 'run'}",
            "--batch_size=3",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "train_main.py: error: --batch_size=3: the global batch does not divide over 2 devices; use a multiple of 2\n"
    )


# What a CPU start-up of train_main does that reaches TensorFlow's devices: its environment defaults,
# then the input pipeline's first tf.data op (TensorFlow starts its runtime and probes CUDA there).
# TensorFlow comes in through the input pipeline's module, without Keras, scikit-learn and pandas
# (pipeline/tensorflow_import.py), and Keras still imports afterwards for whoever wants it.
_START_UP = """
import os, sys
import train_main
from trainer.data.records import hide_accelerators_from_tensorflow, tf
hide_accelerators_from_tensorflow()
print(list(tf.data.Dataset.range(3).as_numpy_iterator()))
print(os.environ["TF_CPP_MIN_LOG_LEVEL"])
print(sorted(m for m in ("keras", "sklearn", "pandas", "keras.src.optimizers") if m in sys.modules))
import keras
print(tf.keras.layers.Dense.__name__)
"""


def test_a_cpu_start_up_prints_no_error_lines_and_imports_no_keras():
    """No `failed call to cuInit` (TensorFlow probing CUDA where there is no driver) nor any other
    error line: a newcomer reads one as a failure."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as in a user's shell
    proc = subprocess.run(
        [sys.executable, "-c", _START_UP], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Where a driver is installed (a GPU machine), TensorFlow's errors stay on.
    level = "2" if cuda_driver_installed() else "3"
    assert proc.stdout.split("\n")[:4] == ["[np.int64(0), np.int64(1), np.int64(2)]", level, "[]", "Dense"]
    errors = [line for line in proc.stderr.splitlines() if re.match(r"[EF]\d{4} ", line) or "cuInit" in line]
    assert not errors, errors
