"""Which corpus each training batch comes from: a pure function of (seed, step).

The reference run drew every batch from ONE corpus, chosen with probability weight / sum(weights).
Optionally a share of batches is "mixed": each example slot of such a batch picks its own corpus by
weight. Because the choice depends only on (seed, step) -- a fresh numpy Generator per step -- every
host of a multi-host run takes the same corpus at the same step without talking to the others, and a
resumed run needs nothing but the step number to continue the sequence.
"""
from __future__ import annotations

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
