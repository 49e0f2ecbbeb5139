import pytest

from pipeline.job import CombineStats
from pipeline.stats import merge_into, new_stats, token_length_summary


def _acc(lengths, truncated=0, **counts):
    a = new_stats(8)
    for n in lengths:
        a["hist"][n] += 1
    a["texts"], a["truncated"] = len(lengths), truncated
    a.update(counts)
    return a


def test_summary_is_exact():
    s = token_length_summary(_acc([3, 3, 4, 5, 8, 8, 8, 2, 3, 6], truncated=3))
    assert s == {"texts": 10, "mean": 5.0, "p50": 4, "p95": 8, "max": 8, "truncated_share": 0.3}
    assert token_length_summary(new_stats(8))["texts"] == 0


def test_combine_merges_counts_and_reasons():
    fn = CombineStats(8)
    a = _acc([3, 4], lines_read=3, train=2, rejected={"bad_json": 1})
    b = _acc([5], lines_read=2, validation=1, rejected={"bad_json": 1, "empty_text": 1})
    acc = fn.merge_accumulators([fn.add_input(fn.create_accumulator(), a), fn.add_input(fn.create_accumulator(), b)])
    out = fn.extract_output(acc)
    assert (out["lines_read"], out["train"], out["validation"]) == (5, 2, 1)
    assert out["rejected"] == {"bad_json": 2, "empty_text": 1}
    assert token_length_summary(out)["mean"] == pytest.approx(4.0)
    with pytest.raises(IndexError):  # histograms of different max_seq_length never mix silently
        merge_into(new_stats(2), _acc([8]))
