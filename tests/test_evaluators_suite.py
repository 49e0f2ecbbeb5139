"""trainer/evaluators/suite.py: the registry, the suite built from --evaluators, the checks before the
run, the model card's path fields, and an evaluator added from this file alone (docs/extending.md)."""

import jax
import numpy as np
import pytest

from pipeline.manifest import load_manifest
from pipeline.user_errors import UserError
from tests._tiny import tiny_model
from tests.test_length_profiles import write_manifest
from trainer.config import TrainConfig
from trainer.evaluators import suite


class ParamStats:
    """A toy evaluator: the parameters' count and root mean square, and how many Matryoshka sizes the
    suite asked it to report."""

    def __init__(self, cfg, setup):
        self.sizes = len(setup.dims)

    def run(self, params):
        leaves = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(params)]
        count = sum(x.size for x in leaves)
        return {
            "eval/toy/params": float(count),
            "eval/toy/rms": float(np.sqrt(sum((x**2).sum() for x in leaves) / count)),
            "eval/toy/sizes": float(self.sizes),
        }


def _check_toy(cfg, inputs):
    if inputs.manifest.max_seq_length < cfg.max_seq_length:
        raise UserError(
            f"--evaluators=toy: the data is cut at {inputs.manifest.max_seq_length} tokens, "
            f"--max_seq_length asks for {cfg.max_seq_length}"
        )


@pytest.fixture
def toy(monkeypatch):
    """The toy evaluator registered (for this test only), naming `model` as one of its path fields."""
    monkeypatch.setitem(
        suite.EVALUATORS, "toy", suite.EvaluatorSpec("toy", ParamStats, _check_toy, path_fields=("model",))
    )


def test_an_evaluator_registered_from_outside_runs_in_the_suite(toy, tmp_path):
    model, params = tiny_model()
    manifest = load_manifest(write_manifest(tmp_path, 64))
    cfg = TrainConfig(evaluators=("toy",), matryoshka_dims=(16, 8, 4))
    built = suite.EvaluationSuite(cfg, model, None, manifest)
    assert [type(e) for e in built.evaluators] == [ParamStats] and not built.evaluates_export
    got = built.run(params)
    leaves = jax.tree_util.tree_leaves(params)
    count = sum(np.size(x) for x in leaves)
    assert got["eval/toy/params"] == count > 1000
    assert got["eval/toy/rms"] == pytest.approx(np.sqrt(sum(float(np.sum(np.square(x))) for x in leaves) / count))
    assert got["eval/toy/sizes"] == 2  # 8 and 4: the sizes below the full 16
    # Not named in --evaluators: not built. STS without --sts_dev and IR without --ir_eval: nothing to run.
    assert suite.EvaluationSuite(cfg.replace(evaluators=("sts", "ir")), model, None, manifest).evaluators == []


def test_the_checks_before_the_run(toy, tmp_path):
    write_manifest(tmp_path, 64)
    suite.check_inputs(TrainConfig(evaluators=("toy",), max_seq_length=64), str(tmp_path))
    with pytest.raises(
        UserError, match="^--evaluators=toy: the data is cut at 64 tokens, --max_seq_length asks for 128$"
    ):
        suite.check_inputs(TrainConfig(evaluators=("retrieval", "toy")), str(tmp_path))
    with pytest.raises(
        UserError,
        match=r"^--evaluators: unknown evaluator\(s\) 'nope'; registered: retrieval, "
        r"sts, ir, mteb, toy$",
    ):
        suite.check_inputs(TrainConfig(evaluators=("retrieval", "nope")), str(tmp_path))
    # The built-in ones: a BEIR directory without corpus.jsonl; a prompt name the manifest's table lacks.
    with pytest.raises(UserError, match=f"^--ir_eval={tmp_path}: no corpus.jsonl there"):
        suite.check_inputs(TrainConfig(ir_eval=(str(tmp_path),)), str(tmp_path))
    with pytest.raises(UserError, match="^--sts_prompt_name=query: the manifest .* has no prompt 'query'"):
        suite.check_inputs(TrainConfig(sts_prompt_name="query"), str(tmp_path))
    # Nothing named that needs the manifest: it is not read (train_main.py reads it last).
    assert "manifest" not in suite.check_inputs(TrainConfig(), str(tmp_path / "missing")).__dict__


def test_the_model_card_leaves_out_the_evaluators_path_fields(toy, tmp_path):
    from trainer.train.train_loop import model_card

    manifest = load_manifest(write_manifest(tmp_path, 64))
    cfg = TrainConfig(sts_dev="/data/sts-dev.csv", ir_eval=("/data/scifact",), export_dir="/out")
    training = model_card(cfg, manifest, 5, {}, {})["training"]
    assert {"sts_dev", "ir_eval", "export_dir", "model"}.isdisjoint(training)  # model: the toy's path field
    assert training["evaluators"] == ("retrieval", "sts", "ir", "mteb") and training["loss"] == "contrastive"
