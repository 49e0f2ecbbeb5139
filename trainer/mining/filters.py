"""Which candidates become negatives: sentence-transformers' `mine_hard_negatives` rules, vectorised.

Per anchor the search returns its `window` best candidates (best first): range_max + max_positives
+ 1, as sentence-transformers searches. As in sentence-transformers 6.3 (util/hard_negatives.py), in
this order:
  1. the anchor's positives and the anchor's own text never count: compared by text fingerprint (of
     the stripped text, as the loss compares texts), where sentence-transformers compares exact texts;
  2. absolute_margin: a candidate scoring above (lowest positive score - absolute_margin) is dropped;
  3. relative_margin: one scoring above (lowest positive score - |lowest positive score| * relative_margin);
  4. max_score / min_score: one scoring above / below them;
  5. of the candidates left, in score order, ranks range_min .. range_max - 1 are eligible;
  6. sampling_strategy "top" takes the first num_negatives eligible ones, "random" num_negatives of
     them at random (seeded), kept in score order.
The lowest positive score is the margin's reference when an anchor has several positives (the
harder one). Each rule counts the candidates it removed (not those an earlier rule removed).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.user_errors import UserError

SAMPLING_STRATEGIES = ("top", "random")
# The removal counts of the report, in the order the rules apply.
COUNTED = (
    "positive_or_anchor",
    "absolute_margin",
    "relative_margin",
    "max_score",
    "min_score",
    "outside_rank_range",
    "not_sampled",
)


@dataclasses.dataclass(frozen=True)
class FilterSettings:
    num_negatives: int = 3
    range_min: int = 0
    range_max: int | None = None  # None: derived as sentence-transformers derives it (window_range_max)
    max_score: float | None = None
    min_score: float | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None
    sampling_strategy: str = "top"

    def check(self) -> None:
        """A UserError naming the flag for a value sentence-transformers refuses too (a ValueError there),
        and for an unknown sampling_strategy, which it does not check (it would keep every eligible one)."""
        if self.num_negatives < 1:
            raise UserError(f"--num_negatives must be at least 1, got {self.num_negatives}")
        if self.range_min < 0:
            raise UserError(f"--range_min must be non-negative, got {self.range_min}")
        if self.sampling_strategy not in SAMPLING_STRATEGIES:
            raise UserError(
                f"--sampling_strategy must be one of {', '.join(SAMPLING_STRATEGIES)}, got {self.sampling_strategy!r}"
            )
        if self.range_max is not None:
            if self.range_min >= self.range_max:
                raise UserError(f"--range_min={self.range_min} must be smaller than --range_max={self.range_max}")
            if self.num_negatives > self.range_max - self.range_min:
                raise UserError(
                    f"--num_negatives={self.num_negatives} does not fit in ranks --range_min="
                    f"{self.range_min} .. --range_max={self.range_max}"
                )

    def window_range_max(self, max_positive_rows: int) -> int:
        """range_max, or sentence-transformers' default: room for range_min, the negatives (ten times
        as many when a margin or max_score may drop some) and the positives."""
        if self.range_max is not None:
            return self.range_max
        filtering = self.absolute_margin is not None or self.relative_margin is not None or self.max_score is not None
        return self.range_min + self.num_negatives * (10 if filtering else 1) + max_positive_rows

    def window(self, max_positive_rows: int, pool_size: int) -> int:
        """Candidates searched per anchor, sentence-transformers' `range_max + max_positives + 1`: room for
        the positives and the anchor's own text, which never count; at most the pool."""
        return min(self.window_range_max(max_positive_rows) + max_positive_rows + 1, pool_size)


def choose_negatives(
    scores: np.ndarray,
    idx: np.ndarray,
    cand_fp: np.ndarray,
    excluded_fp: np.ndarray,
    excluded_valid: np.ndarray,
    pos_scores: np.ndarray,
    settings: FilterSettings,
    range_max: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict]:
    """scores / idx / cand_fp [n, w]: the search's candidates (best first, idx -1: none) and their
    fingerprints; excluded_fp / excluded_valid [n, e]: each anchor's own and its positives'
    fingerprints; pos_scores [n, p] (-inf: padding). Returns the chosen mask [n, w] and the counts."""
    counts = dict.fromkeys(COUNTED, 0)
    removed = idx < 0
    hit = ((cand_fp[:, :, None] == excluded_fp[:, None, :]) & excluded_valid[:, None, :]).any(axis=2)

    def drop(name: str, mask: np.ndarray) -> None:
        nonlocal removed
        mask = mask & ~removed
        counts[name] += int(mask.sum())
        removed = removed | mask

    drop("positive_or_anchor", hit)
    if settings.absolute_margin is not None or settings.relative_margin is not None:
        lowest = np.where(np.isfinite(pos_scores), pos_scores, np.inf).min(axis=1).astype(np.float32)[:, None]
        if settings.absolute_margin is not None:
            drop("absolute_margin", scores + np.float32(settings.absolute_margin) > lowest)
        if settings.relative_margin is not None:
            # |positive| * margin, not positive * (1 - margin): the same for negative positive scores.
            drop("relative_margin", scores > lowest - np.abs(lowest) * np.float32(settings.relative_margin))
    if settings.max_score is not None:
        drop("max_score", scores > np.float32(settings.max_score))
    if settings.min_score is not None:
        drop("min_score", scores < np.float32(settings.min_score))
    left = ~removed
    rank = np.cumsum(left, axis=1) - 1  # rank among the candidates left, best first
    eligible = left & (rank >= settings.range_min) & (rank < range_max)
    counts["outside_rank_range"] = int((left & ~eligible).sum())
    if settings.sampling_strategy == "top":
        chosen = eligible & (rank < settings.range_min + settings.num_negatives)
    else:  # the num_negatives eligible candidates with the smallest random keys
        keys = np.where(eligible, rng.random(scores.shape), np.inf)
        nth = np.sort(keys, axis=1)[:, min(settings.num_negatives, keys.shape[1]) - 1 :][:, :1]
        chosen = eligible & (keys <= nth)
    counts["not_sampled"] = int((eligible & ~chosen).sum())
    return chosen, counts
