"""What a training run prepares before its first step: the compilation cache, the model, a copy of
its source files in the workdir, the check that the data was tokenized with its vocabulary, and the
log of how many times the run draws each corpus's examples."""

from __future__ import annotations

import logging

import jax
from jax.experimental.compilation_cache import compilation_cache

from pipeline import storage
from pipeline.manifest import Manifest
from pipeline.tokenizing import vocab_fingerprint
from pipeline.user_errors import UserError
from trainer.config import TrainConfig, check_dims
from trainer.data.corpus_schedule import CorpusPasses, corpus_passes, passes_report
from trainer.model.hf_loading import (
    Pretrained,
    init_random,
    load_pretrained,
    read_hf_config,
    resolve_model_dir,
    tokenizer_files,
)
from trainer.model.modeling import EncoderConfig
from trainer.model.pooling import source_pooling_mode
from trainer.train.train_step import compute_dtype

log = logging.getLogger("trainer")


def enable_compilation_cache(setting: str, workdir: str) -> str | None:
    """JAX's persistent compilation cache (local or gs://): a restarted run (preemption, resume) loads
    its programs instead of compiling them again. Returns the directory, or None when off. "off" also
    turns off a cache that JAX_COMPILATION_CACHE_DIR set; "auto" on CPU leaves such a one as it is."""
    if setting == "off":
        if jax.config.jax_compilation_cache_dir:
            jax.config.update("jax_compilation_cache_dir", None)
            compilation_cache.reset_cache()
        return None
    if setting == "auto" and jax.devices()[0].platform == "cpu":
        return None
    path = storage.join(workdir, "compilation_cache") if setting in ("auto", "workdir") else setting
    jax.config.update("jax_compilation_cache_dir", path)
    # JAX decides whether to use the cache at a process's first compile and keeps that answer: without
    # a reset, a process that compiled anything before this point would silently not use it.
    compilation_cache.reset_cache()
    return path


def load_model(cfg: TrainConfig) -> Pretrained:
    """The pretrained encoder named by cfg.model (or, with from_scratch, its architecture freshly initialised),
    pooling by cfg.pooling ("auto": the source model's, else mean). Matryoshka sizes beyond its
    embedding size are a UserError."""
    dtype = compute_dtype(cfg.dtype)
    pooling = None if cfg.pooling == "auto" else cfg.pooling
    if cfg.from_scratch:
        model_dir = resolve_model_dir(cfg.model)
        config = EncoderConfig.from_hf_dict(read_hf_config(model_dir))
        pretrained = init_random(
            config,
            seed=cfg.seed,
            dtype=dtype,
            source_dir=model_dir,
            remat=cfg.remat,
            pooling=pooling or source_pooling_mode(model_dir) or "mean",
        )
    else:
        pretrained = load_pretrained(cfg.model, dtype=dtype, remat=cfg.remat, pooling=pooling)
    check_matryoshka_dims(cfg, pretrained.config.hidden_size)
    return pretrained


def check_matryoshka_dims(cfg: TrainConfig, hidden_size: int) -> None:
    try:
        check_dims(cfg.matryoshka_dims, cfg.matryoshka_weights, hidden_size)
    except ValueError as e:
        raise UserError(f"--{e}") from None
    if cfg.matryoshka_dims and hidden_size not in cfg.matryoshka_dims:
        log.warning(
            "--matryoshka_dims %s leaves out the model's full size %d: the untruncated embedding is "
            "not trained directly",
            ",".join(map(str, cfg.matryoshka_dims)),
            hidden_size,
        )


def save_model_source(pretrained: Pretrained, workdir: str) -> str:
    """Copies config.json and the tokenizer files into <workdir>/model_source, so that a workdir alone
    is enough to export (and the run does not depend on a hub or a package later)."""
    dst = storage.join(workdir, "model_source")
    if jax.process_index() == 0:
        storage.copy_files(pretrained.source_dir, tokenizer_files(pretrained.source_dir), dst)
        storage.write_json(storage.join(dst, "config.json"), pretrained.hf_config)
    return dst


class TokenizerMismatchError(UserError):
    pass


def check_tokenizer(manifest: Manifest, tokenizer) -> None:
    """The data must have been tokenized with the model's vocabulary, or every id means something else."""
    want = manifest.tokenizer.get("vocab_fingerprint")
    have = vocab_fingerprint(tokenizer.get_vocab())
    if want and want != have:
        raise TokenizerMismatchError(
            f"the data was tokenized with {manifest.tokenizer.get('name')!r} whose vocabulary differs from "
            f"the model's; rerun beam_main.py with --tokenizer set to the model ({want[:12]} != {have[:12]})"
        )


def log_corpus_passes(cfg: TrainConfig, manifest: Manifest) -> list[CorpusPasses]:
    """Logs, per corpus of the manifest, how many times train_steps x batch_size draws each of its
    training examples on average, with a warning naming the corpora drawn more than 20 times."""
    passes = corpus_passes(
        [(c.name, c.weight, c.train_examples) for c in manifest.corpora], cfg.train_steps, cfg.batch_size
    )
    lines, warning = passes_report(passes, cfg.train_steps, cfg.batch_size)
    log.info("%s", "\n".join(lines))
    if warning:
        log.warning("%s", warning)
    return passes
