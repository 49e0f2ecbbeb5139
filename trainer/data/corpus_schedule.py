"""Which corpus each training batch comes from: a pure function of (seed, step).

The reference run drew every batch from ONE corpus, chosen with probability weight / sum(weights).
Optionally a share of batches is "mixed": each example slot of such a batch picks its own corpus by
weight. Because the choice depends only on (seed, step) -- a fresh numpy Generator per step -- every
host of a multi-host run takes the same corpus at the same step without talking to the others, and a
resumed run needs nothing but the step number to continue the sequence.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

MIXED = -1  # `corpus_at` value of a mixed batch

# Distinguishes this stream from any other numpy stream a caller might seed with (seed, step).
_STREAM_TAG = 0x5C4ED


class CorpusSchedule:
    def __init__(self, weights: Sequence[float], seed: int, mixed_share: float = 0.0):
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"corpus weights must be a non-empty list of positive numbers, got {list(weights)}")
        if not 0.0 <= mixed_share <= 1.0:
            raise ValueError(f"mixed_batch_share must be within [0, 1], got {mixed_share}")
        self.probabilities = w / w.sum()
        self.seed = int(seed)
        self.mixed_share = float(mixed_share)

    def _rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([_STREAM_TAG, self.seed & 0xFFFFFFFFFFFFFFFF, int(step)])

    def corpus_at(self, step: int) -> int:
        """The corpus index of batch `step`, or MIXED."""
        rng = self._rng(step)
        # Always draw the mixed coin so that the single-corpus sequence does not depend on the share
        # being exactly 0 or not (only on whether the coin falls below it).
        mixed = rng.random() < self.mixed_share
        corpus = int(rng.choice(self.probabilities.size, p=self.probabilities))
        return MIXED if mixed else corpus

    def mixed_choices(self, step: int, batch_size: int) -> np.ndarray:
        """Per example slot of a mixed batch `step`, the corpus index (int64 [batch_size])."""
        rng = self._rng(step)
        rng.random()
        rng.choice(self.probabilities.size, p=self.probabilities)
        return rng.choice(self.probabilities.size, size=batch_size, p=self.probabilities)


# Above this many passes over a corpus's examples in one run, the start-up log and the planner warn.
PASSES_WARNING = 20


@dataclasses.dataclass(frozen=True)
class CorpusPasses:
    """How often a run draws one corpus's examples: `draws` examples in all, `passes` per example."""

    name: str
    probability: float
    examples: int | None  # its training records (a manifest's train_examples, or a data config's expected_lines)
    draws: float  # expected examples drawn from it: steps x batch x probability

    @property
    def passes(self) -> float | None:
        """Expected draws of each of its examples; None when the count is unknown, inf when it is 0."""
        if self.examples is None:
            return None
        return self.draws / self.examples if self.examples else math.inf


def corpus_passes(corpora: Sequence[tuple[str, float, int | None]], steps: int, batch_size: int) -> list[CorpusPasses]:
    """(name, weight, examples) of each corpus -> how many times a run of `steps` global batches of
    `batch_size` draws each of its examples on average: steps x batch_size x weight / sum(weights) / examples.

    An example is a record (one accepted line): every draw takes one record and one (anchor, positive
    [, negative]) from it. A set record of k members holds k(k-1)/2 pairs and a query record one per
    positive, so each *pair* of those is drawn less often than its record; the record's texts are
    not. Mixed batches (mixed_batch_share) pick each slot's corpus by the same weights, so the
    expectation is the same."""
    total = float(sum(w for _, w, _ in corpora))
    return [CorpusPasses(name, w / total, examples, steps * batch_size * w / total) for name, w, examples in corpora]


def passes_report(
    passes: Sequence[CorpusPasses], steps: int, batch_size: int, limit: float = PASSES_WARNING
) -> tuple[list[str], str | None]:
    """(table lines, a warning naming every corpus drawn more than `limit` times per example, or None)."""
    lines = [
        f"passes per corpus over {steps:,} steps x {batch_size:,} examples (draws of each example, on average):",
        f"  {'corpus':<36} {'share':>7} {'examples':>13} {'passes':>9}",
    ]
    for p in passes:
        examples = "unknown" if p.examples is None else f"{p.examples:,}"
        times = "-" if p.passes is None else f"{p.passes:,.2f}"
        lines.append(f"  {p.name:<36} {p.probability:>7.2%} {examples:>13} {times:>9}")
    over = sorted((p for p in passes if p.passes is not None and p.passes > limit), key=lambda p: -p.passes)
    warning = None
    if over:
        warning = (
            f"{len(over)} corpus(es) drawn more than {limit:g} times per example: "
            + ", ".join(f"{p.name} ({p.passes:,.0f})" for p in over)
            + "; to draw them less, lower their weights in the data config (weights proportional to the "
            "corpora's examples give every corpus the same passes) or train fewer steps "
            "(docs/pipeline.md, 'Passes per corpus')"
        )
    return lines, warning
