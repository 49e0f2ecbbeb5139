"""Tests of trainer/data/corpus_schedule.py: a pure function of (seed, step) that follows the weights."""

import math

import numpy as np
import pytest

from trainer.data.corpus_schedule import MIXED, CorpusSchedule, corpus_passes, passes_report

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


def _config_corpora(path, skip=()):
    import os

    from pipeline.data_config import load_data_config

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [
        (c.name, c.weight, c.expected_lines)
        for c in load_data_config(os.path.join(repo, path)).corpora
        if c.name not in skip
    ]


def test_passes_of_the_reference_run_on_the_public_files():
    # 540,000 steps x 1,024 with the 2021 weights (sum 2,711) on the public files' line counts.
    passes = {p.name: p for p in corpus_passes(_config_corpora("data_config.json"), 540_000, 1024)}
    msmarco = passes["msmarco"]
    assert msmarco.probability == pytest.approx(247 / 2711)
    assert msmarco.draws == pytest.approx(540_000 * 1024 * 247 / 2711)
    assert msmarco.passes == pytest.approx(100.93, abs=0.01)  # 499,184 lines: each drawn ~100 times
    assert passes["searchqa"].passes == pytest.approx(250.57, abs=0.01)  # 117,220 queries at weight 144
    assert passes["reddit"].passes == pytest.approx(0.0921, abs=1e-4)
    assert passes["gooaq"].passes == pytest.approx(16.72, abs=0.01)
    # Reddit left out (--skip_missing_corpora): its weight leaves the sum, every other corpus's passes
    # grow by 2,711 / 2,383.
    without = {p.name: p.passes for p in corpus_passes(_config_corpora("data_config.json", ["reddit"]), 540_000, 1024)}
    assert without["msmarco"] == pytest.approx(100.93 * 2711 / 2383, abs=0.01) == pytest.approx(114.82, abs=0.01)
    # The 2021 run's own files: MS MARCO's 9,144,553 triplets were each drawn ~5.5 times.
    ref = {p.name: p.passes for p in corpus_passes(_config_corpora("data_configs/reference_2021.json"), 540_000, 1024)}
    assert ref["msmarco"] == pytest.approx(5.51, abs=0.01)


def test_the_report_names_every_corpus_above_twenty_passes():
    passes = corpus_passes(
        [("big", 1, 1_000_000), ("small", 1, 1_000), ("unknown", 2, None), ("empty", 1, 0)], steps=100, batch_size=400
    )
    assert [p.passes for p in passes] == [0.008, 8.0, None, math.inf]
    lines, warning = passes_report(passes, 100, 400)
    assert lines[0] == "passes per corpus over 100 steps x 400 examples (draws of each example, on average):"
    assert [line.split() for line in lines[1:]] == [
        ["corpus", "share", "examples", "passes"],
        ["big", "20.00%", "1,000,000", "0.01"],
        ["small", "20.00%", "1,000", "8.00"],
        ["unknown", "40.00%", "unknown", "-"],
        ["empty", "20.00%", "0", "inf"],
    ]
    assert warning.startswith("1 corpus(es) drawn more than 20 times per example: empty (inf); to draw them less")
    _, warning = passes_report(passes[:2], 100, 400, limit=5)
    assert warning.startswith("1 corpus(es) drawn more than 5 times per example: small (8);")
    assert passes_report(passes[:2], 100, 400)[1] is None
