"""Tests of trainer/data/corpus_schedule.py: a pure function of (seed, step) that follows the weights."""
import numpy as np
import pytest

from trainer.data.corpus_schedule import MIXED, CorpusSchedule

WEIGHTS = [247, 91, 1, 26, 123]


def test_single_corpus_choices_follow_the_weights():
    s = CorpusSchedule(WEIGHTS, seed=42)
    draws = np.array([s.corpus_at(step) for step in range(2000)])
    p = np.array(WEIGHTS) / sum(WEIGHTS)
    counts = np.bincount(draws, minlength=len(WEIGHTS))
    tol = 4 * np.sqrt(p * (1 - p) / 2000)
    assert np.all(np.abs(counts / 2000 - p) < tol), counts


def test_same_seed_same_sequence_any_order_different_seed_differs():
    a = CorpusSchedule(WEIGHTS, seed=42)
    b = CorpusSchedule(WEIGHTS, seed=42)
    forward = [a.corpus_at(s) for s in range(300)]
    assert [b.corpus_at(s) for s in reversed(range(300))][::-1] == forward  # no hidden state
    other = [CorpusSchedule(WEIGHTS, seed=43).corpus_at(s) for s in range(300)]
    assert other != forward


def test_mixed_share_and_example_wise_choices():
    s = CorpusSchedule([3, 1], seed=0, mixed_share=0.25)
    kinds = [s.corpus_at(step) for step in range(2000)]
    share = kinds.count(MIXED) / 2000
    assert abs(share - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 2000)
    step = kinds.index(MIXED)
    c = s.mixed_choices(step, 4000)
    assert c.shape == (4000,) and set(c.tolist()) == {0, 1} and abs((c == 0).mean() - 0.75) < 0.03
    assert np.array_equal(c, s.mixed_choices(step, 4000))
    # A share of 0 never mixes; a share of 1 always does.
    assert MIXED not in [CorpusSchedule([3, 1], 0, 0.0).corpus_at(t) for t in range(500)]
    assert {CorpusSchedule([3, 1], 0, 1.0).corpus_at(t) for t in range(50)} == {MIXED}


def test_bad_weights_or_share_are_refused():
    with pytest.raises(ValueError, match="positive"):
        CorpusSchedule([1, 0], seed=0)
    with pytest.raises(ValueError, match="mixed_batch_share"):
        CorpusSchedule([1], seed=0, mixed_share=1.5)
