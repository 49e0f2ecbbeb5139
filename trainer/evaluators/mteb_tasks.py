"""MTEB tasks on an exported model: training's `--mteb_tasks` (docs/evaluation.md, "MTEB at the end of
training").

The spec is comma-separated: MTEB task names (`STSBenchmark,SciFact`, looked up in mteb's registry)
and/or `package.module:ClassName`, a user's own `mteb` task class (an `AbsTask` subclass, e.g. over
private data), imported and instantiated. `resolve_tasks` turns the spec into task objects at start-up
(nothing is downloaded: task objects load their data when run); `run_tasks` runs them with mteb 2.x's
`mteb.evaluate` on a SentenceTransformers directory (our export) and returns flat metrics,
`mteb/<task>/<split>/main_score` and `mteb/<task>/<split>/<the task's main metric>`, each the mean
over the task's subsets (languages), as MTEB reports a task. A task that fails (its data not cached
and no network, say) does not stop the others; its cause is returned and logged.

`mteb` is not a dependency of this project (`pip install mteb`, or the `.[mteb]` extra); this module
imports it only when a spec names tasks.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from typing import Sequence

from pipeline import storage
from pipeline.user_errors import UserError
from trainer.config import mteb_task_entries

log = logging.getLogger("trainer")


class MtebTaskError(UserError):
    """--mteb_tasks names something that cannot run: mteb missing, an unknown task, a bad class."""


INSTALL_HINT = "pip install mteb, or pip install -e '.[mteb]' in a checkout"


def _import_mteb():
    try:
        import mteb
    except ImportError as e:
        raise MtebTaskError(
            f"--mteb_tasks needs the mteb package, which is not importable ({e}): {INSTALL_HINT}"
        ) from None
    return mteb


def _task_class(mteb, entry: str):
    module_name, class_name = entry.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise MtebTaskError(f"--mteb_tasks: cannot import {module_name!r} for {entry} ({e})") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise MtebTaskError(f"--mteb_tasks: module {module_name!r} has no {class_name!r} ({entry})")
    if not (isinstance(cls, type) and issubclass(cls, mteb.AbsTask)):
        raise MtebTaskError(f"--mteb_tasks: {entry} is not an mteb task class (a subclass of mteb.AbsTask)")
    return cls


def resolve_tasks(spec: str) -> list:
    """The spec's task objects, in its order ([] for an empty spec, without importing mteb). A
    MtebTaskError when mteb is missing, a name is not an MTEB task (with mteb's closest match), a
    module:Class does not import or is not a task class, or two entries are the same task."""
    entries = mteb_task_entries(spec)
    if not entries:
        return []
    mteb = _import_mteb()
    tasks = []
    for entry in entries:
        if ":" in entry:
            tasks.append(_task_class(mteb, entry)())
            continue
        try:
            tasks.extend(mteb.get_tasks(tasks=[entry]))
        except KeyError as e:  # mteb's message: "KeyError: 'X' not found. Did you mean: 'Y'?"
            raise MtebTaskError(
                f"--mteb_tasks: {entry!r} is not an MTEB task of mteb {mteb.__version__} "
                f"({str(e.args[0]).removeprefix('KeyError: ')})"
            ) from None
    names = [t.metadata.name for t in tasks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise MtebTaskError(f"--mteb_tasks names the task {', '.join(repeated)} twice (each task names its metrics)")
    return tasks


@dataclasses.dataclass
class MtebRun:
    """What `run_tasks` did: metrics of the tasks that ran, the cause of each that failed."""

    metrics: dict[str, float]
    failures: dict[str, str]  # task name -> "ExceptionType: message"
    results_dir: str

    def summary(self) -> str:
        """One line: each task's main score per split, the failed tasks, where mteb's files are."""
        scores = [
            f"{k.removeprefix('mteb/').removesuffix('/main_score')} {v:.4f}"
            for k, v in self.metrics.items()
            if k.endswith("/main_score")
        ]
        failed = f"; failed: {', '.join(self.failures)}" if self.failures else ""
        return f"MTEB: {', '.join(scores) or 'no task ran'}{failed} (mteb's results: {self.results_dir})"


def task_metrics(task_result, main_metric: str) -> dict[str, float]:
    """mteb/<task>/<split>/main_score (and .../<main_metric>): means over the split's subsets."""
    out: dict[str, float] = {}
    for split, per_subset in task_result.scores.items():
        for key in ("main_score", main_metric):
            values = [float(s[key]) for s in per_subset if key in s]
            if values:
                out[f"mteb/{task_result.task_name}/{split}/{key}"] = sum(values) / len(values)
    return out


def _model(mteb, model_dir: str, step: int):
    """The SentenceTransformers directory wrapped for mteb, named local/<dir name> at revision step-<step>:
    mteb files results under a model's name and revision, and a local directory has neither."""
    from sentence_transformers import SentenceTransformer

    model = mteb.SentenceTransformerEncoderWrapper(SentenceTransformer(storage.local_dir(model_dir)))
    name = os.path.basename(model_dir.rstrip("/")) or "model"
    model.mteb_model_meta = model.mteb_model_meta.model_copy(
        update={"name": f"local/{name}", "revision": f"step-{step}"}
    )
    return model


def run_tasks(
    tasks: Sequence, model_dir: str, results_dir: str, step: int, batch_size: int = 32, progress: bool = False
) -> MtebRun:
    """Runs each task on the SentenceTransformers directory `model_dir` (local or gs://); mteb writes
    its result files under `results_dir` (local or gs://): results/local__<model dir name>/step-<step>/.
    The model's prompts (config_sentence_transformers.json) are used as mteb uses a model's prompts."""
    mteb = _import_mteb()
    failures: dict[str, str] = {}
    metrics: dict[str, float] = {}
    with storage.staged_dir(results_dir) as local_results:  # a gs:// results_dir is uploaded at the end
        try:
            model = _model(mteb, model_dir, step)
        except Exception as e:  # noqa: BLE001 - every task fails for the same cause; the run stays
            failures = {t.metadata.name: f"loading {model_dir}: {type(e).__name__}: {e}" for t in tasks}
            tasks = ()
        # overwrite_strategy="always": mteb's default ("only-missing") returns results it finds in the
        # cache folder for the same model name and revision without running anything, and a rerun of
        # a run (or a new run in the same workdir) has the same name and step: its figures would be
        # the old model's. Our figures must be this model's, so every task runs every time.
        cache = mteb.ResultCache(cache_path=local_results)
        for task in tasks:
            try:
                result = mteb.evaluate(
                    model,
                    task,
                    cache=cache,
                    overwrite_strategy="always",
                    encode_kwargs={"batch_size": batch_size, "show_progress_bar": progress},
                    show_progress_bar=progress,
                )
                if result.exceptions:  # with raise_error=True mteb raises; this is belt and braces
                    raise RuntimeError("; ".join(e.exception for e in result.exceptions))
                for task_result in result.task_results:
                    metrics.update(task_metrics(task_result, task.metadata.main_score))
            except Exception as e:  # noqa: BLE001 - one task's failure (data not cached, no network) leaves the others
                failures[task.metadata.name] = f"{type(e).__name__}: {e}"
    for name, cause in failures.items():
        log.error("MTEB task %s failed: %s", name, cause)
    return MtebRun(metrics, failures, results_dir)
