"""Per-corpus counters and token-length statistics (combined across workers by pipeline/job.py's
`CombineStats`). No Beam here: the trainer reads manifests through this module.

Token lengths are bounded by max_seq_length, so a histogram (one counter per length) is small and
gives exact percentiles after combining, with no sampling.
"""

from __future__ import annotations

import math

# The accumulator is a plain dict (cheap to pickle between stages):
#   lines_read, train, validation, texts, truncated: int; rejected: {reason: int};
#   dropped: {reason: int} (texts dropped from lines that stay: pipeline/parsing.py DROPPED);
#   hist: list[int] of max_seq_length + 1 counters (hist[n] = texts of n tokens);
#   duplicates, decontaminated: int; decontaminated_by_set: {set: int}; overlap: {other corpus: int}
#   (the cleaning stages, pipeline/dedup.py).


def new_stats(max_seq_length: int) -> dict:
    return {
        "lines_read": 0,
        "train": 0,
        "validation": 0,
        "texts": 0,
        "truncated": 0,
        "rejected": {},
        "dropped": {},
        "hist": [0] * (max_seq_length + 1),
        "duplicates": 0,
        "decontaminated": 0,
        "decontaminated_by_set": {},
        "overlap": {},
    }


def merge_into(acc: dict, other: dict) -> dict:
    for k in ("lines_read", "train", "validation", "texts", "truncated", "duplicates", "decontaminated"):
        acc[k] += other[k]
    for key in ("rejected", "dropped", "decontaminated_by_set", "overlap"):
        for name, n in other.get(key, {}).items():
            acc[key][name] = acc[key].get(name, 0) + n
    hist = acc["hist"]
    for i, n in enumerate(other["hist"]):
        if n:
            hist[i] += n
    return acc


def _percentile(hist: list[int], total: int, q: float) -> int:
    """Smallest length L with at least q of the texts no longer than L (nearest-rank)."""
    need = max(1, math.ceil(q * total - 1e-9))
    seen = 0
    for length, n in enumerate(hist):
        seen += n
        if seen >= need:
            return length
    return len(hist) - 1


def token_length_summary(acc: dict) -> dict:
    n = acc["texts"]
    hist = acc["hist"]
    if n == 0:
        return {"texts": 0, "mean": 0.0, "p50": 0, "p95": 0, "max": 0, "truncated_share": 0.0}
    return {
        "texts": n,
        "mean": round(sum(length * c for length, c in enumerate(hist)) / n, 3),
        "p50": _percentile(hist, n, 0.50),
        "p95": _percentile(hist, n, 0.95),
        "max": max(length for length, c in enumerate(hist) if c),
        "truncated_share": round(acc["truncated"] / n, 6),
    }
