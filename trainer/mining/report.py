"""`OUT.report.json`: what a mining run read, searched, removed and wrote, and with which model.

Scores are summarised exactly (count, mean, std, min, max) and as a histogram of 40 bins of 0.05
over [-1, 1] (cosine similarities), accumulated shard by shard so memory stays bounded.
"""

from __future__ import annotations

import datetime
import re

import numpy as np

from pipeline import storage

REPORT_VERSION = 1
EDGES = np.linspace(-1.0, 1.0, 41)


class ScoreStats:
    """Running summary of a stream of scores."""

    def __init__(self):
        self.counts = np.zeros(len(EDGES) - 1, np.int64)
        self.n, self.total, self.squares = 0, 0.0, 0.0
        self.low, self.high = np.inf, -np.inf

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, np.float64).ravel()
        if not v.size:
            return
        # Rounding can put a cosine a hair outside [-1, 1]: it belongs to the end bins.
        self.counts += np.histogram(np.clip(v, EDGES[0], EDGES[-1]), EDGES)[0]
        self.n += v.size
        self.total += float(v.sum())
        self.squares += float((v * v).sum())
        self.low, self.high = min(self.low, float(v.min())), max(self.high, float(v.max()))

    def to_json(self) -> dict:
        if not self.n:
            return {"count": 0}
        mean = self.total / self.n
        return {
            "count": self.n,
            "mean": round(mean, 6),
            "std": round(float(np.sqrt(max(self.squares / self.n - mean * mean, 0.0))), 6),
            "min": round(self.low, 6),
            "max": round(self.high, 6),
            "histogram": {"edges": [round(float(e), 2) for e in EDGES], "counts": self.counts.tolist()},
        }


def corpus_name(output: str) -> str:
    """A data-config corpus name from the output's file name (letters, digits, '-', '_', '.')."""
    base = output.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".jsonl.gz", ".jsonl"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", base) or "mined"


def data_config_entry(
    output: str, report_path: str, model: str, model_fp: str, output_sha: str, prompts: dict[str, str] | None = None
) -> dict:
    """The data-config corpus entry for the mined file. Its description names the mining run (and the
    prompts its embeddings used, {"query": ..., "corpus": ...}); the Beam job's manifest and the trained
    model's card carry it, so a model trained on the file names it."""
    used = "".join(f", {role} prompt {text!r}" for role, text in (prompts or {}).items() if text)
    return {
        "name": corpus_name(output),
        "files": [storage.abspath(output)],
        "record_format": "query_with_negatives",
        "weight": 1,
        "description": (
            f"Hard negatives mined by mine_main.py with {model} (model fingerprint {model_fp}{used}); "
            f"output sha256 {output_sha[:16]}; report {storage.abspath(report_path)}."
        ),
    }


def build_report(
    *,
    settings: dict,
    model: dict,
    read: dict,
    counts: dict,
    removed: dict,
    candidates: int,
    positive: ScoreStats,
    negative: ScoreStats,
    search: dict,
    timing: dict,
    output: dict,
    entry: dict,
) -> dict:
    return {
        "report_version": REPORT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "model": model,
        "read": read,
        "counts": counts,
        "filters": {"candidates": candidates, "removed": removed},
        "scores": {"positive": positive.to_json(), "negative": negative.to_json()},
        "search": search,
        "timing": timing,
        "output": output,
        "data_config_entry": entry,
    }
