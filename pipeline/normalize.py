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
    return [" ".join(p.split()) for p in parts]


def _digest(s: str) -> bytes:
    return hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def hash64(s: str) -> int:
    """A stable unsigned 64-bit hash (blake2b: the same on every worker, unlike Python's salted hash())."""
    return int.from_bytes(_digest(s), "little")


_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplication by it is invertible mod 2^64
_WORDS: dict[str, bytes] = {}  # word -> its hash64 as 8 little-endian bytes, per worker process (Zipf: words repeat)
_WORDS_MAX = 1 << 20


def _hash_array(strings) -> np.ndarray:
    """hash64 of each string, as uint64 (one blake2b call each, no Python int per hash)."""
    return np.frombuffer(b"".join(map(_digest, strings)), "<u8")


def _word_hash_array(words: list[str]) -> np.ndarray:
    """hash64 of each word, as uint64: a cache lookup per word in C (map), blake2b only for new words.
    The digests are collected in a list of this call's own, so a thread clearing the shared cache
    meanwhile (Beam runs DoFns in threads) cannot take one away."""
    cache = _WORDS
    digests = list(map(cache.get, words))
    if None in digests:
        if len(cache) > _WORDS_MAX:
            cache.clear()
        for i, d in enumerate(digests):
            if d is None:
                digests[i] = cache[words[i]] = _digest(words[i])
    return np.frombuffer(b"".join(digests), "<u8")


def batch_text_keys(norms: list[str], groups=None) -> tuple[np.ndarray, np.ndarray]:
    """The join keys of many normalised texts at once: (keys uint64, group int64), one row per distinct
    (group, key), sorted by group then key. groups[i]: the group of norms[i] (its index by default;
    the processing step passes each text's tuple, whose keys are the union of its texts' keys).

    A text's keys: its exact hash, and for texts of SPAN_WORDS words or more its winnowed shingle
    hashes (a shingle's hash: the polynomial sum(word hash * _BASE^(KGRAM-1-j)) mod 2^64 over its
    words, as a rolling hash computes it). A key that meets another by accident (an exact key and a
    shingle hash, two shingles) only proposes a candidate, which `matches` then refutes on the words.
    Computed over the batch's words in one array: shingles and window minima by shifted slices (uint64
    wraps mod 2^64), windows that cross from one text into the next masked out."""
    groups = np.arange(len(norms)) if groups is None else np.asarray(groups, dtype=np.int64)
    keys = [_hash_array(["\x00" + n for n in norms])]
    owner = [groups]
    spaces = [n.count(" ") for n in norms]
    long = [i for i, c in enumerate(spaces) if c >= SPAN_WORDS - 1]
    if long:
        texts = [norms[i] for i in long]
        words = " ".join(texts).split(" ")  # the texts' words back to back (split(" ") inverts join)
        text_of = np.repeat(np.arange(len(texts)), [spaces[i] + 1 for i in long])
        wh = _word_hash_array(words)
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
    if norm.count(" ") < SPAN_WORDS - 1:  # a short text has its exact key only: no arrays for one hash
        return {hash64("\x00" + norm)}
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
