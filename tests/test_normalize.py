"""The cleaning stages' normalisation, keys and 13-word rule (pipeline/normalize.py)."""

import random
import sys

import numpy as np
import pytest

from pipeline import normalize
from pipeline.normalize import EXACT, SPAN, batch_text_keys, matches, spans, text_keys
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
    assert keys == text_keys(text)
    assert text_keys("short text") == {0xD830858392713F06}  # pinned: the same on every machine and run
    assert text_keys("short text") == reference_text_keys("short text")


MASK = (1 << 64) - 1


def _mix(h: int) -> int:
    """MurmurHash3's 64-bit finaliser, in plain Python."""
    h ^= h >> 33
    h = h * 0xFF51AFD7ED558CCD & MASK
    h ^= h >> 33
    h = h * 0xC4CEB9FE1A85EC53 & MASK
    return h ^ (h >> 33)


def _polynomial(values, base: int, length: int) -> int:
    return _mix((sum(v * pow(base, k, 1 << 64) for k, v in enumerate(values)) + length * int(normalize._LENGTH)) & MASK)


def word_hash(word: str) -> int:
    """A word's hash as the module's docstring defines it: over its UTF-8 bytes + 1 and the space after it."""
    data = word.encode("utf-8", "surrogatepass")
    return _polynomial([b + 1 for b in data], normalize._BYTE_BASE, len(data) + 1)


def reference_text_keys(norm: str) -> set[int]:
    """The keys as the module's docstring defines them, one text at a time in plain Python: the exact
    key over the word hashes, and a rolling polynomial hash over the word hashes mod 2^64 whose minimum
    over every WINDOW consecutive shingles is a key."""
    base = int(normalize._BASE)
    base_top = pow(base, normalize.KGRAM - 1, 1 << 64)
    words = norm.split(" ")
    wh = [word_hash(w) for w in words]
    keys = {_polynomial(wh, normalize._WORD_BASE, len(words))}
    if len(words) >= normalize.SPAN_WORDS:
        h = 0
        for x in wh[: normalize.KGRAM]:
            h = (h * base + x) & MASK
        shingles = [h]
        for old, new in zip(wh, wh[normalize.KGRAM :]):
            h = ((h - old * base_top) * base + new) & MASK
            shingles.append(h)
        keys.update(min(shingles[i : i + normalize.WINDOW]) for i in range(len(shingles) - normalize.WINDOW + 1))
    return keys


def _random_texts(rng, n):
    vocab = [*WORDS[:40], "é", "straße", "日本語", "😀", "a.b", "x\u0301", "\ud800"]  # a lone surrogate too
    texts = ["", "x", *(" ".join(WORDS[:k]) for k in (12, 13, 14, 19, 20))]
    texts += [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 45))) for _ in range(n)]
    return texts


def test_batch_keys_equal_the_reference_per_text():
    rng = random.Random(1)
    texts = _random_texts(rng, 400)
    rng.shuffle(texts)
    keys, owner = batch_text_keys(texts)
    got = [set() for _ in texts]
    for k, o in zip(keys.tolist(), owner.tolist()):
        got[o].add(k)
    assert got == [reference_text_keys(t) for t in texts]
    assert len(keys) == sum(map(len, got))  # each (text, key) once
    assert [text_keys(t) for t in texts[:50]] == [reference_text_keys(t) for t in texts[:50]]
    assert len(text_keys(" ".join(WORDS[:12]))) == 1 and len(text_keys(" ".join(WORDS[:13]))) == 2
    empty_keys, empty_owner = batch_text_keys([])
    assert empty_keys.dtype == np.uint64 and len(empty_keys) == len(empty_owner) == 0


def test_batch_keys_by_group_are_the_union_and_never_span_two_texts():
    rng = random.Random(2)
    texts = _random_texts(rng, 300)
    groups = [i // 3 for i in range(len(texts))]  # neighbours share a group: windows must still stop at a text's end
    keys, owner = batch_text_keys(texts, groups)
    assert np.all(np.diff(owner) >= 0) and len(set(zip(owner.tolist(), keys.tolist()))) == len(keys)
    got = {}
    for k, o in zip(keys.tolist(), owner.tolist()):
        got.setdefault(o, set()).add(k)
    want = {}
    for t, g in zip(texts, groups):
        want.setdefault(g, set()).update(reference_text_keys(t))
    assert got == want
    # Two texts side by side in one group make no 13-word window across their boundary.
    a, b = " ".join(WORDS[:13]), " ".join(WORDS[13:27])
    assert set(batch_text_keys([a, b], [0, 0])[0].tolist()) == text_keys(a) | text_keys(b)


def test_normalize_many_equals_normalize_one_by_one():
    rng = random.Random(3)
    # Combining marks at a text's start or end, Hangul jamo, ligatures, full width, spaces of every kind.
    pieces = ["a", "B", "\u0301", "\u0327", "e\u0301", "\u1100", "\u1161", "\u11a8", "ﬁ", "Ａ", "ß", "İ", "Σ"]
    pieces += [" ", "\u00a0", "\u3000", "\t", "\n", "\x1c", "\u2028", ".", "日本", "😀"]
    texts = ["", " ", "\u0301", *("".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) for _ in range(500))]
    assert normalize.normalize_many(texts) == [norm(t) for t in texts]
    assert normalize.normalize_many(["a\x00 B", "C"]) == ["a\x00 b", "c"]  # a NUL inside: one by one
    assert normalize.normalize_many([]) == []
    # Its fast path takes a printable text without double, leading or trailing spaces as collapsed:
    # every character str.split() splits at, but the space, is non-printable.
    splitting = [c for c in map(chr, range(sys.maxunicode + 1)) if len(("a" + c + "b").split()) != 1]
    assert len(splitting) > 20 and [c for c in splitting if c.isprintable()] == [" "]


def test_keys_stay_the_same_when_the_powers_grow(monkeypatch):
    monkeypatch.setattr(normalize, "_POWERS", {})
    rng = random.Random(4)
    # Texts of every size one after the other (a long word, non-ASCII, an empty text), so the cached
    # powers grow between calls; and all of them in one batch.
    texts = [" ".join(f"t{j}w{rng.randint(0, 30)}" for _ in range(rng.randint(5, 30))) for j in range(40)]
    texts += ["", "x" * 3000 + " é 😀 " + " ".join(WORDS[:20]), "日本 語", "a"]
    rng.shuffle(texts)
    for t in texts:
        assert text_keys(t) == reference_text_keys(t)
    assert len(normalize._POWERS[normalize._BYTE_BASE]) > 3000
    keys, owner = batch_text_keys(texts)
    got = [set() for _ in texts]
    for k, o in zip(keys.tolist(), owner.tolist()):
        got[o].add(k)
    assert got == [reference_text_keys(t) for t in texts]


def test_a_text_that_is_not_normalised_is_refused():
    with pytest.raises(ValueError):
        batch_text_keys(["two\nlines"])
