"""Training metrics: one JSON object per logged step in <workdir>/metrics.jsonl, and TensorBoard.

Only the main process writes. TensorBoard goes through tf.summary when TensorFlow is importable
(the trainer's input pipeline needs it anyway); metrics.jsonl is always written.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from pipeline import storage
from pipeline.tensorflow_import import import_tensorflow


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsWriter:
    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self._tb = None
        self.path = _metrics_path(workdir)
        self._remote_lines: list[str] | None = None
        if not enabled:
            return
        storage.makedirs(workdir)
        try:
            tf = import_tensorflow()
        except ImportError:  # GPU images without TensorFlow still get metrics.jsonl
            return
        try:
            self._tb = tf.summary.create_file_writer(storage.join(workdir, "tensorboard"))
        except tf.errors.UnimplementedError as e:  # a file system TensorFlow cannot write
            logging.getLogger(__name__).warning("no TensorBoard summaries: %s", e.message)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _clean(v) for k, v in metrics.items()}}
        line = json.dumps(record, sort_keys=False) + "\n"
        if storage.is_remote(self.path):
            # Object stores (gs://) cannot append: keep the file's lines and rewrite it whole.
            if self._remote_lines is None:
                self._remote_lines = _read_lines(self.path) if storage.exists(self.path) else []
            self._remote_lines.append(line)
            with storage.open_file(self.path, "w", encoding="utf-8") as f:
                f.writelines(self._remote_lines)
        else:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
        if self._tb is not None:
            tf = import_tensorflow()

            with self._tb.as_default(step=int(step)):
                for k, v in record.items():
                    if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                        tf.summary.scalar(k, v)
            self._tb.flush()


def _metrics_path(workdir: str) -> str:
    return storage.join(workdir, "metrics.jsonl")


def _read_lines(path: str) -> list[str]:
    with storage.open_file(path, "r", encoding="utf-8") as f:
        return f.readlines()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _read_lines(_metrics_path(workdir)) if line.strip()]


def truncate_metrics(workdir: str, last_step: int) -> None:
    """On resume, drops metrics logged after the restored checkpoint: they are recomputed exactly."""
    path = _metrics_path(workdir)
    if not storage.exists(path):
        return
    keep = [line for line in _read_lines(path) if line.strip() and json.loads(line)["step"] <= last_step]
    with storage.open_file(path, "w", encoding="utf-8") as f:
        f.writelines(keep)
