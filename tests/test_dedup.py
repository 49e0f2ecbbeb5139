"""Which tuples are the same and which copy stays (pipeline/dedup.py), on the DoFn itself."""

import json

from pipeline import dedup, normalize, processing
from pipeline.record_schema import ROLE_ANCHOR, ROLE_MEMBER, ROLE_NEGATIVE, ROLE_POSITIVE

PAIR, TRIPLET = [ROLE_ANCHOR, ROLE_POSITIVE], [ROLE_ANCHOR, ROLE_POSITIVE, ROLE_NEGATIVE]


def _key(fmt, symmetric, texts, roles):
    return dedup.tuple_key(fmt, symmetric, [normalize.normalize(t) for t in texts], roles)


def test_the_same_tuple_by_record_format():
    assert _key("pair", False, ["A  b", "C"], PAIR) == _key("pair", False, ["a b", "c"], PAIR)
    assert _key("pair", False, ["a", "b"], PAIR) != _key("pair", False, ["b", "a"], PAIR)
    assert _key("pair", True, ["a", "b"], PAIR) == _key("pair", True, ["B", "a"], PAIR)
    assert _key("pair", True, ["a", "b"], PAIR) != _key("pair", False, ["a", "b"], PAIR)  # another kind
    assert _key("triplet", True, ["a", "b", "n"], TRIPLET) == _key("triplet", True, ["b", "a", "n"], TRIPLET)
    assert _key("triplet", True, ["a", "b", "n"], TRIPLET) != _key("triplet", True, ["a", "n", "b"], TRIPLET)
    members = [ROLE_MEMBER] * 3
    assert _key("set", False, ["x", "y", "y"], members) == _key("set", False, ["y", "x", "y"], members)
    assert _key("set", False, ["x", "y", "y"], members) != _key("set", False, ["x", "x", "y"], members)
    q = [ROLE_ANCHOR, ROLE_POSITIVE, ROLE_POSITIVE, ROLE_NEGATIVE]
    assert _key("query_with_negatives", False, ["q", "p1", "p2", "n"], q) == _key(
        "query_with_negatives", False, ["q", "p2", "p1", "n"], q
    )
    # A text moving from the positives to the negatives is another tuple.
    assert _key("query_with_negatives", False, ["q", "p1", "n", "p2"], q) != _key(
        "query_with_negatives", False, ["q", "p1", "p2", "n"], q
    )


def _entry(corpus, line, texts, split="train", fmt="pair", roles=PAIR):
    norms = tuple(normalize.normalize(t) for t in texts)
    return (
        dedup.tuple_key(fmt, False, norms, roles),
        (corpus, f"/in/{corpus}.jsonl.gz", line, dedup.line_digest(b"r", line)),
        split,
        f"{corpus}:{line}".encode(),
        norms,
    )


def _pack(entries):
    """One packed element per entry (what ProcessLineBatch sends for a batch of one line)."""
    return [dedup.pack_entries(e[1][0], e[1][1], [(e[0], e[1][2], e[1][3], e[2], e[3], e[4])]) for e in entries]


def test_packing_round_trips():
    entries = [_entry("a", 3, ["x", "y"]), _entry("a", 0, ["Z"], "validation")]
    packed = dedup.pack_entries("a", "/in/a.jsonl.gz", [(e[0], e[1][2], e[1][3], e[2], e[3], e[4]) for e in entries])
    assert [(*e[:4], dedup.entry_texts(e[4])) for e in dedup.unpack_entries(packed)] == entries
    assert [e[4] for e in dedup.unpack_entries(packed)] == ["x\x1fy", "z"]


def _decide(copies, hits=(), deduplicate=True):
    copies = [_pack(c) for c in copies]
    out = list(
        dedup.Decide(deduplicate, 4, processing.output_tag, processing.STATS).process(
            (0, {"copies": [p for c in copies for p in c], "hits": list(hits)})
        )
    )
    by_tag = {}
    for o in out:
        by_tag.setdefault(o.tag, []).append(o.value)
    return by_tag


def test_the_smallest_copy_stays_whatever_the_arrival_order():
    copies = [_entry("b", 1, ["x", "y"]), _entry("a", 9, ["X", "y"], "validation"), _entry("a", 3, ["x ", "Y"])]
    for order in ([copies], [copies[::-1]], [[c] for c in copies[1:] + copies[:1]]):
        out = _decide(order)
        assert out == {"train__a": [[b"a:3"]], "stats": out["stats"]}
        stats = dict(out["stats"])
        assert (stats["a"]["train"], stats["a"]["duplicates"], stats["b"]["duplicates"]) == (1, 1, 1)
        assert stats["a"]["overlap"] == {"b": 1} and stats["b"]["overlap"] == {"a": 1}
    kept = _decide([copies], deduplicate=False)
    assert kept["train__a"] == [[b"a:3"]] and kept["validation__a"] == [[b"a:9"]] and kept["train__b"] == [[b"b:1"]]


def test_a_verified_hit_removes_every_copy_and_an_unverified_one_nothing():
    long_eval = " ".join(f"w{i}" for i in range(20))
    tup = _entry("a", 1, ["intro " + " ".join(f"w{i}" for i in range(3, 16)), "other"])
    near = _entry("a", 2, ["intro " + " ".join(f"w{i}" for i in range(3, 15)), "other"])  # 12 words
    copy = _entry("b", 5, ["intro " + " ".join(f"w{i}" for i in range(3, 16)), "other"])
    hits = [(tup[0], "set1", long_eval, long_eval), (near[0], "set1", long_eval, long_eval)]  # both proposed
    out = _decide([[tup, near, copy]], hits)
    assert out["train__a"] == [[b"a:2"]]
    removed = [json.loads(r) for r in out["decontaminated"]]
    assert [(r["corpus"], r["line_number"]) for r in removed] == [("a", 1), ("b", 5)]
    assert removed[0]["matches"] == [{"set": "set1", "rule": "13_word_span", "eval_text": long_eval, "text": tup[4][0]}]
    stats = dict(out["stats"])
    assert (stats["a"]["decontaminated"], stats["a"]["duplicates"], stats["a"]["decontaminated_by_set"]) == (
        1,
        0,
        {"set1": 1},
    )
