"""Duplicate tuples written once, and the one decision per tuple of the cleaning stages.

"The same tuple" compares normalised texts (pipeline/normalize.py) within one kind of tuple, a record
format (a symmetric pair or triplet corpus is its own kind): across corpora of that kind and within each.

  pair, triplet   the texts in order; in a symmetric corpus anchor and positive as an unordered pair,
                  so (a, b) and (b, a) are one tuple (a triplet keeps its negative in place)
  set             the members as a multiset (order does not matter: members are drawn)
  query           the query, and the positives as a multiset (one is drawn)
  query_with_negatives  the query, the positives as a multiset, the negatives as a multiset

The canonical form is hashed to a 128-bit tuple key (blake2b; two different tuples share one with
probability ~1e-20 at a billion tuples). Of the copies of a tuple the one with the smallest
(corpus, file, line number, hash of the raw line) stays: not the first to arrive, so every runner and
every run keep the same one. Its split stays that of its own line.

`Decide` sees every copy of a tuple at once (the copies are grouped by tuple key, in buckets of tuple
keys: one CoGroupByKey element per bucket) together with the evaluation-text candidates of
pipeline/decontaminate.py. A tuple any of whose texts (negatives included) matches an evaluation text
is removed in every copy, each copy counted as decontaminated (not as a duplicate) and written to
decontaminated/; otherwise its smallest copy is written and the others counted as duplicates.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict

import apache_beam as beam
import numpy as np

from pipeline import normalize, stats
from pipeline.record_schema import FORMATS, ROLE_NEGATIVE, ROLE_POSITIVE

DECONTAMINATED = "decontaminated"
# Kept records leave a bucket in lists of at most this many (the sink writes one list per call).
OUT_BATCH = 512


def canonical(record_format: str, symmetric: bool, norms, roles) -> str:
    """The canonical form of a tuple's normalised texts (module docstring), as a string."""
    fmt = FORMATS[record_format]
    if fmt.selection == "fixed" and not symmetric:  # the common case, without the groups below
        return "\x1e".join([record_format, *norms])
    if fmt.selection == "two_members":
        groups = [sorted(norms)]
    elif fmt.selection == "fixed":
        groups = [[t] for t in norms]
        if symmetric:
            groups[:2] = [sorted(norms[:2])]
    else:
        groups = [
            [norms[0]],
            sorted(t for t, r in zip(norms, roles) if r == ROLE_POSITIVE),
            sorted(t for t, r in zip(norms, roles) if r == ROLE_NEGATIVE),
        ]
    kind = record_format + ("+symmetric" if symmetric and fmt.selection == "fixed" else "")
    # Normalised texts hold no \x1e or \x1f (str.split() counts them as whitespace): safe separators.
    return "\x1e".join([kind, *("\x1f".join(g) for g in groups)])


def tuple_key(record_format: str, symmetric: bool, norms, roles) -> bytes:
    return hashlib.blake2b(
        canonical(record_format, symmetric, norms, roles).encode("utf-8", "surrogatepass"), digest_size=16
    ).digest()


def tuple_bucket(tk: bytes, buckets: int) -> int:
    return int.from_bytes(tk[:8], "little") % buckets


def tuple_prefixes(joined: bytes) -> np.ndarray:
    """The first 8 bytes of each 16-byte tuple key of `joined` (keys back to back), as the uint64s
    `tuple_bucket` reads: a batch's buckets and a bucket's repeats with numpy."""
    return np.frombuffer(joined, "<u8")[::2]


NO_DIGEST = bytes(8)


def line_digest(raw: bytes, line: int) -> bytes:
    """The last part of the order key (corpus, path, line number, line digest): which copy stays is the
    smallest. Sources without line numbers (Parquet rows, joined records) have line 0, and the raw
    line's hash breaks their ties (equal raw lines give equal records anyway); a numbered line is
    already told apart by its number, so it gets NO_DIGEST and costs no hash."""
    return NO_DIGEST if line else hashlib.blake2b(raw, digest_size=8).digest()


SPLIT_CODES = {"train": b"t", "validation": b"v"}
SPLIT_OF_CODE = {v[0]: k for k, v in SPLIT_CODES.items()}
TEXT_SEP = "\x1f"  # between a tuple's normalised texts (normalisation leaves none inside them)
ENTRY_SEP = "\x1e"  # between the entries' texts in a packed element


def pack_columns(corpus: str, path: str, tks, lines, digests, splits, records, texts) -> tuple:
    """A bucket's share of one batch as few objects as possible (Beam's coder pays per object, and the
    shuffle carries a billion of these): (corpus, path, tuple keys (16 bytes each), line numbers
    (int64), raw-line hashes (8 bytes each), splits (a byte each), [record], the normalised texts as
    one string (ENTRY_SEP between entries; "" when not decontaminating)). The arguments are columns,
    one item an entry; texts: each entry's normalised texts joined by TEXT_SEP, or None."""
    return (
        corpus,
        path,
        b"".join(tks),
        np.array(lines, "<i8").tobytes(),
        b"".join(digests),
        b"".join([SPLIT_CODES[s] for s in splits]),
        list(records),
        ENTRY_SEP.join(texts) if texts else "",
    )


def pack_entries(corpus: str, path: str, entries: list) -> tuple:
    """pack_columns of entries (tk, line, digest, split, record, norms); norms () when not decontaminating."""
    tks, lines, digests, splits, records, norms = zip(*entries)
    texts = [TEXT_SEP.join(n) for n in norms] if norms[0] else None
    return pack_columns(corpus, path, tks, lines, digests, splits, records, texts)


def unpack_entries(packed: tuple, which=None):
    """(tuple key, order key, split, record, normalised texts joined by TEXT_SEP: `entry_texts` splits
    them, for the few tuples that need them) per entry of pack_entries, or per entry number in `which`."""
    corpus, path, tks, lines, digests, splits, records, texts = packed
    joined = texts.split(ENTRY_SEP) if texts else None
    lines = np.frombuffer(lines, "<i8")
    for i in range(len(records)) if which is None else which:
        yield (
            tks[16 * i : 16 * i + 16],
            (corpus, path, int(lines[i]), digests[8 * i : 8 * i + 8]),
            SPLIT_OF_CODE[splits[i]],
            records[i],
            joined[i] if joined else "",
        )


def _special(packs: list, hit_keys) -> list[np.ndarray]:
    """Per packed element, a mask of the entries `Decide` looks at one by one: those whose tuple key's
    first 8 bytes occur more than once in the bucket (a tuple with copies or, rarely, another tuple
    sharing the prefix: the full key tells them apart) or are a candidate's. Computed with numpy over
    the bucket's keys, so the tuples with one copy and no candidate (most) cost no Python object each."""
    prefixes = [tuple_prefixes(p[2]) for p in packs]
    every = np.concatenate(prefixes)
    order = np.argsort(every, kind="stable")
    same = every[order[1:]] == every[order[:-1]]
    special = np.isin(every, np.frombuffer(b"".join(hit_keys), "<u8")[::2])
    special[order[1:][same]] = True
    special[order[:-1][same]] = True
    return np.split(special, np.cumsum([len(x) for x in prefixes])[:-1])


def entry_texts(joined: str) -> tuple[str, ...]:
    """An unpacked entry's normalised texts ("" when not decontaminating: none)."""
    return tuple(joined.split(TEXT_SEP)) if joined else ()


def _verified(norms, candidates) -> list[dict]:
    """The candidates that truly match a text of the tuple: [{set, rule, eval_text, text}], sorted."""
    found = []
    for name, eval_norm, eval_text in candidates:
        eval_spans = normalize.spans(eval_norm)
        for norm in norms:
            rule = normalize.matches(norm, eval_norm, eval_spans)
            if rule:
                found.append({"set": name, "rule": rule, "eval_text": eval_text, "text": norm})
                break
    return sorted(found, key=lambda m: (m["set"], m["eval_text"]))


class Decide(beam.DoFn):
    """(bucket, {"copies": [pack_entries(...), ...], "hits": [(tuple key, set, norm, text), ...]}) -> kept
    records on output_tag(corpus, split), removed tuples on DECONTAMINATED, and per corpus a stats
    delta on STATS (train, validation, duplicates, decontaminated, by set, overlap)."""

    def __init__(self, deduplicate: bool, max_seq_length: int, output_tag, stats_tag: str):
        self._deduplicate, self._max_seq_length = deduplicate, max_seq_length
        self._output_tag, self._stats_tag = output_tag, stats_tag

    def process(self, element):
        _, grouped = element
        hits = defaultdict(set)
        for tk, name, norm, text in grouped.get("hits", ()):
            hits[tk].add((name, norm, text))
        packs = list(grouped["copies"])
        if not packs:
            return
        acc = defaultdict(lambda: stats.new_stats(self._max_seq_length))
        out = defaultdict(list)
        copies = defaultdict(list)
        for packed, special in zip(packs, _special(packs, list(hits))):
            corpus, records, splits = packed[0], packed[6], np.frombuffer(packed[5], np.uint8)
            for code, split in SPLIT_OF_CODE.items():  # the plain entries: kept, by split, as they come
                plain = np.flatnonzero(~special & (splits == code)).tolist()
                if plain:
                    out[(corpus, split)].extend([records[i] for i in plain])
                    acc[corpus][split] += len(plain)
            for e in unpack_entries(packed, np.flatnonzero(special).tolist()):
                copies[e[0]].append(e)
        kept = []
        removed = []
        for tk, group in copies.items():
            group.sort(key=lambda e: e[1])
            matched = _verified(entry_texts(group[0][4]), sorted(hits[tk])) if tk in hits else []
            corpora = sorted({e[1][0] for e in group})
            for a in corpora:  # overlap: every tuple, contaminated or not
                for b in corpora:
                    if a != b:
                        acc[a]["overlap"][b] = acc[a]["overlap"].get(b, 0) + 1
            if matched:
                for e in group:
                    removed.append((e, matched))
                continue
            stay = group[:1] if self._deduplicate else group
            kept.extend(stay)
            for e in group[len(stay) :]:
                acc[e[1][0]]["duplicates"] += 1
        kept.sort(key=lambda e: e[1])
        for _, (corpus, *_rest), split, record, _norms in kept:
            acc[corpus][split] += 1
            out[(corpus, split)].append(record)
        for (corpus, split), records in out.items():
            for i in range(0, len(records), OUT_BATCH):
                yield beam.pvalue.TaggedOutput(self._output_tag(corpus, split), records[i : i + OUT_BATCH])
        removed.sort(key=lambda r: r[0][1])
        for (_, (corpus, path, line, _digest), split, _record, norms), matched in removed:
            a = acc[corpus]
            a["decontaminated"] += 1
            for name in sorted({m["set"] for m in matched}):
                a["decontaminated_by_set"][name] = a["decontaminated_by_set"].get(name, 0) + 1
            yield beam.pvalue.TaggedOutput(
                DECONTAMINATED,
                json.dumps(
                    {
                        "corpus": corpus,
                        "file": path,
                        "line_number": line or None,
                        "split": split,
                        "matches": matched,
                        "texts": list(entry_texts(norms)),
                    },
                    ensure_ascii=False,
                ),
            )
        for corpus in sorted(acc):
            yield beam.pvalue.TaggedOutput(self._stats_tag, (corpus, acc[corpus]))
