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
WINDOW = SPAN_WORDS - KGRAM + 1  # 7
EXACT = "exact"  # the rule names written to decontaminated/ and the manifest
SPAN = f"{SPAN_WORDS}_word_span"


def normalize(text: str) -> str:
    """Unicode NFKC, case folded, whitespace collapsed (runs of any Unicode space -> one space, ends cut)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def hash64(s: str) -> int:
    """A stable unsigned 64-bit hash (blake2b: the same on every worker, unlike Python's salted hash())."""
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def text_keys(norm: str) -> set[int]:
    """The join keys of a normalised text: its exact hash, and for texts of SPAN_WORDS words or more its
    winnowed shingle hashes. Exact keys and shingle keys hash different strings ('\\x00' prefix), so a
    short text's exact key never meets a shingle by design, only by a 2^-64 accident that `matches` refutes."""
    keys = {hash64("\x00" + norm)}
    words = norm.split(" ")
    if len(words) >= SPAN_WORDS:
        shingles = [hash64(" ".join(words[i:i + KGRAM])) for i in range(len(words) - KGRAM + 1)]
        keys.update(min(shingles[i:i + WINDOW]) for i in range(len(shingles) - WINDOW + 1))
    return keys


def spans(norm: str) -> set[tuple[str, ...]]:
    """Every run of SPAN_WORDS consecutive words of a normalised text (empty for shorter texts)."""
    words = norm.split(" ")
    return {tuple(words[i:i + SPAN_WORDS]) for i in range(len(words) - SPAN_WORDS + 1)}


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
