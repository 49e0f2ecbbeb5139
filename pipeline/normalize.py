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

import unicodedata

import numpy as np

SPAN_WORDS = 13
KGRAM = 7
WINDOW = SPAN_WORDS - KGRAM + 1  # 7 (batch_text_keys' minimum by doubling is written for 5 <= WINDOW <= 8)
EXACT = "exact"  # the rule names written to decontaminated/ and the manifest
SPAN = f"{SPAN_WORDS}_word_span"


def normalize(text: str) -> str:
    """Unicode NFKC, case folded, whitespace collapsed (runs of any Unicode space -> one space, ends cut)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def normalize_many(texts: list[str]) -> list[str]:
    """[normalize(t) for t in texts], with NFKC and case folding done once over the texts joined by NUL:
    NUL is a starter that composes with nothing and folds to itself, so normalising the joined string
    equals joining the normalised texts. Texts that hold a NUL themselves take the per-text path."""
    joined = "\x00".join(texts)
    if joined.count("\x00") != len(texts) - 1:
        return [normalize(t) for t in texts]
    parts = unicodedata.normalize("NFKC", joined).casefold().split("\x00") if texts else []
    # Most texts are collapsed already: no whitespace but single inner spaces (every other whitespace
    # character is non-printable), which is cheaper to check than to split and join.
    return [
        p if p.isprintable() and "  " not in p and p[:1] != " " and p[-1:] != " " else " ".join(p.split())
        for p in parts
    ]


# The word and text hashes (module docstring). Odd multipliers: multiplication by them is invertible mod 2^64.
_BYTE_BASE = 0xC2B2AE3D27D4EB4F  # a word: polynomial over its UTF-8 bytes
_WORD_BASE = 0x165667B19E3779F9  # a text's exact key: polynomial over its word hashes
_BASE = np.uint64(0x9E3779B97F4A7C15)  # a shingle: polynomial over its KGRAM word hashes
_LENGTH = np.uint64(0x27D4EB2F165667C5)  # times the length, added before the final mix
# base -> base^0, base^1, ... mod 2^64, grown on demand to the longest batch (8 bytes a byte of it), per process
_POWERS: dict[int, np.ndarray] = {}


def _powers(base: int, n: int) -> np.ndarray:
    """At least n powers of base mod 2^64 (uint64 products wrap, as the hash wants)."""
    p = _POWERS.get(base)
    if p is None or len(p) < n:
        size = max(n, 64, 2 * len(p) if p is not None else 0)
        p = np.ones(size, np.uint64)
        p[1:] = np.cumprod(np.full(size - 1, base, np.uint64))
        _POWERS[base] = p  # a whole new array: a thread still using the old one is not disturbed
    return p


def _mix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place: a bijection of uint64 that spreads every input bit
    over the output, so the polynomial sums' linear structure does not carry into the keys."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def _segment_hashes(values: np.ndarray, base: int, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per segment (starts, lengths > 0, back to back, covering `values`, which this overwrites):
    mix(sum(values[start + k] * base^k) + length * _LENGTH) mod 2^64. Each value is weighted by base to
    its position in the whole array, the segments summed by np.add.reduceat, and each sum brought back
    to its segment's start by base's inverse to the power of that start: a few passes in C, no gather
    per value."""
    n = len(values)
    values *= _powers(base, n)[:n]
    h = np.add.reduceat(values, starts)
    h *= _powers(pow(base, -1, 1 << 64), n)[starts]
    h += lengths.astype(np.uint64) * _LENGTH
    return _mix(h)


def batch_text_keys(norms: list[str], groups=None) -> tuple[np.ndarray, np.ndarray]:
    """The join keys of many normalised texts at once: (keys uint64, group int64), one row per distinct
    (group, key), sorted by group then key. groups[i]: the group of norms[i] (its index by default;
    the processing step passes each text's tuple, whose keys are the union of its texts' keys).

    A word's hash: _segment_hashes over its UTF-8 bytes + 1 (base _BYTE_BASE); a text's exact key: the
    same over its word hashes (base _WORD_BASE); for texts of SPAN_WORDS words or more, its winnowed
    shingle hashes (a shingle's hash: the polynomial sum(word hash * _BASE^(KGRAM-1-j)) mod 2^64 over
    its words, as a rolling hash computes it). All of it numpy over the batch's bytes in one array
    (words end at a space, texts at a newline: normalised texts hold neither otherwise), with no
    Python work per word: the same keys on every machine and run (no salted hash()). A key that meets
    another by accident (two words, an exact key and a shingle) only proposes a candidate, which
    `matches` then refutes on the words, so collisions cost work, never a wrong removal or a miss."""
    groups = np.arange(len(norms)) if groups is None else np.asarray(groups, dtype=np.int64)
    if not norms:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    data = np.frombuffer(("\n".join(norms) + "\n").encode("utf-8", "surrogatepass"), np.uint8)
    ends = np.flatnonzero((data == 32) | (data == 10))  # each word's end: the space or newline after it
    last = data[ends] == 10  # the word ends its text
    if np.count_nonzero(last) != len(norms):
        raise ValueError("batch_text_keys takes normalised texts (no newline inside)")
    starts = np.concatenate(([0], ends[:-1] + 1))
    values = data.astype(np.uint64)
    values += np.uint64(1)
    values[ends] = 0  # a word's segment runs up to its separator, which adds nothing
    word_hashes = _segment_hashes(values, _BYTE_BASE, starts, ends - starts + 1)
    text_ends = np.flatnonzero(last)
    words = np.diff(text_ends, prepend=-1)  # words per text
    keys = [_segment_hashes(word_hashes.copy(), _WORD_BASE, text_ends - words + 1, words)]
    owner = [groups]
    long = np.flatnonzero(words >= SPAN_WORDS)
    if len(long):
        in_long = np.repeat(words >= SPAN_WORDS, words)
        wh = word_hashes[in_long]  # the long texts' words back to back
        text_of = np.repeat(np.arange(len(long)), words[long])
        n = len(wh) - KGRAM + 1
        shingles = wh[:n].copy()
        for j in range(1, KGRAM):
            shingles *= _BASE
            shingles += wh[j : j + n]
        # Minimum of every WINDOW (7) consecutive shingles, by doubling: windows of 2, 4, then 4 + 4 overlapping.
        m2 = np.minimum(shingles[:-1], shingles[1:])
        m4 = np.minimum(m2[:-2], m2[2:])
        m7 = np.minimum(m4[: -(WINDOW - 4)], m4[WINDOW - 4 :])
        # The window starting at word i spans words i .. i + SPAN_WORDS - 1: keep it if they are one text's.
        inside = text_of[: len(m7)] == text_of[SPAN_WORDS - 1 :]
        keys.append(m7[inside])
        owner.append(groups[long][text_of[: len(m7)][inside]])
    keys, owner = np.concatenate(keys), np.concatenate(owner)
    order = np.lexsort((keys, owner))
    keys, owner = keys[order], owner[order]
    distinct = np.ones(len(keys), dtype=bool)
    distinct[1:] = (keys[1:] != keys[:-1]) | (owner[1:] != owner[:-1])
    return keys[distinct], owner[distinct]


def text_keys(norm: str) -> set[int]:
    """The join keys of one normalised text (batch_text_keys), as a set of ints."""
    return set(batch_text_keys([norm])[0].tolist())


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
