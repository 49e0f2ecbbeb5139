"""The key join of training and evaluation texts (pipeline/decontaminate.py)."""

import numpy as np

from pipeline import dedup, normalize
from pipeline.decontaminate import EvalKeys, JoinKeys, pack_keys

LONG = " ".join(f"w{i}" for i in range(30))


def _eval_rows(out):
    """(bucket, key, set, norm, text) per key of EvalKeys' output."""
    rows = []
    for bucket, (keys, numbers, entries) in out:
        for k, i in zip(np.frombuffer(keys, np.uint64).tolist(), np.frombuffer(numbers, np.int32).tolist()):
            rows.append((bucket, k, *entries[i]))
    return sorted(rows)


def test_evaluation_texts_become_keyed_entries():
    batch = [("sts", "  What IS it? "), ("sts", " \u3000 "), ("t", LONG)]  # the blank one can match nothing
    out = list(EvalKeys(4).process(batch))
    want = [(k % 4, k, "sts", "what is it?", "  What IS it? ") for k in normalize.text_keys("what is it?")]
    want += [(k % 4, k, "t", LONG, LONG) for k in normalize.text_keys(LONG)]
    assert _eval_rows(out) == sorted(want) and len(want) > 3
    assert len(out) == len({b for b, *_ in want}) and all(0 <= b < 4 for b, _ in out)  # one element per bucket
    for _, (_, numbers, entries) in out:  # each bucket carries only the entries its keys point to
        assert sorted(set(np.frombuffer(numbers, np.int32).tolist())) == list(range(len(entries)))
    assert list(EvalKeys(4).process([("sts", " \u3000 ")])) == []


def test_candidates_once_per_tuple_and_text_and_only_where_keys_meet():
    evals = [v for _, v in EvalKeys(1).process([("s", LONG), ("s", LONG.upper())])]
    evals += [v for _, v in EvalKeys(1).process([("s", LONG.title()), ("u", "w0 w1")])]
    train_text = "x " + " ".join(f"w{i}" for i in range(2, 20))
    tk, other = b"t" * 16, b"o" * 16
    train_keys = sorted(normalize.text_keys(normalize.normalize(train_text)))
    other_keys = sorted(normalize.text_keys("unrelated words only"))
    tks = np.frombuffer(tk * len(train_keys) + other * len(other_keys), "S16")
    train = [v for _, v in pack_keys(np.array(train_keys + other_keys, np.uint64), tks, 1)]
    out = list(JoinKeys(3).process((0, {"train": train, "eval": evals})))
    # The three copies normalise alike (in two batches): one candidate, carrying the smallest original text.
    assert [v for _, v in out] == [(tk, "s", LONG, min(LONG, LONG.upper(), LONG.title()))]
    assert [b for b, _ in out] == [dedup.tuple_bucket(tk, 3)]
    assert list(JoinKeys(3).process((0, {"train": train, "eval": []}))) == []


def test_keys_are_packed_per_bucket():
    keys = np.array([5, 8, 13, 2**64 - 1], np.uint64)
    tks = b"".join(bytes([i]) * 16 for i in range(4))
    rows = np.frombuffer(tks, "S16")
    out = dict(pack_keys(keys, rows, 3))
    got = {b: (np.frombuffer(k, np.uint64).tolist(), t) for b, (k, t) in out.items()}
    assert got == {2: ([5, 8], tks[:32]), 1: ([13], tks[32:48]), 0: ([2**64 - 1], tks[48:])}
    assert dict(pack_keys(keys, rows, 1)) == {0: (keys.tobytes(), tks)}
