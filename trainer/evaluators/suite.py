"""The evaluations a training run does: one registry entry per evaluator, the suite built from the
config's list (`--evaluators`), run on parameters and on the export.

An evaluator is an `EvaluatorSpec` in `EVALUATORS` (docs/extending.md, "A new evaluator"):

- `name`: its entry in `--evaluators`;
- `check(cfg, inputs)`: what it needs checked before the run starts (train_main.py: files it is given,
  names it must find; a UserError naming the flag), `inputs.manifest` loaded on first use;
- `build(cfg, setup)`: the evaluator for this run (it reads its data here), or None when the run does
  not configure it (STS without --sts_dev);
- `path_fields`: the TrainConfig fields that name its files, which the model card leaves out.

What `build` returns has `run(params) -> dict[str, float]` (metric name -> value, on the parameters;
the suite merges them) and, if it evaluates the exported model instead, `run_on_export(export_dir,
step) -> dict[str, float]` and `failures() -> list[str]` (what failed there, for the exit status).
Retrieval runs on every corpus with a validation split; STS when `sts_dev` is set; BEIR-format
retrieval on each of `ir_eval`'s directories; MTEB tasks on the export when `mteb_tasks` names some.
`evaluation_table` is what the log shows of the results; metrics.jsonl keeps them all.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable, Mapping, Protocol

from pipeline.manifest import Manifest, load_manifest
from pipeline.user_errors import UserError
from trainer.config import TrainConfig
from trainer.evaluators import mteb_tasks
from trainer.evaluators.ir import IrEvaluator
from trainer.evaluators.sts import StsEvaluator, training_sts_prompt
from trainer.prompts import training_ir_prompts
from trainer.train.matryoshka import eval_dims


class Evaluator(Protocol):
    def run(self, params: Any) -> dict[str, float]: ...


@dataclasses.dataclass
class RunInputs:
    """What `check` may look at: the data directory's manifest, read when first asked for."""

    data_dir: str

    @functools.cached_property
    def manifest(self) -> Manifest:
        return load_manifest(self.data_dir)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What `build` gets: the run's model and tokenizer, its manifest, the Matryoshka sizes every
    evaluator reports besides the full one, and the workdir (files of its own go under it)."""

    model: Any
    tokenizer: Any
    manifest: Manifest
    dims: tuple[int, ...]
    workdir: str
    progress: bool = False


@dataclasses.dataclass(frozen=True)
class EvaluatorSpec:
    name: str
    build: Callable[[TrainConfig, Setup], Any]
    check: Callable[[TrainConfig, RunInputs], None] = lambda cfg, inputs: None
    path_fields: tuple[str, ...] = ()


EVALUATORS: dict[str, EvaluatorSpec] = {}


def register(spec: EvaluatorSpec) -> EvaluatorSpec:
    """Add an evaluator to the registry (a name already there is a ValueError: each names its metrics)."""
    if spec.name in EVALUATORS:
        raise ValueError(f"an evaluator named {spec.name!r} is registered already")
    EVALUATORS[spec.name] = spec
    return spec


def chosen(cfg: TrainConfig) -> list[EvaluatorSpec]:
    """The entries of cfg.evaluators, in its order; a name not registered is a UserError."""
    unknown = [n for n in cfg.evaluators if n not in EVALUATORS]
    if unknown:
        raise UserError(
            f"--evaluators: unknown evaluator(s) {', '.join(map(repr, unknown))}; registered: {', '.join(EVALUATORS)}"
        )
    return [EVALUATORS[n] for n in cfg.evaluators]


def check_inputs(cfg: TrainConfig, data_dir: str) -> RunInputs:
    """Each chosen evaluator's `check`, in order (train_main.py, before the run starts)."""
    inputs = RunInputs(data_dir)
    for spec in chosen(cfg):
        spec.check(cfg, inputs)
    return inputs


def path_fields() -> set[str]:
    """The TrainConfig fields that name evaluators' files (all registered ones': a model card names none)."""
    return {f for spec in EVALUATORS.values() for f in spec.path_fields}


# ------------------------------------------------------------------------------------- the built-in ones


def _check_sts(cfg: TrainConfig, inputs: RunInputs) -> None:
    if cfg.sts_prompt_name:
        training_sts_prompt(cfg, inputs.manifest)  # the prompt name in the manifest's table


def _check_ir(cfg: TrainConfig, inputs: RunInputs) -> None:
    from pipeline import storage

    for d in cfg.ir_eval:
        if not storage.exists(storage.join(d, "corpus.jsonl")):
            raise UserError(
                f"--ir_eval={d}: no corpus.jsonl there (a BEIR-format directory: corpus.jsonl, "
                "queries.jsonl, qrels/test.tsv)"
            )
    if cfg.ir_query_prompt_name or cfg.ir_corpus_prompt_name:
        training_ir_prompts(cfg, inputs.manifest)


class MtebOnExport:
    """--mteb_tasks on the export (trainer/evaluators/mteb_tasks.py): nothing on parameters; the tasks,
    looked up when built (nothing downloaded), run on the written export; a task that fails is logged
    and named by `failures`, the others still run."""

    def __init__(self, tasks: list, workdir: str, progress: bool):
        self.tasks, self.workdir, self.progress = tasks, workdir, progress
        self.last: mteb_tasks.MtebRun | None = None

    def run(self, params: Any) -> dict[str, float]:
        return {}

    def run_on_export(self, export_dir: str, step: int) -> dict[str, float]:
        from pipeline import storage

        self.last = mteb_tasks.run_tasks(
            self.tasks, export_dir, storage.join(self.workdir, "mteb"), step, progress=self.progress
        )
        mteb_tasks.log.info("%s", self.last.summary())
        return self.last.metrics

    def failures(self) -> list[str]:
        return [f"MTEB task(s) {', '.join(self.last.failures)}"] if self.last and self.last.failures else []


def _build_mteb(cfg: TrainConfig, setup: Setup) -> MtebOnExport | None:
    tasks = mteb_tasks.resolve_tasks(cfg.mteb_tasks)
    return MtebOnExport(tasks, setup.workdir, setup.progress) if tasks else None


def _build_retrieval(cfg: TrainConfig, setup: Setup) -> Any:
    # Imported here: it reads TFRecords (TensorFlow), which the checks before the run must not start.
    from trainer.evaluators.retrieval import RetrievalEvaluator

    return RetrievalEvaluator(setup.model, setup.manifest, cfg.eval_max_examples, cfg.max_seq_length, dims=setup.dims)


register(EvaluatorSpec("retrieval", _build_retrieval))
register(
    EvaluatorSpec(
        "sts",
        lambda cfg, s: (
            StsEvaluator(
                s.model,
                s.tokenizer,
                cfg.sts_dev,
                cfg.max_seq_length,
                dims=s.dims,
                prompt=training_sts_prompt(cfg, s.manifest),
            )
            if cfg.sts_dev
            else None
        ),
        _check_sts,
        path_fields=("sts_dev",),
    )
)
register(
    EvaluatorSpec(
        "ir",
        lambda cfg, s: (
            IrEvaluator(
                s.model,
                s.tokenizer,
                cfg.ir_eval,
                cfg.max_seq_length,
                dims=s.dims,
                **training_ir_prompts(cfg, s.manifest),
            )
            if cfg.ir_eval
            else None
        ),
        _check_ir,
        path_fields=("ir_eval",),
    )
)
register(EvaluatorSpec("mteb", _build_mteb, lambda cfg, inputs: mteb_tasks.resolve_tasks(cfg.mteb_tasks)))


# ------------------------------------------------------------------------------------- the suite


class EvaluationSuite:
    """The chosen evaluators of a run, built once (each reads its data) and run on parameters and on
    the export."""

    def __init__(
        self, cfg: TrainConfig, model, tokenizer, manifest: Manifest, workdir: str = "", progress: bool = False
    ):
        # Each evaluator reports the Matryoshka sizes too.
        setup = Setup(
            model, tokenizer, manifest, eval_dims(cfg.matryoshka_dims, model.config.hidden_size), workdir, progress
        )
        built = [(spec.name, spec.build(cfg, setup)) for spec in chosen(cfg)]
        self.evaluators: list[Any] = [e for _, e in built if e is not None]

    def run(self, params: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        for evaluator in self.evaluators:
            out.update(evaluator.run(params))
        return out

    def run_on_export(self, export_dir: str, step: int) -> dict[str, float]:
        """The evaluations of the exported model (after the export is written; main process)."""
        out: dict[str, float] = {}
        for evaluator in self.evaluators:
            if hasattr(evaluator, "run_on_export"):
                out.update(evaluator.run_on_export(export_dir, step))
        return out

    def failures(self) -> list[str]:
        """What failed in `run_on_export` (each a phrase naming it), for the exit status."""
        return [f for e in self.evaluators if hasattr(e, "failures") for f in e.failures()]

    @property
    def evaluates_export(self) -> bool:
        return any(hasattr(e, "run_on_export") for e in self.evaluators)


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
