"""Fixtures shared by several test modules: a small Beam output built from the bundled samples, and a
tiny random BERT that uses all-MiniLM-L6-v2's real tokenizer (fast to train on 2 cores)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests._xla import FAST_COMPILE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One CPU device in test processes unless a test asks for more (its subprocess's own XLA_FLAGS):
# mine_main.main() called in-process would otherwise split the CPU into one device per core
# (trainer.mesh.split_cpu_into_devices) if it were the first JAX user of a worker, and later tests'
# device count would depend on the order tests ran in.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=1").strip()
if FAST_COMPILE not in os.environ["XLA_FLAGS"]:  # tests/_xla.py says why
    os.environ["XLA_FLAGS"] += " " + FAST_COMPILE
# JAX writes each operation's Python traceback into the MLIR it lowers (debug information for error
# messages and profiles): 4-5% of the CPU of in-process model tests (test_loss + test_modeling,
# 85.3 -> 80.9 and 80.6 -> 76.4 s in two alternating pairs). The tests' subprocesses inherit it.
os.environ.setdefault("JAX_INCLUDE_FULL_TRACEBACKS_IN_LOCATIONS", "0")

# The slowest files (measured: `pytest --durations`), slowest first. scripts/test.sh runs three xdist
# workers with --dist loadfile --no-loadscope-reorder, so files are handed out in collection order:
# starting the long ones first keeps one worker from running a long file alone at the end (xdist's
# default order, most tests first, put these few-test files last). Order only; nothing is skipped.
SLOWEST_FIRST = [
    "test_layout_invariance.py",
    "test_data_batches.py",
    "test_train_loop.py",
    "test_mine_run.py",
    "test_grad_cache.py",
    "test_evaluators_mteb.py",
    "test_gcs_end_to_end.py",
    "test_train_step.py",
    "test_aot.py",
    "test_encode.py",
    "test_beam_main.py",
    "test_cleaning.py",
    "test_data_packing.py",
    "test_modeling.py",
    "test_loss.py",
    "test_preflight.py",
    "test_memory.py",
    "test_export.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def demo_model_dir() -> str:
    from pipeline.model_source import demo_model_dir as find

    return find()


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory, demo_model_dir) -> str:
    """The Beam job's output for a pair corpus, a set corpus and a triplet corpus of the samples."""
    from pipeline.job import run

    out = str(tmp_path_factory.mktemp("data") / "out")
    rc = run(
        [
            f"--data_config={REPO}/samples/data_config.json",
            f"--input_root={REPO}/samples/corpora",
            f"--output_dir={out}",
            f"--tokenizer={demo_model_dir}",
            "--validation_fraction=0.05",
            "--corpora=sample_paraphrases,sample_captions,sample_nli",
        ]
    )
    assert rc in (0, None)
    return out


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, demo_model_dir) -> str:
    """config.json of a 2-layer, 32-wide BERT (random init with from_scratch) + MiniLM's tokenizer files."""
    d = tmp_path_factory.mktemp("tiny_bert")
    with open(os.path.join(demo_model_dir, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    with open(d / "config.json", "w") as f:
        json.dump(cfg, f)
    for name in os.listdir(demo_model_dir):
        if name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copyfile(os.path.join(demo_model_dir, name), d / name)
    return str(d)


@pytest.fixture(scope="session")
def tiny_st_model(tmp_path_factory, tiny_bert_dir) -> str:
    """A SentenceTransformers directory (weights included) of the tiny random BERT: a model that
    loads from files, as a real one does, and encodes in milliseconds."""
    from trainer.model.export import export_sentence_transformers
    from trainer.model.hf_loading import init_random
    from trainer.model.modeling import EncoderConfig

    with open(os.path.join(tiny_bert_dir, "config.json")) as f:
        cfg = EncoderConfig.from_hf_dict(json.load(f))
    pre = init_random(cfg, seed=5, source_dir=tiny_bert_dir)
    out = str(tmp_path_factory.mktemp("tiny_st") / "model")
    return export_sentence_transformers(pre.params, pre.config, pre.hf_config, tiny_bert_dir, out, max_seq_length=32)


@pytest.fixture(scope="session")
def prompted_data_dir(tmp_path_factory, tiny_bert_dir) -> str:
    """The Beam job's output (no validation split) for tests/_prompted.py's corpora, whose data config
    has prompts, tokenized with the tiny BERT's (all-MiniLM-L6-v2's) tokenizer."""
    import gzip

    from pipeline.job import run
    from tests._prompted import PROMPTED_CONFIG, PROMPTED_LINES, PROMPTED_MAX_SEQ_LENGTH

    root = tmp_path_factory.mktemp("prompted")
    for name, lines in PROMPTED_LINES.items():
        with gzip.open(root / f"{name}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)
    (root / "data_config.json").write_text(json.dumps(PROMPTED_CONFIG))
    out = str(root / "out")
    rc = run(
        [
            f"--data_config={root / 'data_config.json'}",
            f"--output_dir={out}",
            f"--tokenizer={tiny_bert_dir}",
            "--validation_fraction=0",
            f"--max_seq_length={PROMPTED_MAX_SEQ_LENGTH}",
        ]
    )
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def prompted_minilm(tmp_path_factory, demo_model_dir) -> str:
    """all-MiniLM-L6-v2 with tests/_prompted.py's MINILM_PROMPTS in its config_sentence_transformers.json
    (its other files linked)."""
    from tests._prompted import MINILM_PROMPTS

    d = tmp_path_factory.mktemp("prompted_minilm")
    for name in os.listdir(demo_model_dir):
        if name != "config_sentence_transformers.json":
            os.symlink(os.path.join(demo_model_dir, name), d / name)
    (d / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": MINILM_PROMPTS, "default_prompt_name": None})
    )
    return str(d)


# The suite's time budget (8 minutes from a fresh clone, README): `TEST_CPU_LOG=path pytest ...` appends
# one JSON line per test with its CPU seconds (this process and the subprocesses it waited for) and
# wall seconds, setup and teardown included. CPU seconds move far less than wall time on a shared
# machine, so they say which files to make cheaper or move behind `-m slow` (scripts/test_cpu_report.py).
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    path = os.environ.get("TEST_CPU_LOG")
    if not path:
        yield
        return
    import resource
    import time

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    c0, t0 = cpu(), time.perf_counter()
    yield
    entry = {
        "test": item.nodeid,
        "cpu_s": round(cpu() - c0, 2),
        "wall_s": round(time.perf_counter() - t0, 2),
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
        "end": round(time.time(), 2),
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
