"""The cleaning stages' normalisation, keys and 13-word rule (pipeline/normalize.py)."""

import random

from pipeline import normalize
from pipeline.normalize import EXACT, SPAN, matches, spans, text_keys
from pipeline.normalize import normalize as norm

WORDS = [f"w{i}" for i in range(400)]


def test_nfkc_casefold_and_whitespace():
    assert norm("  The\u00a0CAT\tsat\n\non  the mat. ") == "the cat sat on the mat."
    assert norm("Ｔｈｅ ﬁsh") == "the fish"  # full-width letters and the fi ligature fold under NFKC
    assert norm("Straße") == norm("STRASSE") == "strasse"  # case folding, not lower()
    assert norm("e\u0301") == norm("\u00e9")  # composed and decomposed forms
    assert norm("paris.") != norm("paris")  # punctuation stays part of its word


def test_exact_and_span_rule_on_words():
    long = " ".join(WORDS[:30])
    assert matches(long, long) == EXACT
    assert matches(norm("What IS  it?"), norm("what is it?")) == EXACT
    assert matches(" ".join(["x", *WORDS[5:18], "y"]), long) == SPAN  # 13 shared consecutive words
    assert matches(" ".join(["x", *WORDS[5:17], "y", "z"]), long) is None  # only 12
    changed = WORDS[:30]
    for i in range(12, 30, 12):  # one word changed every 12: no 13-word run survives
        changed = changed[:i] + ["other"] + changed[i + 1 :]
    assert matches(" ".join(changed), long) is None
    assert matches("what is it", "what is it?") is None  # short texts: equality only
    assert spans("a b c") == set()


def test_winnowed_keys_never_miss_a_13_word_span():
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice(WORDS[:60]) for _ in range(rng.randint(13, 60))]
        start, stop = sorted(rng.sample(range(len(a) + 1), 2))
        if stop - start < 13:
            continue
        shared = a[start:stop][: rng.randint(13, stop - start)]
        b = [rng.choice(WORDS) for _ in range(rng.randint(0, 20))] + shared + [rng.choice(WORDS) for _ in range(5)]
        ta, tb = " ".join(a), " ".join(b)
        assert matches(tb, ta) in (EXACT, SPAN)
        assert text_keys(ta) & text_keys(tb), (ta, tb)


def test_keys_are_fewer_than_words_and_stable():
    text = " ".join(WORDS[:200])
    keys = text_keys(text)
    assert 1 < len(keys) < 200 * 0.4  # about 2 / (WINDOW + 1) per word, plus the exact key
    assert (
        keys == text_keys(text) and normalize.hash64("abc") == 0x5995D533D814BBD8
    )  # pinned: the same on every machine
    assert text_keys("short text") == {normalize.hash64("\x00short text")}
