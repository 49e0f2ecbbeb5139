"""The evaluations a training run does, built once from its config and run on parameters.

Each evaluator reads its data when built and maps parameters to named metrics (`run(params)`); the
suite merges them. Retrieval runs on every corpus with a validation split; STS when `sts_dev` is set;
BEIR-format retrieval on each of `ir_eval`'s directories.
"""
from __future__ import annotations

from typing import Any

from pipeline.manifest import Manifest
from trainer.config import TrainConfig
from trainer.evaluators.ir import IrEvaluator, training_ir_prompts
from trainer.evaluators.retrieval import RetrievalEvaluator
from trainer.evaluators.sts import StsEvaluator, training_sts_prompt
from trainer.matryoshka import eval_dims


class EvaluationSuite:
    def __init__(self, cfg: TrainConfig, model, tokenizer, manifest: Manifest):
        dims = eval_dims(cfg.matryoshka_dims, model.config.hidden_size)  # each evaluator reports these sizes too
        self.evaluators: list[Any] = [RetrievalEvaluator(model, manifest, cfg.eval_max_examples, cfg.max_seq_length,
                                                         dims=dims)]
        if cfg.sts_dev:
            self.evaluators.append(StsEvaluator(model, tokenizer, cfg.sts_dev, cfg.max_seq_length, dims=dims,
                                                prompt=training_sts_prompt(cfg, manifest)))
        if cfg.ir_eval:
            self.evaluators.append(IrEvaluator(model, tokenizer, cfg.ir_eval, cfg.max_seq_length,
                                               dims=dims, **training_ir_prompts(cfg, manifest)))

    def run(self, params: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        for evaluator in self.evaluators:
            out.update(evaluator.run(params))
        return out
