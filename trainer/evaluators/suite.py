"""The evaluations a training run does, built once from its config and run on parameters.

Each evaluator reads its data when built and maps parameters to named metrics (`run(params)`); the
suite merges them. Retrieval runs on every corpus with a validation split; STS when `sts_dev` is set;
BEIR-format retrieval on each of `ir_eval`'s directories. `evaluation_table` is what the log shows
of the results; metrics.jsonl keeps them all.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from pipeline.manifest import Manifest
from trainer.config import TrainConfig
from trainer.evaluators.ir import IrEvaluator
from trainer.prompts import training_ir_prompts
from trainer.evaluators.retrieval import RetrievalEvaluator
from trainer.evaluators.sts import StsEvaluator, training_sts_prompt
from trainer.train.matryoshka import eval_dims


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


def is_headline(metric: str) -> bool:
    """A row of the printed table: the means over corpora, STS and each BEIR set's figures; not the
    per-corpus rows (eval/<corpus>/x) nor the Matryoshka sizes (eval/dim<d>/x)."""
    parts = metric.split("/")
    return not re.fullmatch(r"dim\d+", parts[1]) and (len(parts) == 2 or parts[1] == "ir")


def evaluation_table(before: Mapping[str, float], after: Mapping[str, float], full_record: str) -> str:
    """The headline metrics as aligned columns (metric, before, after: a column per non-empty
    evaluation), then how many more rows `full_record` holds. A long dict of every metric in the log
    was unreadable."""
    columns = [(title, ev) for title, ev in (("before", before), ("after", after)) if ev]
    names = list(dict.fromkeys(k for _, ev in columns for k in ev))
    rows = [n for n in names if is_headline(n)]
    width = max(map(len, ["metric", *rows]))
    lines = ["  ".join(["metric".ljust(width), *(f"{t:>8}" for t, _ in columns)])]
    for n in rows:
        lines.append("  ".join([n.ljust(width), *(f"{ev[n]:8.4f}" if n in ev else f"{'-':>8}" for _, ev in columns)]))
    if len(names) > len(rows):
        lines.append(f"(+{len(names) - len(rows)} more, per corpus and per Matryoshka size: {full_record})")
    return "\n".join(lines)
