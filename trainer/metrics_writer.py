"""Training metrics: one JSON object per logged step in <workdir>/metrics.jsonl, and TensorBoard.

Only the main process writes. TensorBoard goes through tf.summary when TensorFlow is importable
(the trainer's input pipeline needs it anyway); metrics.jsonl is always written.
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Any


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
        self._path = workdir.rstrip("/") + "/metrics.jsonl"
        self._remote_lines: list[str] | None = None
        if not enabled:
            return
        if not workdir.startswith("gs://"):
            os.makedirs(workdir, exist_ok=True)
        try:
            import tensorflow as tf
        except ImportError:  # GPU images without TensorFlow still get metrics.jsonl
            return
        try:
            self._tb = tf.summary.create_file_writer(workdir.rstrip("/") + "/tensorboard")
        except tf.errors.UnimplementedError as e:  # a file system TensorFlow cannot write
            logging.getLogger(__name__).warning("no TensorBoard summaries: %s", e.message)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _clean(v) for k, v in metrics.items()}}
        line = json.dumps(record, sort_keys=False) + "\n"
        if "://" in self._path:
            # Object stores (gs://) cannot append: keep the file's lines and rewrite it whole.
            import fsspec

            if self._remote_lines is None:
                fs, path = fsspec.core.url_to_fs(self._path)
                self._remote_lines = fs.cat_file(path).decode().splitlines(True) if fs.exists(path) else []
            self._remote_lines.append(line)
            with fsspec.open(self._path, "w") as f:
                f.writelines(self._remote_lines)
        else:
            with open(self._path, "a", encoding="utf-8") as f:
                f.write(line)
        if self._tb is not None:
            import tensorflow as tf

            with self._tb.as_default(step=int(step)):
                for k, v in record.items():
                    if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                        tf.summary.scalar(k, v)
            self._tb.flush()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    path = workdir.rstrip("/") + "/metrics.jsonl"
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
