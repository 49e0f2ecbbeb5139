"""--mteb_tasks (trainer/evaluators/mteb_tasks.py): resolving task names and classes, mteb's STS score
against our own STS evaluator on the same pairs, and a training run that logs an MTEB task's score.

`mteb` is not a dependency (it is the `.[mteb]` extra), and CI does not install it: there, this module
is skipped. The training run is marked slow (`-m slow`). With no network, the tasks run here are
tests/_mteb_task.py's LocalSTS, an STS task whose 20 pairs are made locally: a task class of the
user's own, as `--mteb_tasks=module:Class` takes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

mteb = pytest.importorskip("mteb")

from tests._mteb_task import PAIRS, LocalSTS  # noqa: E402 - needs mteb
from trainer.config import ConfigError, TrainConfig  # noqa: E402
from trainer.evaluators.mteb_tasks import MtebTaskError, resolve_tasks, run_tasks  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_STS = "tests._mteb_task:LocalSTS"


def test_names_and_classes_resolve_to_tasks():
    tasks = resolve_tasks(f" STSBenchmark, {LOCAL_STS} ,")
    assert [type(t) for t in tasks] == [type(mteb.get_task("STSBenchmark")), LocalSTS]
    assert not any(t.data_loaded for t in tasks)  # nothing loaded (or downloaded) at start-up
    assert resolve_tasks("") == []


@pytest.mark.parametrize(
    "spec,message",
    [
        (
            "STSBenchmarc",
            r"--mteb_tasks: 'STSBenchmarc' is not an MTEB task of mteb 2.* \(.*Did you mean: 'STSBenchmark'\?\)",
        ),
        ("tests._mteb_task:Nope", "--mteb_tasks: module 'tests._mteb_task' has no 'Nope'"),
        (
            "tests._no_such_module:LocalSTS",
            "--mteb_tasks: cannot import 'tests._no_such_module' for tests._no_such_module:LocalSTS \\(No module named",
        ),
        ("tests._mteb_task:NotATask", "tests._mteb_task:NotATask is not an mteb task class"),
        (f"{LOCAL_STS},tests._mteb_task:LocalSTSAgain", "names the task LocalSTS twice"),
    ],
)
def test_what_does_not_resolve_is_one_clear_error(spec, message):
    with pytest.raises(MtebTaskError, match=message):
        resolve_tasks(spec)


def test_without_mteb_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mteb", None)  # `import mteb` raises ImportError
    with pytest.raises(MtebTaskError, match=r"--mteb_tasks needs the mteb package.*pip install mteb.*\.\[mteb\]"):
        resolve_tasks("STSBenchmark")


@pytest.mark.parametrize(
    "spec,want",
    [
        ("a:b:c", "package.module:ClassName for a task class"),
        ("pkg.mod:", "package.module:ClassName"),
        ("SciFact,SciFact", "distinct entries"),
    ],
)
def test_config_refuses_the_spec_s_form(spec, want):
    with pytest.raises(ConfigError, match=f"--mteb_tasks must be {want}"):
        TrainConfig(mteb_tasks=spec)


def _write_sts(path) -> str:
    """PAIRS in the STS benchmark's layout (score in column 5, the pair in 6 and 7)."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"test\tlocal\t2026\t{i:04d}\t{score}\t{a}\t{b}\n" for i, (a, b, score) in enumerate(PAIRS))
    return str(path)


def test_mteb_sts_score_equals_our_sts_evaluator_and_reruns_recompute(tmp_path, tiny_st_model):
    """mteb's main score (cosine Spearman; sentence-transformers embeds) on LocalSTS, and our STS evaluator
    (our Flax encoder) on the same pairs: one number. A rerun recomputes instead of reading mteb's file."""
    from trainer.evaluators.sts import StsEvaluator
    from trainer.model.encode import load_tokenizer
    from trainer.model.hf_loading import load_pretrained

    pre = load_pretrained(tiny_st_model)
    ours = StsEvaluator(
        pre.model, load_tokenizer(pre.source_dir), _write_sts(tmp_path / "local-sts.csv"), max_seq_length=32
    ).run(pre.params["params"])["eval/sts_spearman"]

    results = str(tmp_path / "mteb")
    run = run_tasks([LocalSTS()], tiny_st_model, results, step=3)
    assert run.failures == {}
    theirs = run.metrics["mteb/LocalSTS/test/main_score"]
    print(f"LocalSTS cosine Spearman: mteb {theirs!r}, our evaluator {ours!r}")
    assert theirs == pytest.approx(ours, abs=1e-6)
    assert run.metrics == {"mteb/LocalSTS/test/main_score": theirs, "mteb/LocalSTS/test/cosine_spearman": theirs}
    assert run.summary() == f"MTEB: LocalSTS/test {theirs:.4f} (mteb's results: {results})"

    # mteb's file for this model and step, made stale: the rerun's figure is computed again.
    path = os.path.join(results, "results", "local__model", "step-3", "LocalSTS.json")
    with open(path) as f:
        stale = json.load(f)
    for split in stale["scores"].values():
        for scores in split:
            scores.update(main_score=0.5, cosine_spearman=0.5)
    with open(path, "w") as f:
        json.dump(stale, f)
    assert run_tasks([LocalSTS()], tiny_st_model, results, step=3).metrics == run.metrics


def test_a_failing_task_is_reported_and_the_others_still_run(tmp_path, tiny_st_model):
    run = run_tasks([LocalSTS(), FailingSTS()], tiny_st_model, str(tmp_path / "mteb"), step=1)
    assert list(run.metrics) == ["mteb/LocalSTS/test/main_score", "mteb/LocalSTS/test/cosine_spearman"]
    assert run.failures == {"FailingSTS": "ConnectionError: no network here"}
    assert run.summary().startswith("MTEB: LocalSTS/test ") and "; failed: FailingSTS (" in run.summary()


class FailingSTS(LocalSTS):
    """LocalSTS whose data cannot be had, as a hub data set that is not cached, offline."""

    metadata = LocalSTS.metadata.model_copy(update={"name": "FailingSTS"})

    def load_data(self, num_proc=None, **kwargs) -> None:
        raise ConnectionError("no network here")


@pytest.mark.slow  # 90 s on the 2-core machine, most of it start-up and compiling the train step
def test_training_runs_the_tasks_on_its_export(tmp_path, prompted_data_dir, tiny_bert_dir):
    """train_main.py with --mteb_tasks: LocalSTS's score in metrics.jsonl at the last step, on an export
    whose config_sentence_transformers.json has prompts; STSBenchmark, whose data is not cached (an empty
    Hugging Face cache, offline), fails: named in the log, exit status 4, the export written."""
    workdir = tmp_path / "run"
    env = dict(
        os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", JAX_PLATFORMS="cpu"
    )
    cmd = [
        sys.executable,
        os.path.join(REPO, "train_main.py"),
        f"--data_dir={prompted_data_dir}",
        f"--workdir={workdir}",
        "--config=demo",
        f"--model={tiny_bert_dir}",
        "--from_scratch=true",
        "--batch_size=8",
        "--train_steps=2",
        "--warmup_steps=1",
        "--log_every=1",
        "--eval_every=0",
        "--max_seq_length=32",
        "--bucket_lengths=16,32",
        "--pack_row_steps=1",
        "--preflight=false",
        "--ir_eval=",
        "--no_progress",
        f"--mteb_tasks={LOCAL_STS},STSBenchmark",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 4, proc.stderr[-3000:]
    from trainer.train.metrics_writer import read_metrics

    logged = [r for r in read_metrics(str(workdir)) if "mteb/LocalSTS/test/main_score" in r]
    assert len(logged) == 1 and logged[0]["step"] == 2
    assert -1 <= logged[0]["mteb/LocalSTS/test/main_score"] <= 1
    assert not any(k.startswith("mteb/STSBenchmark") for r in read_metrics(str(workdir)) for k in r)
    assert "MTEB task STSBenchmark failed: ConnectionError: Couldn't reach 'mteb/stsbenchmark-sts'" in proc.stderr
    assert "MTEB: LocalSTS/test " in proc.stderr and "; failed: STSBenchmark" in proc.stderr
    assert "but MTEB task(s) STSBenchmark failed (above); rerun the same command" in proc.stderr
    with open(workdir / "export" / "config_sentence_transformers.json") as f:
        assert json.load(f)["prompts"]["query"] == "query: "
    assert os.path.isfile(workdir / "mteb" / "results" / "local__export" / "step-2" / "LocalSTS.json")


def test_an_unknown_task_stops_train_main_before_it_starts(tmp_path, capsys):
    import train_main

    assert (
        train_main.main([f"--data_dir={tmp_path}", f"--workdir={tmp_path / 'run'}", "--mteb_tasks=STSBenchmarc"]) == 2
    )
    err = capsys.readouterr().err
    assert (
        err.startswith("train_main.py: error: --mteb_tasks: 'STSBenchmarc' is not an MTEB task")
        and err.count("\n") == 1
    )
    assert not (tmp_path / "run").exists()
