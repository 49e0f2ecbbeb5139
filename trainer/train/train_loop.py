"""The training loop: data -> step -> metrics, evaluation and checkpoints -> export (-> MTEB tasks on it,
with --mteb_tasks).

`train(cfg, data_dir, workdir)` is what `train_main.py` calls. It resumes from the workdir's latest
checkpoint when there is one (parameters, optimizer, step and the data position), so rerunning the
same command after a preemption continues exactly where the last checkpoint left off.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time

import jax
from tqdm import tqdm

from pipeline import storage
from pipeline.manifest import Manifest, load_manifest
from trainer import multihost
from trainer.config import TrainConfig
from trainer.data.batches import BatchStream
from trainer.data.row_fit import manifest_profiles, row_ladder
from trainer.data.shapes import Chunking, agree_on_shape, batch_packer, with_effective_length
from trainer.evaluators.suite import EvaluationSuite, evaluation_table, path_fields
from trainer.mesh import create_mesh, data_shards, layout_report, shard_batch
from trainer.model.encode import load_tokenizer
from trainer.model.export import export_sentence_transformers
from trainer.train import startup
from trainer.train.checkpointing import Checkpointer
from trainer.train.metrics_writer import MetricsWriter, truncate_metrics
from trainer.train.preflight import run_preflight
from trainer.train.train_step import create_train_state, make_train_step, train_state_sharding

log = logging.getLogger("trainer")


class NonFiniteLossError(RuntimeError):
    pass


@dataclasses.dataclass
class TrainResult:
    """How a call to `train` ended: finished (evaluated and exported) or stopped early (checkpointed)."""

    step: int
    finished: bool
    signal: int | None = None  # the signal that stopped it early, if one did
    evaluation: dict = dataclasses.field(default_factory=dict)
    evaluation_before: dict = dataclasses.field(default_factory=dict)
    export_dir: str | None = None
    # What failed in the evaluations of the export (main process; --mteb_tasks), each a phrase naming it.
    export_failures: list[str] = dataclasses.field(default_factory=list)


class PreemptionGuard:
    """Within its `with` block SIGTERM (a preemption notice) only sets `signal`; the loop checkpoints
    at the next step boundary and returns."""

    def __init__(self):
        self.signal: int | None = None

    def _handle(self, signum, _frame) -> None:
        self.signal = signum

    def __enter__(self) -> "PreemptionGuard":
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def itstime(step: int, every: int) -> bool:
    """Whether a periodic action (log, evaluate, checkpoint) falls on this step; every = 0: never."""
    return every > 0 and step % every == 0


def model_card(cfg: TrainConfig, manifest: Manifest, step: int, evaluation: dict, before: dict) -> dict:
    total = sum(c.weight for c in manifest.corpora)
    # A corpus's description (data config -> manifest) rides along: a mined corpus's names its mining run.
    mix = {
        c.name: {
            "record_format": c.record_format,
            "weight": c.weight,
            "probability": round(c.weight / total, 4),
            "train_examples": c.train_examples,
            **({"description": c.description} if c.description else {}),
            **({"prompts": {k: p.name for k, p in c.prompts.items()}} if c.prompts else {}),
        }
        for c in manifest.corpora
    }
    card = {
        "base_model": cfg.model,
        # Paths of this machine are no part of the model: the export's and the evaluators' files.
        "training": {k: v for k, v in cfg.to_json().items() if k not in {"export_dir"} | path_fields()},
        "steps": step,
        "data_mix": mix,
        "data_cleaning": manifest.raw.get("cleaning"),  # None: a manifest from before the cleaning stages
        "evaluation": evaluation,
        "evaluation_before_training": before,
    }
    if cfg.matryoshka_dims:
        card["matryoshka"] = {
            "dims": list(cfg.matryoshka_dims),
            "weights": list(cfg.matryoshka_weights or [1.0] * len(cfg.matryoshka_dims)),
        }
    return card


def train(
    cfg: TrainConfig, data_dir: str, workdir: str, progress: bool = True, stop_at_step: int | None = None
) -> TrainResult:
    """Runs (or resumes) training to cfg.train_steps, then evaluates and exports.

    `stop_at_step` behaves like a preemption at that step (checkpoint, then return): a time-boxed job
    or a test of exact resume. The evaluators (trainer/evaluators/suite.py, cfg.evaluators) are built
    before step 1 (with cfg.mteb_tasks, the tasks are looked up then: a MtebTaskError) and run before,
    during and after training; those of the export run on it at the end, and what fails there is logged
    and returned in `result.export_failures`: the checkpoint and the export stay."""
    is_main = jax.process_index() == 0
    cache_dir = startup.enable_compilation_cache(cfg.compilation_cache, workdir)
    mesh = create_mesh()
    log.info("devices: %d (%s), hosts: %d", jax.device_count(), jax.devices()[0].platform, jax.process_count())
    log.info("%s", layout_report(cfg.batch_size, mesh, cfg.grad_cache_chunk))
    log.info("compilation cache: %s", cache_dir or "off")

    manifest = load_manifest(data_dir)
    startup.log_corpus_passes(cfg, manifest)
    pretrained = startup.load_model(cfg)
    source_dir = startup.save_model_source(pretrained, workdir)
    tokenizer = load_tokenizer(pretrained.source_dir)
    startup.check_tokenizer(manifest, tokenizer)
    pad_id = manifest.pad_token_id

    # The shapes of this run's batches follow the effective max_seq_length (capped at the data's cut): the
    # preflight, the packer and the stream take it from here; the export keeps the length asked for.
    data_cfg = with_effective_length(cfg, manifest)
    state = create_train_state(pretrained.params["params"], cfg, mesh)
    # The packed rows' counts: pack_row_steps per doubling, or fitted to the manifest's lengths (the same
    # on every host, and what the planner plans with --manifest).
    ladder = row_ladder(data_cfg, manifest_profiles(manifest) if cfg.pack_programs else None, data_shards(mesh))
    if ladder.rungs:
        log.info("packed row counts fitted to the data (--pack_programs=%d): %s", cfg.pack_programs, ladder.describe())
    if cfg.preflight:  # before any thread starts: a refusal leaves nothing running
        kinds = {"triplet" if c.has_negative else "pair" for c in manifest.corpora}
        run_preflight(
            pretrained.model, data_cfg, mesh, state, (kinds | {"pair"}) if cfg.mixed_batch_share else kinds, ladder
        )
    checkpointer = Checkpointer(workdir, keep=cfg.keep_checkpoints)
    data_state = None
    if checkpointer.latest_step() is not None:
        state, data_state, _ = checkpointer.restore(state)
        log.info("resumed from step %d", int(state.step))
        if is_main:
            truncate_metrics(workdir, int(state.step))
    start_step = int(state.step)
    meta = {
        "model": cfg.model,
        "model_source": source_dir,
        "hf_config": pretrained.hf_config,
        "config": cfg.to_json(),
        "data_dir": data_dir,
        "pooling": pretrained.model.pooling,
        "prompts": manifest.prompts,
        "default_prompt_name": manifest.default_prompt_name,
        "data_cleaning": manifest.raw.get("cleaning"),
    }

    chunking = Chunking.from_config(cfg, data_shards(mesh))
    packer = (
        batch_packer(
            data_cfg, data_shards(mesh), data_shards(mesh) // jax.process_count(), pad_id, ladder, jax.process_index()
        )
        if cfg.packing
        else None
    )
    batches = BatchStream(
        manifest, data_cfg, jax.process_index(), jax.process_count(), state=data_state, transform=packer
    )
    step_fn = make_train_step(pretrained.model, cfg, mesh, state_sharding=train_state_sharding(state, cfg, mesh))
    evaluators = EvaluationSuite(cfg, pretrained.model, tokenizer, manifest, workdir, progress)
    writer = MetricsWriter(workdir, enabled=is_main)
    before: dict = {}
    if start_step == 0:
        before = evaluators.run(state.params)
        if before:
            writer.write(0, before)
            log.info("evaluation before training:\n%s", evaluation_table(before, {}, writer.path))

    def save(step: int) -> None:
        checkpointer.save(step, state, multihost.gather_data_state(batches.state()), meta)

    bar = tqdm(total=cfg.train_steps, initial=start_step, disable=not (progress and is_main), unit="step")
    step = start_step
    t0, pairs = time.perf_counter(), 0
    try:
        with PreemptionGuard() as preemption:
            while step < cfg.train_steps:
                batch = next(batches)
                corpus = batch.pop("corpus")
                rows = batch["anchor_fp"].shape[0] * jax.process_count()
                batch = agree_on_shape(batch, pad_id, chunking)
                state, metrics = step_fn(state, shard_batch(batch, mesh))
                metrics = jax.device_get(metrics)
                step += 1
                pairs += rows
                if not bool(metrics["finite"]):
                    raise NonFiniteLossError(
                        f"non-finite loss or gradient at step {step} (loss={float(metrics['loss'])}, corpus {corpus}); "
                        f"stopping. The last good checkpoint (step {checkpointer.latest_step()}) is kept; "
                        f"lower --learning_rate or check the data."
                    )
                bar.update(1)
                if itstime(step, cfg.log_every) or step == cfg.train_steps:
                    elapsed = time.perf_counter() - t0
                    writer.write(
                        step,
                        {
                            "loss": float(metrics["loss"]),
                            "learning_rate": float(metrics["learning_rate"]),
                            "grad_norm": float(metrics["grad_norm"]),
                            "pairs_per_second": pairs / max(elapsed, 1e-9),
                            "corpus": corpus,
                        },
                    )
                    bar.set_postfix(loss=f"{float(metrics['loss']):.4f}", corpus=corpus)
                    t0, pairs = time.perf_counter(), 0
                if itstime(step, cfg.eval_every) and step < cfg.train_steps:
                    writer.write(step, evaluators.run(state.params))
                interrupted = preemption.signal is not None or step == stop_at_step
                if itstime(step, cfg.checkpoint_every) or interrupted:
                    save(step)
                if interrupted:
                    log.warning(
                        "stopping at step %d (signal %s): checkpointed; rerun the same command to resume",
                        step,
                        preemption.signal,
                    )
                    checkpointer.wait()
                    return TrainResult(step, finished=False, signal=preemption.signal)
        if checkpointer.latest_step() != step:
            save(step)
        checkpointer.wait()
        final = evaluators.run(state.params)
        if final:
            writer.write(step, final)
            log.info("evaluation after training:\n%s", evaluation_table(before, final, writer.path))
        export_dir = cfg.export_dir or storage.join(workdir, "export")
        if is_main:
            export_sentence_transformers(
                {"params": jax.device_get(state.params)},
                pretrained.config,
                pretrained.hf_config,
                source_dir,
                export_dir,
                max_seq_length=cfg.max_seq_length,
                model_card=model_card(cfg, manifest, step, final, before),
                extra_tensors=pretrained.extras,
                pooling=pretrained.model.pooling,
                prompts=manifest.prompts,
                default_prompt_name=manifest.default_prompt_name,
            )
            log.info("exported the model to %s", export_dir)
    finally:
        bar.close()
        batches.close()
        checkpointer.close()
    failures: list[str] = []
    if is_main and evaluators.evaluates_export:  # on the written export, with the input pipeline closed
        on_export = evaluators.run_on_export(export_dir, step)
        if on_export:
            writer.write(step, on_export)
        failures = evaluators.failures()
    return TrainResult(
        step, finished=True, evaluation=final, evaluation_before=before, export_dir=export_dir, export_failures=failures
    )
