"""End-to-end training on the Beam job's output: exact resume, preemption, non-finite stop, export."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from trainer.config import get_preset
from trainer.train.metrics_writer import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(model_dir, **kw):
    base = dict(
        model=model_dir,
        from_scratch=True,
        batch_size=8,
        train_steps=20,
        warmup_steps=4,
        learning_rate=1e-3,
        log_every=1,
        eval_every=0,
        checkpoint_every=1000,
        eval_max_examples=64,
        bucket_lengths=(16, 32),
        max_seq_length=32,
        seed=3,
        pack_row_steps=1,
    )  # a power-of-two row ladder: fewer train-step programs to compile
    base.update(kw)
    return get_preset("demo").replace(**base)


def _losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


def _final_params(workdir):
    import jax

    from trainer.train.checkpointing import restore_latest_params

    params, meta = restore_latest_params(workdir)
    return meta["step"], jax.tree_util.tree_leaves(params)


# The straight and resumed runs train with the Matryoshka loss (trainer/train/matryoshka.py) at these sizes
# of the tiny BERT's 32: it is resumed exactly, evaluated at each size, and named in the model card.
MATRYOSHKA = dict(matryoshka_dims=(32, 16, 8), matryoshka_weights=(1.0, 1.0, 0.5))


@pytest.fixture(scope="module")
def run_cfg(tmp_path_factory, tiny_bert_dir):
    """The straight and resumed runs' config. They share a compilation cache directory
    (--compilation_cache=DIR), so the resumed runs load the straight run's train-step programs (a
    minute of CPU compiling saved), and a resume from cached programs is checked to be exact."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    yield _cfg(tiny_bert_dir, compilation_cache=str(tmp_path_factory.mktemp("compilation_cache")), **MATRYOSHKA)
    jax.config.update("jax_compilation_cache_dir", None)  # the rest of this worker's tests compile afresh
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, sample_data_dir, run_cfg):
    from trainer.train.train_loop import train

    workdir = str(tmp_path_factory.mktemp("straight"))
    logged, logger = _LogLines(), logging.getLogger("trainer")
    level = logger.level
    logger.addHandler(logged)
    logger.setLevel(logging.INFO)  # as train_main.py logs
    try:
        result = train(run_cfg, sample_data_dir, workdir, progress=False)
    finally:
        logger.removeHandler(logged)
        logger.setLevel(level)
    return workdir, result, logged.lines


class _LogLines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_exact_resume(tmp_path, straight_run, sample_data_dir, run_cfg):
    import jax

    from trainer.train.train_loop import train

    straight, _, _ = straight_run
    cached = os.listdir(run_cfg.compilation_cache)
    assert sum(name.startswith("jit_step") for name in cached) >= 2, cached  # the straight run's programs
    workdir = str(tmp_path / "resumed")
    hits = []

    def on_event(event, **_):
        hits.extend([event] if event == "/jax/compilation_cache/cache_hits" else [])

    jax.monitoring.register_event_listener(on_event)
    try:
        first = train(run_cfg, sample_data_dir, workdir, progress=False, stop_at_step=10)
        assert (first.step, first.finished) == (10, False)
        train(run_cfg, sample_data_dir, workdir, progress=False)
    finally:
        jax.monitoring.unregister_event_listener(on_event)
    # The resumed runs compiled no train step (no new program in the cache) and loaded the straight
    # run's: each shape is used by one of the two runs at least (steps 1-10 and 11-20 may differ).
    steps = {name for name in cached if name.startswith("jit_step")}
    assert {name for name in os.listdir(run_cfg.compilation_cache) if name.startswith("jit_step")} == steps
    assert len(hits) >= len(steps)
    a, b = _losses(straight), _losses(workdir)
    assert sorted(a) == list(range(1, 21)) and sorted(b) == list(range(1, 21))
    np.testing.assert_array_equal([a[s] for s in range(1, 21)], [b[s] for s in range(1, 21)])
    corpora_a = [r.get("corpus") for r in read_metrics(straight) if "loss" in r]
    corpora_b = [r.get("corpus") for r in read_metrics(workdir) if "loss" in r]
    assert corpora_a == corpora_b and len(set(corpora_a)) > 1  # batches came from several corpora
    step_a, leaves_a = _final_params(straight)
    step_b, leaves_b = _final_params(workdir)
    assert step_a == step_b == 20
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_training_lowers_the_loss_and_logs_what_was_asked(straight_run):
    workdir, result, _ = straight_run
    rows = [r for r in read_metrics(workdir) if "loss" in r]
    assert {"loss", "learning_rate", "grad_norm", "pairs_per_second", "corpus"} <= set(rows[0])
    # Per-step losses swing with the corpus drawn (20 steps of a tiny random model): judge learning on
    # the fixed validation splits instead, scored before and after training.
    before, after = result.evaluation_before, result.evaluation
    assert after["eval/mean_mrr@10"] > before["eval/mean_mrr@10"] + 0.02, (before, after)
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert rows[0]["learning_rate"] == 0.0 and abs(max(r["learning_rate"] for r in rows) - 1e-3) < 1e-4
    ev = result.evaluation
    assert 0.0 <= ev["eval/mean_recall@1"] <= 1.0 and "eval/sample_nli/mrr@10" in ev
    # Each Matryoshka size below the full one is evaluated too, from the same embeddings.
    for dim in (16, 8):
        assert 0.0 <= ev[f"eval/dim{dim}/mean_recall@1"] <= 1.0 and f"eval/dim{dim}/sample_nli/mrr@10" in ev
    assert "eval/dim8/ir/sample_ir/ndcg@10" in ev and "eval/dim16/ir/sample_ir/map@100" in ev
    assert not any("dim32" in k for k in ev)
    assert ev["eval/dim8/mean_mrr@10"] != ev["eval/mean_mrr@10"]
    assert os.listdir(os.path.join(workdir, "tensorboard"))


def test_the_log_shows_the_headline_metrics_as_a_table_and_metrics_jsonl_keeps_them_all(straight_run):
    workdir, result, logged = straight_run
    evals = [r for r in read_metrics(workdir) if any(k.startswith("eval/") for k in r)]
    first, last = evals[0], evals[-1]  # the full records, before (step 0) and after training
    assert (first["step"], last["step"]) == (0, 20)
    headline = ["eval/mean_recall@1", "eval/mean_mrr@10"] + [
        f"eval/ir/sample_ir/{m}" for m in ("ndcg@10", "mrr@10", "recall@100", "map@100")
    ]
    more = len(last) - 1 - len(headline)  # per corpus and per Matryoshka size
    assert more == 6 + 2 * (2 + 6 + 4)  # 3 corpora x 2 metrics; 2 sizes x (means, corpora, BEIR set)
    for title, columns in (("before", [first]), ("after", [first, last])):
        message = next(m for m in logged if m.startswith(f"evaluation {title} training:"))
        lines = message.splitlines()[1:]
        assert lines[0].split() == ["metric", "before", "after"][: 1 + len(columns)]
        assert len({len(line) for line in lines[:-1]}) == 1  # aligned columns
        assert [line.split()[0] for line in lines[1:-1]] == headline
        for line, name in zip(lines[1:-1], headline):
            assert [float(x) for x in line.split()[1:]] == [round(c[name], 4) for c in columns]
        assert lines[-1] == f"(+{more} more, per corpus and per Matryoshka size: {workdir}/metrics.jsonl)"
    assert not any("{" in m for m in logged if m.startswith("evaluation"))  # no dict in the log


def test_export_loads_in_sentence_transformers_and_matches_our_encoder(straight_run):
    from sentence_transformers import SentenceTransformer

    from trainer.model.encode import encode, load_tokenizer
    from trainer.model.hf_loading import load_pretrained
    from trainer.train.checkpointing import restore_latest_params
    from trainer.train.matryoshka import truncate

    workdir, result, _ = straight_run
    export = result.export_dir
    card = open(os.path.join(export, "README.md")).read()
    assert "sample_nli" in card and "20" in card  # the data mix and the steps
    assert "## Matryoshka dimensions" in card and "sizes 32, 16, 8 (weights 1.0, 1.0, 0.5)" in card
    sentences = ["A man is playing a guitar.", "Zwei Hunde rennen über die Wiese.", ""]
    st = SentenceTransformer(export, device="cpu").encode(sentences, convert_to_numpy=True)
    ours = load_pretrained(export)
    emb = encode(ours.model, ours.params, load_tokenizer(ours.source_dir), sentences, max_seq_length=32)
    np.testing.assert_allclose(st, emb, atol=1e-5)
    # The card's usage line: sentence-transformers' truncate_dim, re-normalised, is our truncation.
    st8 = SentenceTransformer(export, device="cpu", truncate_dim=8).encode(sentences, convert_to_numpy=True)
    np.testing.assert_allclose(truncate(st8, 8), truncate(emb, 8), atol=1e-5)
    params, _ = restore_latest_params(workdir)  # the export holds the last checkpoint's weights

    emb2 = encode(ours.model, {"params": params}, load_tokenizer(ours.source_dir), sentences, max_seq_length=32)
    np.testing.assert_allclose(emb2, emb, atol=1e-6)


def test_model_card_lists_each_corpus_s_prompts(prompted_data_dir):
    from pipeline.manifest import load_manifest
    from trainer.train.train_loop import model_card

    mix = model_card(get_preset("demo"), load_manifest(prompted_data_dir), 5, {}, {})["data_mix"]
    assert mix["search"]["prompts"] == {"anchor": "query", "candidate": "passage"}
    assert mix["captions"]["prompts"] == {"anchor": "passage", "candidate": "passage"}
    assert "prompts" not in mix["plain"]


@pytest.mark.slow  # ~40 s; the step's guard stays in tests/test_train_step.py
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, sample_data_dir, tiny_bert_dir):
    from trainer.train.checkpointing import Checkpointer
    from trainer.train.train_loop import NonFiniteLossError, train

    workdir = str(tmp_path / "nan")
    train(_cfg(tiny_bert_dir, train_steps=6), sample_data_dir, workdir, progress=False, stop_at_step=3)
    with pytest.raises(NonFiniteLossError, match="non-finite loss .* step 4.*last good checkpoint \\(step 3\\)"):
        train(_cfg(tiny_bert_dir, train_steps=6, scale=float("nan")), sample_data_dir, workdir, progress=False)
    assert Checkpointer(workdir).latest_step() == 3


@pytest.mark.slow  # ~65 s; exact resume stays in test_exact_resume
def test_sigterm_checkpoints_and_the_same_command_resumes(tmp_path, sample_data_dir, tiny_bert_dir):
    workdir = str(tmp_path / "preempted")
    cmd = [
        sys.executable,
        os.path.join(REPO, "train_main.py"),
        f"--data_dir={sample_data_dir}",
        f"--workdir={workdir}",
        "--config=demo",
        f"--model={tiny_bert_dir}",
        "--from_scratch=true",
        "--batch_size=8",
        "--train_steps=100000",
        "--warmup_steps=2",
        "--log_every=1",
        "--eval_every=0",
        "--checkpoint_every=100000",
        "--max_seq_length=32",
        "--bucket_lengths=16,32",
        "--no_progress",
        "--eval_max_examples=8",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 4:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    from trainer.train.checkpointing import Checkpointer

    saved = Checkpointer(workdir).latest_step()
    logged = max(r["step"] for r in read_metrics(workdir) if "loss" in r)
    assert saved is not None and saved == logged >= 3
    assert "rerun the same command to resume" in err
