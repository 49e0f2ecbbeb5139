"""The one text normalisation of the cleaning stages, and the hashes and span rule built on it.

  normalize(text) = whitespace-collapsed casefold(NFKC(text))

Used for both duplicate tuples (pipeline/dedup.py) and evaluation texts (pipeline/decontaminate.py),
on training and evaluation sides alike, so "the same text" means the same thing everywhere. Words are
the normalised text split on its single spaces; punctuation stays part of its word ("paris." and
"paris" differ), as in the usual n-gram contamination checks.

The 13-word rule: two texts of SPAN_WORDS words or more match when they share SPAN_WORDS consecutive
normalised words. Finding candidates uses winnowing (Schleimer, Wilkerson & Aiken, 2003): of every
window of WINDOW consecutive KGRAM-word shingles, the smallest shingle hash is a key. Any shared span of
KGRAM + WINDOW - 1 = SPAN_WORDS words contains one whole window, whose smallest hash both texts select,
so a matching pair always shares a key (no false negatives) while a text emits about 2 / (WINDOW + 1)
keys per word instead of one per word. Keys only propose candidates: `matches` decides, on the words.
"""

from __future__ import annotations

import hashlib
import unicodedata

SPAN_WORDS = 13
KGRAM = 7
WINDOW = SPAN_WORDS - KGRAM + 1  # 7 (text_keys' minimum by doubling is written for 5 <= WINDOW <= 8)
EXACT = "exact"  # the rule names written to decontaminated/ and the manifest
SPAN = f"{SPAN_WORDS}_word_span"


def normalize(text: str) -> str:
    """Unicode NFKC, case folded, whitespace collapsed (runs of any Unicode space -> one space, ends cut)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def hash64(s: str) -> int:
    """A stable unsigned 64-bit hash (blake2b: the same on every worker, unlike Python's salted hash())."""
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


_MASK = (1 << 64) - 1
_BASE = 0x9E3779B97F4A7C15  # odd: multiplication by it is invertible mod 2^64
_BASE_TOP = pow(_BASE, KGRAM - 1, 1 << 64)
_WORDS: dict[str, int] = {}  # word -> hash64(word), per worker process (words repeat: Zipf)
_WORDS_MAX = 1 << 20


def _word_hashes(words: list[str]) -> list[int]:
    cache = _WORDS
    out = [cache.get(w) for w in words]
    if None in out:
        if len(cache) > _WORDS_MAX:
            cache.clear()
        for i, h in enumerate(out):
            if h is None:
                out[i] = cache[words[i]] = hash64(words[i])
    return out


def text_keys(norm: str) -> set[int]:
    """The join keys of a normalised text: its exact hash, and for texts of SPAN_WORDS words or more its
    winnowed shingle hashes (a shingle's hash: a polynomial over its words' hashes mod 2^64, rolled
    along the text). A key that meets another by accident (an exact key and a shingle hash, two
    shingles) only proposes a candidate, which `matches` then refutes on the words."""
    keys = {hash64("\x00" + norm)}
    words = norm.split(" ")
    if len(words) >= SPAN_WORDS:
        wh = _word_hashes(words)
        h = 0
        for x in wh[:KGRAM]:
            h = (h * _BASE + x) & _MASK
        shingles = [h]
        for old, new in zip(wh, wh[KGRAM:]):
            h = ((h - old * _BASE_TOP) * _BASE + new) & _MASK
            shingles.append(h)
        # Minimum of every WINDOW (7) consecutive shingles, by doubling: windows of 2, 4, then 4 + 4 overlapping.
        m2 = list(map(min, shingles, shingles[1:]))
        m4 = list(map(min, m2, m2[2:]))
        keys.update(map(min, m4, m4[WINDOW - 4 :]))
    return keys


def spans(norm: str) -> set[tuple[str, ...]]:
    """Every run of SPAN_WORDS consecutive words of a normalised text (empty for shorter texts)."""
    words = norm.split(" ")
    return {tuple(words[i : i + SPAN_WORDS]) for i in range(len(words) - SPAN_WORDS + 1)}


def matches(train_norm: str, eval_norm: str, eval_spans: set | None = None) -> str | None:
    """The rule by which a normalised training text matches a normalised evaluation text (EXACT, SPAN)
    or None. Decided on the words themselves, not on hashes. `eval_spans`: spans(eval_norm), if known."""
    if train_norm == eval_norm:
        return EXACT
    if eval_spans is None:
        eval_spans = spans(eval_norm)
    if eval_spans and not eval_spans.isdisjoint(spans(train_norm)):
        return SPAN
    return None
