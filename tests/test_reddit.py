"""The Reddit source (pipeline/reddit.py, pipeline/reddit_filters.py) on a generated thread set: the
pairs written equal the pairs the thread structure gives, every line is accounted for, and the output
is the same in every compression and in the DirectRunner's multi-process mode."""

from __future__ import annotations

import bz2
import collections
import dataclasses
import gzip
import io
import json
import lzma
import os
import pickle
import random

import apache_beam as beam
import pytest
import zstandard

from pipeline.lines import FileReadFailed, LineBatch, Retry
from pipeline.reddit import (
    EVENTS,
    SKIPPED,
    ExpandPaths,
    ReadComments,
    RedditOptions,
    RedditPairs,
    check_reddit_counts,
    rejected_counts,
)
from pipeline.reddit_filters import drop_reason, thread_split, trim
from tests import _faulty_fs

WORDS = "alpha beta gamma delta river stone cloud light paper window green quiet sharp bright".split()
OK_KINDS = ("normal", "len9", "len127")


def _body(rng, cid, kind):
    """A body of the given kind; `cid` in it keeps texts distinct."""
    if kind == "deleted":
        return "[deleted]"
    if kind == "removed":
        return "[removed]"
    length = {
        "normal": rng.randint(9, 127),
        "short": rng.randint(1, 8),
        "long": rng.randint(128, 400),
        "len9": 9,
        "len127": 127,
        "len128": 128,
    }[kind]
    text = f"{cid} " + " ".join(rng.choice(WORDS) for _ in range(80))
    return (text * 6)[:length]


def make_thread_set(seed=7, threads=30):
    """(lines of two files, comments, facts): nested threads spread over two files like two months,
    with deleted / removed / short / long comments, posts as parents, parents outside the input,
    a self-parent, duplicates and bad lines."""
    rng = random.Random(seed)
    kinds = ["normal"] * 14 + ["deleted", "removed", "short", "long"]
    comments = {}  # id -> dict(thread, parent (None = the post), body, kind)
    for t in range(threads):
        ids = []
        for k in range(rng.randint(1, 20)):
            cid = f"c{t}n{k}"
            if not ids or rng.random() < 0.25:
                parent = None
            elif rng.random() < 0.07:
                parent = f"gone{t}n{k}"  # a comment outside the input
            else:
                parent = rng.choice(ids[-6:])  # nests deeply
            kind = rng.choice(kinds)
            comments[cid] = dict(thread=f"th{t}", parent=parent, body=_body(rng, cid, kind), kind=kind)
            ids.append(cid)
    # Boundary lengths and a self-parent in thread 0, each a reply to the first comment.
    for kind in ("len9", "len127", "len128"):
        cid = f"b{kind}"
        comments[cid] = dict(thread="th0", parent="c0n0", body=_body(rng, cid, kind), kind=kind)
    comments["self"] = dict(thread="th0", parent="self", body="replying to myself", kind="normal")

    def record(cid, body=None):
        c = comments[cid]
        return {
            "id": cid,
            "parent_id": "t3_" + c["thread"] if c["parent"] is None else "t1_" + c["parent"],
            "link_id": "t3_" + c["thread"],
            "body": c["body"] if body is None else body,
            "author": "someone",
            "subreddit": "test",
            "created_utc": rng.choice([1420070400, "1420070400"]),
            "score": 3,
        }

    lines = [json.dumps(record(cid), ensure_ascii=False).encode() for cid in sorted(comments)]
    dup_ids = rng.sample(sorted(c for c in comments if comments[c]["kind"] == "normal"), 8)
    lines += [json.dumps(record(cid), ensure_ascii=False).encode() for cid in dup_ids]
    # A second copy that differs ([deleted] in a later dump): the copy that passes the filters is kept.
    lines.append(json.dumps(record(dup_ids[0], body="[deleted]")).encode())
    bad = {
        b"{not json": "bad_json",
        b"\xff\xfe\x00 not utf-8": "invalid_utf8",
        json.dumps({"id": "x1", "parent_id": "t3_a", "link_id": "t3_a"}).encode(): "wrong_format",
        json.dumps({"id": "x2", "parent_id": 5, "link_id": "t3_a", "body": "some text here"}).encode(): "wrong_format",
        json.dumps({"id": "x3", "parent_id": "t3_a", "link_id": "t3_a", "body": None}).encode(): "wrong_format",
        b'["an", "array"]': "wrong_format",
        b"": "empty_line",
    }
    lines += list(bad)
    rng.shuffle(lines)
    half = len(lines) // 2
    files = [lines[:half], lines[half:]]
    facts = dict(dup_copies=len(dup_ids) + 1, bad=bad)
    return files, comments, facts


def expected_pairs(comments, extra=0):
    """Sorted pair dicts from the thread structure: a comment of an OK kind whose parent is in the
    input and of an OK kind; extra contexts from the ancestors, whatever their kind."""
    out = []
    for cid, c in comments.items():
        p = c["parent"]
        if c["kind"] not in OK_KINDS or p is None or p == cid or p not in comments:
            continue
        if comments[p]["kind"] not in OK_KINDS:
            continue
        pair = {"context": comments[p]["body"], "response": c["body"]}
        up = comments[p]["parent"]
        for i in range(extra):
            if up is None or up not in comments:
                break
            pair[f"context/{i}"] = trim(comments[up]["body"], 127)
            up = comments[up]["parent"]
        out.append(pair)
    return sorted(out, key=lambda d: json.dumps(d, sort_keys=True))


def expected_counts(files, comments, facts):
    kept = {c for c, v in comments.items() if v["kind"] in OK_KINDS}
    counts = collections.Counter(lines_read=sum(len(f) for f in files), comments_kept=len(kept))
    for reason in facts["bad"].values():
        counts["dropped/" + reason] += 1
    counts["dropped/duplicate"] = facts["dup_copies"]
    for v in comments.values():
        name = {
            "deleted": "deleted",
            "removed": "removed",
            "short": "too_short",
            "long": "too_long",
            "len128": "too_long",
        }.get(v["kind"])
        if name:
            counts["dropped/" + name] += 1
    for cid in kept:
        p = comments[cid]["parent"]
        reason = (
            "parent_is_post"
            if p is None
            else "self_parent"
            if p == cid
            else "parent_missing"
            if p not in comments
            else "parent_dropped"
            if p not in kept
            else None
        )
        counts["unpaired/" + reason if reason else "pairs"] += 1
    counts["pairs_written"] = counts["pairs"]
    return dict(counts)


COMPRESS = {"": lambda b: b, ".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


def zstd_long_window(data: bytes) -> bytes:
    """zstd with a 256 MiB window declared in the frame (streamed, size unknown), as Pushshift's
    --long=31 dumps declare 2 GiB: over the library's default limit of 128 MiB."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=28)
    buf = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(buf, closefd=False) as w:
        w.write(data)
    return buf.getvalue()


def write_files(directory, files, ext):
    paths = []
    for i, lines in enumerate(files):
        data = b"\n".join(lines) + b"\n"
        path = os.path.join(directory, f"RC_2015-0{i + 1}.jsonl{ext}")
        with open(path, "wb") as f:
            f.write(zstd_long_window(data) if ext == ".zst" else COMPRESS[ext](data))
        paths.append(path)
    return paths


def run_reddit(out_dir, sources, mode="in_memory"):
    """Runs one pipeline with a RedditPairs per source (name -> (paths, options)); returns name ->
    (pair dicts sorted, event counts, rejected records sorted, batches)."""
    from pipeline.options import pipeline_options

    opts = pipeline_options([f"--direct_running_mode={mode}"])
    with beam.Pipeline(options=opts) as p:
        for name, (paths, options) in sources.items():
            out = p | f"R_{name}" >> RedditPairs("reddit", paths, options, batch_lines=7)
            (
                out.batches
                | f"B_{name}"
                >> beam.Map(
                    lambda b: json.dumps(
                        [b.corpus, b.path, b.first_line, [x.decode() for x in b.lines], list(b.too_long)]
                    )
                )
                | f"WB_{name}" >> beam.io.WriteToText(os.path.join(out_dir, name + ".batches"), shard_name_template="")
            )
            (
                out.events
                | f"C_{name}" >> beam.combiners.Count.PerElement()
                | f"J_{name}" >> beam.Map(json.dumps)
                | f"WE_{name}" >> beam.io.WriteToText(os.path.join(out_dir, name + ".events"), shard_name_template="")
            )
            out.rejected | f"WR_{name}" >> beam.io.WriteToText(
                os.path.join(out_dir, name + ".rejected"), shard_name_template=""
            )
    results = {}
    for name in sources:

        def read(ext, name=name):
            with open(os.path.join(out_dir, name + ext)) as f:
                return [json.loads(line) for line in f]

        batches = [LineBatch(c, pth, fl, lines, tuple(tl)) for c, pth, fl, lines, tl in read(".batches")]
        pairs = sorted((json.loads(x) for b in batches for x in b.lines), key=lambda d: json.dumps(d, sort_keys=True))
        rejected = sorted(read(".rejected"), key=lambda r: (r["file"], r["line_number"]))
        results[name] = (pairs, dict(read(".events")), rejected, batches)
    return results


@pytest.fixture(scope="module")
def thread_set():
    return make_thread_set()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, thread_set):
    files, _, _ = thread_set
    d = str(tmp_path_factory.mktemp("reddit"))
    paths = {ext: write_files(d, files, ext) for ext in ("", ".gz", ".bz2", ".xz", ".zst")}
    sources = {
        "plain": (paths[""], RedditOptions()),
        "gz": (paths[".gz"], RedditOptions()),
        "bz2": (paths[".bz2"], RedditOptions()),
        "xz": (paths[".xz"], RedditOptions()),
        "zst": ([os.path.join(d, "RC_2015-0*.jsonl.zst")], RedditOptions()),  # a glob
        "ctx": (paths[""], RedditOptions(extra_contexts=2)),
        "train": (paths[""], RedditOptions(split="train", train_fraction=0.5)),
        "test": (paths[""], RedditOptions(split="test", train_fraction=0.5)),
    }
    out = tmp_path_factory.mktemp("out")
    return dict(results=run_reddit(str(out), sources), paths=paths, dir=d)


def test_pairs_and_counts_follow_the_thread_structure(runs, thread_set):
    files, comments, facts = thread_set
    pairs, counts, rejected, _ = runs["results"]["plain"]
    assert pairs == expected_pairs(comments)
    assert len(pairs) > 60  # the generated set is not trivially small
    assert counts == expected_counts(files, comments, facts)
    assert check_reddit_counts(counts) == []
    # Every bad line is a rejected record with its file, line number, reason and text.
    where = {}
    for path, lines in zip(runs["paths"][""], files):
        for n, line in enumerate(lines, 1):
            if line in facts["bad"]:
                where[(path, n)] = (facts["bad"][line], line.decode("utf-8", "replace"))
    assert {(r["file"], r["line_number"]): (r["reason"], r["line"]) for r in rejected} == where
    assert all(
        r["corpus"] == "reddit" and set(r) == {"corpus", "file", "line_number", "reason", "detail", "line"}
        for r in rejected
    )


def test_every_compression_gives_the_same_output(runs):
    plain = runs["results"]["plain"]
    for name in ("gz", "bz2", "xz", "zst"):
        pairs, counts, rejected, _ = runs["results"][name]
        assert pairs == plain[0] and counts == plain[1], name
        assert [(r["line_number"], r["reason"]) for r in rejected] == [
            (r["line_number"], r["reason"]) for r in plain[2]
        ], name


def test_zst_files_need_the_long_window(runs):
    with open(runs["paths"][".zst"][0], "rb") as f:
        data = f.read()
    with pytest.raises(zstandard.ZstdError, match="too much memory"):
        zstandard.ZstdDecompressor().decompressobj().decompress(data)


def test_batches_are_line_batches_without_line_numbers(runs):
    _, counts, _, batches = runs["results"]["plain"]
    assert sum(len(b.lines) for b in batches) == counts["pairs_written"]
    assert all(
        len(b.lines) <= 7
        and b.first_line == 0
        and b.too_long == ()
        and b.corpus == "reddit"
        and b.path == runs["paths"][""][0] + " (+1 more)"
        for b in batches
    )


def test_extra_contexts_are_the_ancestors(runs, thread_set):
    _, comments, _ = thread_set
    pairs, counts, _, _ = runs["results"]["ctx"]
    assert pairs == expected_pairs(comments, extra=2)
    assert any("context/1" in p for p in pairs) and any(p.get("context/0") == "[deleted]" for p in pairs)
    assert counts == runs["results"]["plain"][1]


def test_polyai_split_by_thread(runs, thread_set):
    _, comments, _ = thread_set
    # PolyAI's own test: at train_split 0.5, thread "thread-A" goes to train and "testthread" to test.
    half = RedditOptions(train_fraction=0.5)
    assert (thread_split("thread-A", half), thread_split("testthread", half)) == ("train", "test")
    train, train_counts, _, _ = runs["results"]["train"]
    test, test_counts, _, _ = runs["results"]["test"]
    everything = runs["results"]["plain"][0]
    key = lambda d: json.dumps(d, sort_keys=True)  # noqa: E731
    assert sorted(train + test, key=key) == everything and train and test
    thread_of = {c["body"]: c["thread"] for c in comments.values()}
    for pairs, split in ((train, "train"), (test, "test")):
        assert {thread_split(thread_of[p["response"]], half) for p in pairs} == {split}
    assert train_counts["pairs_written"] == len(train) and train_counts["pairs_other_split"] == len(test)
    assert check_reddit_counts(train_counts) == [] and check_reddit_counts(test_counts) == []


NO_WAIT = Retry(attempts=3, backoff_s=0.0)


def _dofn_outputs(fn, element):
    out = {}
    for o in fn.process(element):
        out.setdefault(getattr(o, "tag", "main"), []).append(getattr(o, "value", o))
    return out


@pytest.mark.parametrize("ext", [".gz", ".bz2", ".xz", ".zst"])
def test_a_truncated_dump_fails_or_is_skipped_whole(runs, thread_set, tmp_path, ext):
    """A cut dump is never a smaller dump: FileReadFailed (the job fails), or with skip nothing of it."""
    files, _, _ = thread_set
    whole = (b"\n".join(files[0]) + b"\n") * 20  # several compressed blocks, so a cut keeps some lines
    data = zstd_long_window(whole) if ext == ".zst" else COMPRESS[ext](whole)
    cut = tmp_path / f"RC_cut.jsonl{ext}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(FileReadFailed) as e:
        _dofn_outputs(ReadComments("reddit", RedditOptions(), "fail", NO_WAIT), str(cut))
    assert e.value.path == str(cut) and e.value.attempts == 3 and e.value.last_line < 20 * len(files[0])
    out = _dofn_outputs(ReadComments("reddit", RedditOptions(), "skip", NO_WAIT), str(cut))
    assert list(out) == [SKIPPED] and out[SKIPPED] == [
        ("reddit", {"file": str(cut), "last_line": e.value.last_line, "cause": e.value.cause})
    ]


def test_a_transient_fault_in_a_dump_heals(runs, tmp_path):
    """The injected file system fails the 2nd raw read of the .zst dump twice: the same comments."""
    path = runs["paths"][".zst"][0]
    clean = _dofn_outputs(ReadComments("reddit", RedditOptions()), path)
    _faulty_fs.set_faults(str(tmp_path / "state"), {os.path.basename(path): {"nth_read": 2, "times": 2}})
    healed = _dofn_outputs(ReadComments("reddit", RedditOptions(), "skip", NO_WAIT), _faulty_fs.url(path))
    assert len(_faulty_fs.injected(str(tmp_path / "state"))) == 2
    assert healed["main"] == clean["main"] and healed[EVENTS] == clean[EVENTS] and SKIPPED not in healed


def test_a_glob_that_matches_nothing_at_run_time(tmp_path):
    pattern = str(tmp_path / "nomatch-*.jsonl.xz")
    with pytest.raises(FileReadFailed, match="no file matches the pattern"):
        _dofn_outputs(ExpandPaths("reddit"), pattern)
    assert _dofn_outputs(ExpandPaths("reddit", "skip"), pattern)[SKIPPED][0][1]["file"] == pattern


def test_rejected_lines_count_in_the_corpus_rejected_total(runs):
    from pipeline.data_config import CorpusConfig
    from pipeline.manifest import corpus_entry
    from pipeline.stats import new_stats

    _, counts, rejected, _ = runs["results"]["plain"]
    by_source = rejected_counts(counts)
    assert sum(by_source.values()) == len(rejected) > 0
    acc = new_stats(8)
    acc.update(lines_read=10, train=9, rejected={"empty_text": 1})
    e = corpus_entry(CorpusConfig("reddit", ("x",), "pair", 1.0), [], acc, [], [], {"counts": counts}, by_source)
    assert e["rejected"]["total"] == 1 + len(rejected) and e["rejected"]["from_source"] == len(rejected)
    assert e["rejected"]["by_reason"]["empty_text"] == 1 + by_source.get("empty_text", 0)


def test_multi_processing_gives_the_same_output(runs, tmp_path):
    got = run_reddit(str(tmp_path), {"plain": (runs["paths"][""], RedditOptions())}, mode="multi_processing")
    pairs, counts, rejected, _ = got["plain"]
    plain = runs["results"]["plain"]
    assert (pairs, counts, rejected) == plain[:3]


def test_check_reddit_counts_names_each_broken_identity():
    good = {
        "lines_read": 10,
        "comments_kept": 6,
        "dropped/deleted": 3,
        "dropped/bad_json": 1,
        "pairs": 4,
        "unpaired/parent_is_post": 2,
        "pairs_written": 3,
        "pairs_other_split": 1,
    }
    assert check_reddit_counts(good) == []
    failed = check_reddit_counts({**good, "lines_read": 11, "pairs": 5})
    assert len(failed) == 3 and failed[0].startswith("lines_read (11) != comments_kept (6) + dropped/* (4)")
    assert failed[1].startswith("comments_kept (6) != pairs (5)") and failed[2].startswith("pairs (5)")


def test_polyai_filters_and_trim():
    o = RedditOptions()
    assert (o.min_length, o.max_length, o.extra_contexts, o.split, o.train_fraction, o.split_buckets) == (
        9,
        127,
        0,
        "all",
        0.9,
        4096,
    )
    assert [drop_reason(b, o) for b in ("x" * 8, "x" * 9, "x" * 127, "x" * 128, "[deleted]", "[removed]")] == [
        "too_short",
        "",
        "",
        "too_long",
        "deleted",
        "removed",
    ]
    assert trim("hello world", 8) == "hello " and trim("hello world", 11) == "hello world"
    assert trim("Hello, world! How", 9) == "Hello, " and trim("a" * 20, 5) == ""
    assert pickle.loads(pickle.dumps(o)) == o
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.min_length = 3
    for bad in (
        dict(min_length=0),
        dict(min_length=200),
        dict(split="dev"),
        dict(extra_contexts=-1),
        dict(train_fraction=0.0),
    ):
        with pytest.raises(ValueError):
            RedditOptions(**bad)


def test_bigquery_input_is_built_offline():
    p = beam.Pipeline("FnApiRunner")
    out = p | RedditPairs("reddit", [], RedditOptions(bigquery_table="my-project:reddit.comments"), batch_lines=512)
    labels = [t.full_label for t in p.transforms_stack[0].parts[0].parts]
    assert any(label.endswith("ReadBigQuery") for label in labels)
    assert all(isinstance(pc, beam.PCollection) for pc in out)
    with pytest.raises(ValueError, match="no comment files"):
        RedditPairs("reddit", [], RedditOptions(), batch_lines=512)
