"""The training loop: model + data + step + checkpoints + metrics + evaluation + export.

`train(cfg, data_dir, workdir)` is what `train_main.py` calls. It resumes from the workdir's latest
checkpoint when there is one (parameters, optimizer, step and the data position), so rerunning the
same command after a preemption continues exactly where the last checkpoint left off.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from typing import Any

import jax
import numpy as np

from pipeline import storage
from trainer.checkpointing import Checkpointer
from pipeline.record_schema import TRIPLET_FORMATS
from trainer.config import TrainConfig
from trainer.mesh import create_mesh, data_shards, layout_report, shard_batch
from trainer.metrics_writer import MetricsWriter

log = logging.getLogger("trainer")


class NonFiniteLossError(RuntimeError):
    pass


_STATE_BYTES = 1 << 16  # room for one host's data position (about 1 KB of JSON) when gathered


def _gather_data_state(pipeline) -> dict:
    """The data position to checkpoint: this host's, or with several hosts all of them (each host
    reads its own shards, so each resumes from its own entry)."""
    from trainer.data.pipeline import merge_states

    if jax.process_count() == 1:
        return pipeline.state()
    from jax.experimental import multihost_utils

    raw = json.dumps(pipeline.state()).encode()
    if len(raw) > _STATE_BYTES:
        raise ValueError(f"data position of {len(raw)} bytes exceeds {_STATE_BYTES}")
    buf = np.zeros(_STATE_BYTES, np.uint8)
    buf[: len(raw)] = np.frombuffer(raw, np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(buf))
    return merge_states([json.loads(bytes(row).rstrip(b"\0")) for row in gathered])


def _sync_max(values):
    """Hosts agree on batch shapes: the elementwise max over hosts of a few ints (one collective)."""
    from jax.experimental import multihost_utils

    return np.max(multihost_utils.process_allgather(np.asarray(values, np.int32)), axis=0)


def _sync_length(length: int) -> int:
    """Hosts pad their rows of a batch to one length: the longest any host needs."""
    return int(_sync_max(length))


def _agree_on_packed_shape(batch: dict, pad_id: int, plan) -> dict:
    """With several hosts, every host's packed rows grow to the longest and most any host has (then
    to a row count the memory plan can chunk)."""
    from trainer.data.packing import pad_packed

    rows, row_length = batch["packed_ids"].shape[1:]
    rows, row_length = (int(v) for v in _sync_max((rows, row_length)))
    return pad_packed(batch, row_length, plan.packed_rows(rows, row_length), pad_id)


def enable_compilation_cache(setting: str, workdir: str) -> str | None:
    """JAX's persistent compilation cache (local or gs://): a restarted run (preemption, resume) loads
    its programs instead of compiling them again. Returns the directory, or None when off."""
    if setting == "off" or (setting == "auto" and jax.devices()[0].platform == "cpu"):
        return None
    path = storage.join(workdir, "compilation_cache") if setting in ("auto", "workdir") else setting
    jax.config.update("jax_compilation_cache_dir", path)
    return path


def _load_model(cfg: TrainConfig):
    from trainer.hf_loading import init_random, load_pretrained, read_hf_config, resolve_model_dir
    from trainer.modeling import EncoderConfig
    from trainer.train_step import compute_dtype

    dtype = compute_dtype(cfg.dtype)
    if cfg.from_scratch:
        model_dir = resolve_model_dir(cfg.model)
        config = EncoderConfig.from_hf_dict(read_hf_config(model_dir))
        return init_random(config, seed=cfg.seed, dtype=dtype, source_dir=model_dir, remat=cfg.remat)
    return load_pretrained(cfg.model, dtype=dtype, remat=cfg.remat)


def _save_model_source(pretrained, workdir: str) -> str:
    """Copies config.json and the tokenizer files into <workdir>/model_source so a workdir alone is
    enough to export (and the run does not depend on a hub or a package later)."""
    from trainer.hf_loading import tokenizer_files

    dst = storage.join(workdir, "model_source")
    files = tokenizer_files(pretrained.source_dir)
    if jax.process_index() == 0:
        if storage.is_remote(dst):
            import fsspec

            fs, root = fsspec.core.url_to_fs(dst)
            for f in files:
                fs.put_file(os.path.join(pretrained.source_dir, f), root + "/" + f)
            with storage.open_file(storage.join(dst, "config.json"), "w") as f:
                json.dump(pretrained.hf_config, f, indent=2)
        else:
            os.makedirs(dst, exist_ok=True)
            for f in files:
                shutil.copyfile(os.path.join(pretrained.source_dir, f), os.path.join(dst, f))
            with open(os.path.join(dst, "config.json"), "w") as f:
                json.dump(pretrained.hf_config, f, indent=2)
    return dst


def _check_tokenizer(manifest: dict, tokenizer) -> None:
    """The data must have been tokenized with the model's vocabulary, or every id means something else."""
    from pipeline.tokenizing import vocab_fingerprint

    want = manifest.get("tokenizer", {}).get("vocab_fingerprint")
    have = vocab_fingerprint(tokenizer.get_vocab())
    if want and want != have:
        raise ValueError(
            f"the data was tokenized with {manifest['tokenizer'].get('name')!r} whose vocabulary differs from "
            f"the model's; rerun beam_main.py with --tokenizer set to the model ({want[:12]} != {have[:12]})")


class _Evaluator:
    """Retrieval on each corpus's validation split and, optionally, STS Spearman."""

    def __init__(self, cfg: TrainConfig, model, tokenizer, data_dir: str, manifest: dict, pad_id: int):
        from trainer.data.pipeline import validation_pairs

        self.cfg, self.model, self.tokenizer, self.pad_id = cfg, model, tokenizer, pad_id
        self.splits = {}
        for c in manifest["corpora"]:
            if c.get("validation_examples", 0) > 0:
                a, p = validation_pairs(data_dir, c["name"], cfg.eval_max_examples, cfg.max_seq_length)
                if len(a) >= 2:
                    self.splits[c["name"]] = (a, p)

    def __call__(self, params) -> dict[str, float]:
        from trainer.encode import encode, encode_ids
        from trainer.evaluators.retrieval import evaluate_corpus
        from pipeline.record_schema import fingerprint

        variables = {"params": params}
        out: dict[str, float] = {}

        def embed_ids(ids):
            return encode_ids(self.model, variables, ids, self.pad_id, batch_size=64,
                              max_seq_length=self.cfg.max_seq_length)

        recalls, mrrs = [], []
        for name, (anchors, positives) in self.splits.items():
            fps = [fingerprint(" ".join(map(str, p))) for p in positives]  # equal ids = equal text
            m = evaluate_corpus(embed_ids, anchors, positives, fps)
            out[f"eval/{name}/recall@1"] = m["recall@1"]
            out[f"eval/{name}/mrr@10"] = m["mrr@10"]
            recalls.append(m["recall@1"])
            mrrs.append(m["mrr@10"])
        if recalls:
            out["eval/mean_recall@1"] = float(np.mean(recalls))
            out["eval/mean_mrr@10"] = float(np.mean(mrrs))
        if self.cfg.sts_dev:
            from trainer.evaluators.sts import sts_spearman

            out["eval/sts_spearman"] = sts_spearman(
                lambda s: encode(self.model, variables, self.tokenizer, s, batch_size=64,
                                 max_seq_length=self.cfg.max_seq_length), self.cfg.sts_dev)
        return out


def _truncate_metrics(workdir: str, last_step: int) -> None:
    """On resume, drop metrics logged after the restored checkpoint: they are recomputed exactly."""
    path = storage.join(workdir, "metrics.jsonl")
    if storage.is_remote(path) or not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        keep = [line for line in f if line.strip() and json.loads(line)["step"] <= last_step]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(keep)


def _model_card(cfg: TrainConfig, manifest: dict, step: int, evaluation: dict, before: dict | None) -> dict:
    total = sum(c["weight"] for c in manifest["corpora"])
    mix = {c["name"]: {"record_format": c["record_format"], "weight": c["weight"], "probability": round(c["weight"] / total, 4),
                       "train_examples": c["train_examples"]} for c in manifest["corpora"]}
    return {
        "base_model": cfg.model,
        "training": {k: v for k, v in cfg.to_json().items() if k not in ("export_dir", "sts_dev")},
        "steps": step,
        "data_mix": mix,
        "evaluation": evaluation,
        "evaluation_before_training": before or {},
    }


def train(cfg: TrainConfig, data_dir: str, workdir: str, progress: bool = True,
          stop_at_step: int | None = None) -> dict[str, Any]:
    """Runs (or resumes) training; returns the final evaluation and where the model was exported.

    `stop_at_step` behaves like a preemption at that step (checkpoint, then return): a time-boxed job
    or a test of exact resume."""
    from tqdm import tqdm

    from trainer.encode import load_tokenizer
    from trainer.export import export_sentence_transformers
    from trainer.data.pipeline import InputPipeline, read_manifest
    from trainer.memory_plan import ChunkPlan, batch_packer
    from trainer.train_step import create_train_state, make_train_step, train_state_sharding

    is_main = jax.process_index() == 0
    cache_dir = enable_compilation_cache(cfg.compilation_cache, workdir)
    mesh = create_mesh()
    log.info("devices: %d (%s), hosts: %d", jax.device_count(), jax.devices()[0].platform, jax.process_count())
    log.info("%s", layout_report(cfg.batch_size, mesh, cfg.grad_cache_chunk))
    log.info("compilation cache: %s", cache_dir or "off")

    manifest = read_manifest(data_dir)
    pretrained = _load_model(cfg)
    source_dir = _save_model_source(pretrained, workdir)
    tokenizer = load_tokenizer(pretrained.source_dir)
    _check_tokenizer(manifest, tokenizer)
    pad_id = int(manifest["tokenizer"]["pad_token_id"])

    state = create_train_state(pretrained.params["params"], cfg, mesh)
    if cfg.preflight:  # before any thread starts: a refusal leaves nothing running
        from trainer.preflight import run_preflight

        kinds = {"triplet" if c["record_format"] in TRIPLET_FORMATS else "pair" for c in manifest["corpora"]}
        run_preflight(pretrained.model, cfg, mesh, state, (kinds | {"pair"}) if cfg.mixed_batch_share else kinds)
    checkpointer = Checkpointer(workdir, keep=cfg.keep_checkpoints)
    data_state = None
    if checkpointer.latest_step() is not None:
        state, data_state, _ = checkpointer.restore(state)
        log.info("resumed from step %d", int(state.step))
        if is_main:
            _truncate_metrics(workdir, int(state.step))
    start_step = int(state.step)
    meta = {"model": cfg.model, "model_source": source_dir, "hf_config": pretrained.hf_config,
            "config": cfg.to_json(), "data_dir": data_dir}

    multi_host = jax.process_count() > 1
    plan = ChunkPlan.from_config(cfg, data_shards(mesh))
    packer = (batch_packer(cfg, data_shards(mesh), data_shards(mesh) // jax.process_count(), pad_id)
              if cfg.packing else None)
    pipeline = InputPipeline(data_dir, cfg, jax.process_index(), jax.process_count(), state=data_state,
                             sync_length=_sync_length if multi_host and not cfg.packing else None,
                             transform=packer)
    step_fn = make_train_step(pretrained.model, cfg, mesh, state_sharding=train_state_sharding(state, cfg, mesh))
    evaluator = _Evaluator(cfg, pretrained.model, tokenizer, data_dir, manifest, pad_id)
    writer = MetricsWriter(workdir, enabled=is_main)

    stop = {"signal": None}

    def on_sigterm(signum, _frame):  # preemption: checkpoint at the next step boundary, then exit
        stop["signal"] = signum

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    before = None
    if start_step == 0:
        before = evaluator(state.params)
        if before:
            writer.write(0, before)
            log.info("evaluation before training: %s", before)

    def save(step: int) -> None:
        checkpointer.save(step, state, _gather_data_state(pipeline), meta)

    bar = tqdm(total=cfg.train_steps, initial=start_step, disable=not (progress and is_main), unit="step")
    step = start_step
    t0, pairs = time.perf_counter(), 0
    try:
        while step < cfg.train_steps:
            batch = next(pipeline)
            corpus = batch.pop("corpus")
            rows = batch["anchor_fp"].shape[0] * jax.process_count()
            if cfg.packing and multi_host:
                batch = _agree_on_packed_shape(batch, pad_id, plan)
            state, metrics = step_fn(state, shard_batch(batch, mesh))
            metrics = jax.device_get(metrics)
            step += 1
            pairs += rows
            if not bool(metrics["finite"]):
                raise NonFiniteLossError(
                    f"non-finite loss or gradient at step {step} (loss={float(metrics['loss'])}, corpus {corpus}); "
                    f"stopping. The last good checkpoint (step {checkpointer.latest_step()}) is kept; "
                    f"lower --learning_rate or check the data.")
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.train_steps:
                elapsed = time.perf_counter() - t0
                writer.write(step, {"loss": float(metrics["loss"]), "learning_rate": float(metrics["learning_rate"]),
                                    "grad_norm": float(metrics["grad_norm"]),
                                    "pairs_per_second": pairs / max(elapsed, 1e-9), "corpus": corpus})
                bar.set_postfix(loss=f"{float(metrics['loss']):.4f}", corpus=corpus)
                t0, pairs = time.perf_counter(), 0
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.train_steps:
                writer.write(step, evaluator(state.params))
            interrupted = stop["signal"] is not None or step == stop_at_step
            if step % cfg.checkpoint_every == 0 or interrupted:
                save(step)
            if interrupted:
                log.warning("stopping at step %d (signal %s): checkpointed; rerun the same command to resume",
                            step, stop["signal"])
                checkpointer.wait()
                return {"stopped_at": step, "signal": stop["signal"]}
        if checkpointer.latest_step() != step:
            save(step)
        checkpointer.wait()
        final = evaluator(state.params)
        if final:
            writer.write(step, final)
            log.info("evaluation after training: %s", final)
        export_dir = cfg.export_dir or storage.join(workdir, "export")
        if is_main:
            params = jax.device_get(state.params)
            export_sentence_transformers({"params": params}, pretrained.config, pretrained.hf_config, source_dir,
                                         export_dir, max_seq_length=cfg.max_seq_length,
                                         model_card=_model_card(cfg, manifest, step, final, before),
                                         extra_tensors=pretrained.extras)
            log.info("exported the model to %s", export_dir)
        return {"step": step, "evaluation": final, "evaluation_before": before, "export_dir": export_dir}
    finally:
        bar.close()
        pipeline.close()
        checkpointer.close()
        signal.signal(signal.SIGTERM, previous)
