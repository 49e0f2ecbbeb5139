"""The key join of training and evaluation texts (pipeline/decontaminate.py)."""
from pipeline import normalize
from pipeline.decontaminate import EvalKeys, JoinKeys

LONG = " ".join(f"w{i}" for i in range(30))


def test_evaluation_texts_become_keyed_entries():
    out = list(EvalKeys(4).process(("sts", "  What IS it? ")))
    assert out == [(k % 4, (k, "sts", "what is it?", "  What IS it? ")) for k in sorted(normalize.text_keys("what is it?"))]
    assert list(EvalKeys(4).process(("sts", " \u3000 "))) == []  # nothing left to match
    assert len(list(EvalKeys(4).process(("t", LONG)))) == len(normalize.text_keys(LONG)) > 2


def test_candidates_once_per_tuple_and_text_and_only_where_keys_meet():
    evals = [v for _, v in EvalKeys(1).process(("s", LONG))] + [v for _, v in EvalKeys(1).process(("s", LONG.upper()))]
    train_text = "x " + " ".join(f"w{i}" for i in range(2, 20))
    tk, other = b"t" * 16, b"o" * 16
    train = [[(k, tk) for k in normalize.text_keys(normalize.normalize(train_text))],
             [(k, other) for k in normalize.text_keys("unrelated words only")]]
    out = list(JoinKeys(3).process((0, {"train": train, "eval": evals})))
    # The upper-case copy normalises alike: one candidate, carrying the smallest original text.
    assert [v for _, v in out] == [(tk, "s", LONG, LONG.upper())]
    assert list(JoinKeys(3).process((0, {"train": train, "eval": []}))) == []
