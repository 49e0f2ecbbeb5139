"""Tests of trainer/data/padding.py: buckets, padding, fingerprint folding, de-duplication, re-padding."""

import numpy as np
import pytest

from trainer.data import padding


def test_effective_buckets_cap_at_max_seq_length():
    assert padding.effective_buckets((32, 64, 128), 128) == (32, 64, 128)
    assert padding.effective_buckets((128, 32, 64), 100) == (32, 64, 100)
    assert padding.effective_buckets((32, 64, 128), 256) == (32, 64, 128, 256)
    with pytest.raises(ValueError):
        padding.effective_buckets((0, 32), 64)


def test_bucket_length_is_smallest_that_fits():
    b = (32, 64, 128)
    assert [padding.bucket_length(n, b) for n in (1, 32, 33, 64, 65, 128)] == [32, 32, 64, 64, 128, 128]
    with pytest.raises(ValueError, match="longer than the largest bucket"):
        padding.bucket_length(129, b)


def test_pad_rows_places_each_row_and_masks_the_rest():
    values = np.array([1, 2, 3, 4, 5, 6], np.int32)
    starts, lengths = np.array([0, 3, 3]), np.array([3, 0, 3], np.int32)
    ids, mask = padding.pad_rows(values, starts, lengths, 4, pad_id=9)
    assert ids.tolist() == [[1, 2, 3, 9], [9, 9, 9, 9], [4, 5, 6, 9]]
    assert mask.tolist() == [[1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 0]]
    assert ids.dtype == mask.dtype == np.int32
    ids, mask = padding.pad_rows(np.zeros(0, np.int32), np.array([0]), np.array([0]), 2, 0)
    assert ids.tolist() == [[0, 0]] and mask.tolist() == [[0, 0]]


def test_fold_fingerprint_xors_halves_to_int32():
    fp = np.array([0, 1, (1 << 32) + 1, -1, (5 << 32) | 3, -(1 << 63)], np.int64)
    out = padding.fold_fingerprint(fp)
    assert out.dtype == np.int32
    assert out.tolist() == [0, 1, 0, 0, 6, np.array(0x80000000, np.uint32).view(np.int32).item()]


def test_select_unique_is_greedy_and_updates_seen():
    fps = np.array([[1, 2], [3, 4], [2, 5], [6, 6], [7, 8]], np.int64)
    seen = {8}
    keep = padding.select_unique(fps, seen)
    # row 2 repeats text 2 of row 0; row 3 repeats its own text (allowed); row 4 has text 8 already seen.
    assert keep.tolist() == [True, True, False, True, False]
    assert seen == {1, 2, 3, 4, 6, 8}
    seen = set()
    assert padding.select_unique(np.array([[1, 2], [3, 4]]), seen).all() and seen == {1, 2, 3, 4}


def test_repad_grows_or_cuts_padding_only():
    batch = {
        "anchor_ids": np.array([[5, 6, 0]], np.int32),
        "anchor_mask": np.array([[1, 1, 0]], np.int32),
        "positive_ids": np.array([[7, 0, 0]], np.int32),
        "positive_mask": np.array([[1, 0, 0]], np.int32),
        "anchor_fp": np.array([1], np.int32),
        "corpus": "c",
    }
    up = padding.repad(batch, 5, pad_id=0)
    assert up["anchor_ids"].tolist() == [[5, 6, 0, 0, 0]] and up["positive_mask"].tolist() == [[1, 0, 0, 0, 0]]
    assert up["corpus"] == "c" and up["anchor_fp"] is batch["anchor_fp"]
    down = padding.repad(batch, 2, pad_id=0)
    assert down["anchor_ids"].tolist() == [[5, 6]]
    with pytest.raises(ValueError, match="longer"):
        padding.repad(batch, 1, pad_id=0)


def test_bucket_ladder_steps_by_one_and_a_half_and_two():
    assert padding.bucket_ladder(128) == (16, 24, 32, 48, 64, 96, 128)
    assert padding.bucket_ladder(100) == (16, 24, 32, 48, 64, 96, 100)
    assert padding.bucket_ladder(8) == (8,)
