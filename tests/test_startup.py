"""trainer/train/startup.py: what --compilation_cache does to JAX's persistent compilation cache setting."""

import jax
import pytest

from trainer.train.startup import enable_compilation_cache


@pytest.fixture
def cache_setting():
    from jax.experimental.compilation_cache import compilation_cache

    before = jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_compilation_cache_dir", before)
    compilation_cache.reset_cache()  # the worker's next tests read the restored setting


def test_off_turns_off_a_cache_set_from_the_environment_and_auto_on_cpu_keeps_it(tmp_path, cache_setting):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "from_env"))  # as JAX_COMPILATION_CACHE_DIR does
    assert enable_compilation_cache("auto", str(tmp_path)) is None  # CPU: no cache of its own...
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "from_env")  # ...and the user's stays
    assert enable_compilation_cache("off", str(tmp_path)) is None
    assert jax.config.jax_compilation_cache_dir is None
    assert enable_compilation_cache("workdir", str(tmp_path)) == str(tmp_path / "compilation_cache")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "compilation_cache")
    assert enable_compilation_cache(str(tmp_path / "mine"), str(tmp_path)) == str(tmp_path / "mine")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")


def test_the_start_up_log_states_each_corpus_s_passes_and_warns_above_twenty(caplog):
    import logging

    from pipeline.manifest import Manifest
    from trainer.config import TrainConfig
    from trainer.train.startup import log_corpus_passes

    corpora = [
        {"name": n, "record_format": "pair", "weight": w, "train_examples": e, "train_files": [f"{n}/t.gz"]}
        for n, w, e in (("msmarco", 247, 499_184), ("paq", 123, 64_371_441))
    ]
    manifest = Manifest.from_json({"tokenizer": {"pad_token_id": 0}, "corpora": corpora}, "data")
    with caplog.at_level(logging.INFO, logger="trainer"):
        passes = log_corpus_passes(TrainConfig(train_steps=540_000, batch_size=1024), manifest)
    assert [round(p.passes, 2) for p in passes] == [739.48, 2.86]  # 552,960,000 draws, 247/370 of them msmarco's
    (info,) = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert info.splitlines()[0] == (
        "passes per corpus over 540,000 steps x 1,024 examples (draws of each example, on average):"
    )
    assert info.splitlines()[2].split() == ["msmarco", "66.76%", "499,184", "739.48"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("1 corpus(es) drawn more than 20 times per example: msmarco (739); ")
