"""trainer/mining/filters.py: sentence-transformers' rules on hand-made candidate lists."""

import numpy as np
import pytest

from pipeline.user_errors import UserError
from trainer.mining.filters import FilterSettings, choose_negatives

SCORES = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]], np.float32)
IDX = np.arange(6, dtype=np.int32)[None]
# Candidate i has fingerprint 100 + i; never negatives: the anchor's own text (999) and its positive (candidate 1).
EXCLUDED = np.array([[999, 101]], np.int64)
VALID = np.ones((1, 2), bool)


def _chosen(pos=0.8, scores=SCORES, idx=IDX, range_max=10, seed=0, **kw):
    chosen, counts = choose_negatives(
        scores,
        idx,
        idx.astype(np.int64) + 100,
        EXCLUDED,
        VALID,
        np.array([[pos, -np.inf]], np.float32),
        FilterSettings(**kw),
        range_max,
        np.random.default_rng(seed),
    )
    return idx[0][chosen[0]].tolist(), {k: v for k, v in counts.items() if v}


def test_top_skips_the_positive_and_takes_the_best():
    assert _chosen(num_negatives=2) == ([0, 2], {"positive_or_anchor": 1, "not_sampled": 3})


def test_margins_measure_from_the_lowest_positive_score():
    # absolute: drop scores above 0.8 - 0.15 = 0.65 (0.9 and 0.7)
    assert _chosen(num_negatives=2, absolute_margin=0.15) == (
        [3, 4],
        {"positive_or_anchor": 1, "absolute_margin": 2, "not_sampled": 1},
    )
    # relative: drop scores above 0.8 - 0.8 * 0.1 = 0.72 (0.9 only)
    assert _chosen(num_negatives=2, relative_margin=0.1)[0] == [2, 3]
    # a negative positive score: the threshold is -0.2 - 0.2 * 0.5 = -0.3, below every candidate
    assert _chosen(pos=-0.2, num_negatives=2, relative_margin=0.5) == (
        [],
        {"positive_or_anchor": 1, "relative_margin": 5},
    )


def test_score_bounds_and_rank_range():
    assert _chosen(num_negatives=2, max_score=0.75, min_score=0.55) == (
        [2, 3],
        {"positive_or_anchor": 1, "max_score": 1, "min_score": 2},
    )
    # ranks among the candidates left (0, 2, 3, 4, 5): ranks 1..2 are eligible
    assert _chosen(num_negatives=2, range_min=1, range_max=3) == (
        [2, 3],
        {"positive_or_anchor": 1, "outside_rank_range": 3},
    )


def test_missing_candidates_are_never_chosen():
    idx = np.array([[0, 2, -1, -1, -1, -1]], np.int32)
    assert _chosen(num_negatives=3, idx=idx) == ([0, 2], {})


def test_random_sampling_is_seeded_and_keeps_score_order():
    picks = {tuple(_chosen(num_negatives=2, sampling_strategy="random", seed=s)[0]) for s in range(20)}
    assert all(len(p) == 2 and list(p) == sorted(p) and 1 not in p for p in picks)
    assert len(picks) > 3  # different seeds, different subsets of {0, 2, 3, 4, 5}
    assert _chosen(num_negatives=2, sampling_strategy="random", seed=7) == _chosen(
        num_negatives=2, sampling_strategy="random", seed=7
    )


def test_window_follows_sentence_transformers_defaults():
    assert FilterSettings(num_negatives=3).window_range_max(1) == 4
    assert FilterSettings(num_negatives=3, range_min=2, max_score=0.9).window_range_max(2) == 34
    # sentence-transformers searches range_max + max_positives + 1: room for the anchor's own text too
    assert FilterSettings(num_negatives=3, range_max=50).window(2, 1000) == 53
    assert FilterSettings(num_negatives=3).window(1, 1000) == 3 + 1 + 1 + 1
    assert FilterSettings(num_negatives=3).window(1, 3) == 3  # never more than the pool


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(num_negatives=0), "--num_negatives must be at least 1"),
        (dict(range_min=-1), "--range_min must be non-negative"),
        (dict(range_min=5, range_max=5), "--range_min=5 must be smaller than --range_max=5"),
        (dict(num_negatives=4, range_min=2, range_max=5), "--num_negatives=4 does not fit"),
        (dict(sampling_strategy="best"), "--sampling_strategy must be one of top, random"),
    ],
)
def test_settings_sentence_transformers_refuses_are_user_errors(kw, message):
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    with pytest.raises(UserError, match=message):
        FilterSettings(**kw).check()
    pairs = Dataset.from_dict({"anchor": ["q"], "positive": ["a"]})
    if "sampling_strategy" in kw:  # sentence-transformers does not check it: we do
        return
    with pytest.raises(ValueError):  # it refuses before it needs a model
        mine_hard_negatives(pairs, None, verbose=False, **kw)


def test_the_anchors_own_text_is_never_a_negative():
    idx = np.array([[899, 0, 1, 2, 3, 4]], np.int32)  # candidate 899 is the anchor's text (fingerprint 999)
    assert _chosen(num_negatives=2, idx=idx) == ([0, 2], {"positive_or_anchor": 2, "not_sampled": 2})
