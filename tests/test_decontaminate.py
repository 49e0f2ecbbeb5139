"""The key join of training and evaluation texts (pipeline/decontaminate.py)."""

import numpy as np

from pipeline import normalize
from pipeline.decontaminate import EvalKeys, JoinKeys, pack_keys

LONG = " ".join(f"w{i}" for i in range(30))


def test_evaluation_texts_become_keyed_entries():
    out = list(EvalKeys(4).process(("sts", "  What IS it? ")))
    assert out == [
        (k % 4, (k, "sts", "what is it?", "  What IS it? ")) for k in sorted(normalize.text_keys("what is it?"))
    ]
    assert list(EvalKeys(4).process(("sts", " \u3000 "))) == []  # nothing left to match
    assert len(list(EvalKeys(4).process(("t", LONG)))) == len(normalize.text_keys(LONG)) > 2


def test_candidates_once_per_tuple_and_text_and_only_where_keys_meet():
    evals = [v for _, v in EvalKeys(1).process(("s", LONG))] + [v for _, v in EvalKeys(1).process(("s", LONG.upper()))]
    train_text = "x " + " ".join(f"w{i}" for i in range(2, 20))
    tk, other = b"t" * 16, b"o" * 16
    train_keys = sorted(normalize.text_keys(normalize.normalize(train_text)))
    other_keys = sorted(normalize.text_keys("unrelated words only"))
    train = [v for _, v in pack_keys(train_keys + other_keys, tk * len(train_keys) + other * len(other_keys), 1)]
    out = list(JoinKeys(3).process((0, {"train": train, "eval": evals})))
    # The upper-case copy normalises alike: one candidate, carrying the smallest original text.
    assert [v for _, v in out] == [(tk, "s", LONG, LONG.upper())]
    assert list(JoinKeys(3).process((0, {"train": train, "eval": []}))) == []


def test_keys_are_packed_per_bucket():
    keys = [5, 8, 13, 2**64 - 1]
    tks = b"".join(bytes([i]) * 16 for i in range(4))
    out = dict(pack_keys(keys, tks, 3))
    got = {b: (np.frombuffer(k, np.uint64).tolist(), t) for b, (k, t) in out.items()}
    assert got == {2: ([5, 8], tks[:32]), 1: ([13], tks[32:48]), 0: ([2**64 - 1], tks[48:])}
    assert dict(pack_keys(keys, tks, 1)) == {0: (np.array(keys, np.uint64).tobytes(), tks)}
