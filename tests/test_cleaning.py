"""The cleaning stages end to end (pipeline/cleaning.py): the Beam job on planted duplicates and planted
evaluation texts, against the same job with the stages off, twice for the bytes, and (slow) on
multi_processing."""

from __future__ import annotations

import glob
import gzip
import json
import math
import os

import pytest

from pipeline import job
from pipeline.cleaning import spec
from pipeline.data_config import parse_data_config
from pipeline.record_schema import decode_record, fingerprint
from tests._tfrecords import read_tfrecords

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec "
    "romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()
LONG_EVAL = " ".join(WORDS[:20]) + "."  # 20 words
SHORT_EVAL = "What is the capital of Freedonia?"
NEG_EVAL = "A man is playing a flute."


def _unique(i: int, j: int) -> str:
    return f"Clean sentence number {i} of part {j} about topic {i * 7 + j}."


# (corpus, record format, symmetric, lines); "planted" comments say what the cleaning must do.
DIRTY = [
    (
        "pairs_a",
        "pair",
        False,
        [
            ["The cat sat on the mat.", "A cat is sitting on a mat."],  # 1 kept (smallest key)
            ["The cat sat on the mat.", "A cat is sitting on a mat."],  # 2 exact duplicate
            ["the  CAT sat on the mat.", "A cat is sitting   on a MAT."],  # 3 case / space variant
            ["Ｔｈｅ cat sat on the mat.", "A cat is\u00a0sitting on a mat."],  # 4 Unicode variant (NFKC)
            ["A cat is sitting on a mat.", "The cat sat on the mat."],  # 5 swapped: another tuple here
            ["Where is it?", "what is the capital of  FREEDONIA?"],  # 6 evaluation text, variant
            ["Where is it?", "What is the capital of Fredonia?"],  # 7 one word differs: kept
            ["Prefix words " + " ".join(WORDS[4:17]) + " suffix.", "x y"],  # 8 13-word span: removed
            ["Prefix words " + " ".join(WORDS[4:16]) + " suffix.", "x z"],  # 9 only 12 words: kept
        ],
    ),
    (
        "pairs_b",
        "pair",
        False,
        [
            ["The cat sat on the mat.", "A cat is sitting on a mat."],  # duplicate of pairs_a:1
            ["Lone pair of pairs_b.", "Its partner."],
        ],
    ),
    (
        "sym",
        "pair",
        True,
        [
            ["Two dogs run.", "Dogs are running."],
            ["dogs are running.", "TWO dogs run."],  # swapped + case: duplicate
            ["Two dogs run.", "Dogs are running!"],  # punctuation differs: kept
        ],
    ),
    (
        "trip",
        "triplet",
        False,
        [
            ["Anchor one.", "Positive one.", "a man is playing a FLUTE."],  # negative is an STS sentence
            ["Anchor two.", "Positive two.", "Negative two."],
        ],
    ),
    (
        "sets",
        "set",
        False,
        [
            {"set": ["S one.", "S two.", "S three."]},
            {"set": ["s three.", "S ONE.", "S two."]},  # same members, other order
        ],
    ),
]
# Clean input: unique texts, nothing evaluation-like; must come out exactly as without the stages.
CLEAN = [
    ("clean_pairs", "pair", False, [[_unique(i, 0), _unique(i, 1)] for i in range(60)]),
    (
        "clean_query",
        "query_with_negatives",
        False,
        [{"query": _unique(i, 2), "pos": [_unique(i, 3), _unique(i, 4)], "neg": [_unique(i, 5)]} for i in range(40)],
    ),
]
REMOVED = {
    ("pairs_a", 2): "duplicate",
    ("pairs_a", 3): "duplicate",
    ("pairs_a", 4): "duplicate",
    ("pairs_a", 6): "exact",
    ("pairs_a", 8): "13_word_span",
    ("pairs_b", 1): "duplicate",
    ("sym", 2): "duplicate",
    ("trip", 1): "exact",
    ("sets", 2): "duplicate",
}


def _write_inputs(root):
    corpora = []
    for name, fmt, symmetric, lines in DIRTY + CLEAN:
        with gzip.open(os.path.join(root, f"{name}.jsonl.gz"), "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)
        corpora.append(
            {
                "name": name,
                "files": [f"{name}.jsonl.gz"],
                "record_format": fmt,
                "weight": 1,
                "symmetric": symmetric,
                "expected_lines": len(lines),
            }
        )
    with open(os.path.join(root, "data_config.json"), "w") as f:
        json.dump({"corpora": corpora}, f)
    with open(os.path.join(root, "eval_texts.txt"), "w", encoding="utf-8") as f:
        f.write(f"{SHORT_EVAL}\n\n{LONG_EVAL}\n")
    with open(os.path.join(root, "sts-test.csv"), "w", encoding="utf-8") as f:
        f.write("genre\tfile\tyear\tid\tscore\tsentence1\tsentence2\n")
        f.write(f"main-captions\tMSRvid\t2012test\t0001\t2.5\t{NEG_EVAL}\tA woman is slicing an onion.\n")
        f.write("too\tshort\n")


def _run(root, out, *flags):
    rc = job.run(
        [
            f"--data_config={root}/data_config.json",
            f"--input_root={root}",
            f"--output_dir={out}",
            "--validation_fraction=0.3",
            "--clean_bucket_tuples=7",
            "--records_per_shard=20",  # clean_pairs: 3 train shards, clean_query: 2
            *flags,
        ]
    )
    assert rc == 0
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cleaning_inputs")
    _write_inputs(root)
    decon = f"--decontaminate={root}/eval_texts.txt,{root}/sts-test.csv"
    base = tmp_path_factory.mktemp("cleaning_runs")
    return {
        "root": root,
        "decon": decon,
        "on": str(base / "on"),
        "again": str(base / "again"),
        "off": str(base / "off"),
        "manifest_on": _run(root, base / "on", decon),
        "manifest_again": _run(root, base / "again", decon),
        "manifest_off": _run(root, base / "off", "--no_deduplicate"),
    }


def _records(out, corpus):
    """split -> sorted serialised records of a corpus."""
    return {
        split: sorted(
            r for path in sorted(glob.glob(os.path.join(out, corpus, f"{split}-*"))) for r in read_tfrecords(path)
        )
        for split in ("train", "validation")
    }


def _fingerprints(lines_of_texts):
    return sorted(tuple(fingerprint(t.strip()) for t in texts) for texts in lines_of_texts)


def _texts(line):
    return (
        line
        if isinstance(line, list)
        else line["set"]
        if "set" in line
        else [line["query"], *line["pos"], *line["neg"]]
    )


def test_planted_duplicates_and_evaluation_texts_are_removed_and_the_rest_kept(runs):
    out, m = runs["on"], runs["manifest_on"]
    by_name = {c["name"]: c for c in m["corpora"]}
    for name, _, _, lines in DIRTY:
        expected = [_texts(x) for i, x in enumerate(lines, 1) if (name, i) not in REMOVED]
        got = [decode_record(r)["fingerprints"] for split in _records(out, name).values() for r in split]
        assert sorted(map(tuple, got)) == _fingerprints(expected), name
        c = by_name[name]
        dups = sum(1 for (n, _), why in REMOVED.items() if n == name and why == "duplicate")
        assert c["duplicates_removed"] == dups, name
        assert (
            c["lines_read"]
            == c["train_examples"]
            + c["validation_examples"]
            + c["rejected"]["total"]
            + c["duplicates_removed"]
            + c["decontaminated"]["total"]
        )
    assert by_name["pairs_a"]["decontaminated"] == {"total": 2, "by_set": {"eval_texts.txt": 2}}
    assert by_name["trip"]["decontaminated"] == {"total": 1, "by_set": {"sts-test.csv": 1}}
    assert by_name["pairs_a"]["overlap"] == {"pairs_b": 1} and by_name["pairs_b"]["overlap"] == {"pairs_a": 1}
    sets = {s["name"]: s for s in m["cleaning"]["decontaminate"]}
    assert (sets["eval_texts.txt"]["texts"], sets["eval_texts.txt"]["removed_lines"]) == (2, 2)
    assert (sets["sts-test.csv"]["texts"], sets["sts-test.csv"]["skipped"], sets["sts-test.csv"]["kind"]) == (
        2,
        2,
        "sts",
    )
    assert m["totals"]["duplicates_removed"] == 6 and m["totals"]["decontaminated"] == 3
    (path,) = glob.glob(os.path.join(out, "decontaminated", "decontaminated-00000-of-00001.jsonl"))
    # In the file's own order: by corpus, file and line number (pipeline/writing.py).
    removed = [json.loads(line) for line in open(path, encoding="utf-8")]
    assert [(r["corpus"], r["line_number"], r["matches"][0]["rule"], r["matches"][0]["set"]) for r in removed] == [
        ("pairs_a", 6, "exact", "eval_texts.txt"),
        ("pairs_a", 8, "13_word_span", "eval_texts.txt"),
        ("trip", 1, "exact", "sts-test.csv"),
    ]
    assert removed[1]["matches"][0]["eval_text"] == LONG_EVAL and removed[2]["matches"][0]["eval_text"] == NEG_EVAL


def test_clean_input_comes_out_record_for_record_as_without_the_stages(runs):
    for name, *_ in CLEAN:
        assert _records(runs["on"], name) == _records(runs["off"], name)
        on = {c["name"]: c for c in runs["manifest_on"]["corpora"]}[name]
        off = {c["name"]: c for c in runs["manifest_off"]["corpora"]}[name]
        for key in ("lines_read", "train_examples", "validation_examples", "token_lengths"):
            assert on[key] == off[key]
    # Without the stages every line is written, duplicates included, and nothing is decontaminated.
    off = runs["manifest_off"]
    assert off["totals"]["train_examples"] + off["totals"]["validation_examples"] == sum(
        len(x[3]) for x in DIRTY + CLEAN
    )
    assert off["cleaning"] == {
        "deduplicate": False,
        "normalization": "Unicode NFKC, case folded, whitespace collapsed",
        "decontaminate": [],
        "decontaminate_documents": False,
        "rule": None,
    }
    assert not os.path.exists(os.path.join(runs["off"], "decontaminated"))


def _file_bytes(out) -> dict:
    """Relative path -> bytes of every file the job wrote but the manifest (TFRecords, rejected/,
    decontaminated/, the tokenizer)."""
    return {
        os.path.relpath(p, out): open(p, "rb").read()
        for p in glob.glob(os.path.join(out, "**", "*"), recursive=True)
        if os.path.isfile(p) and not p.endswith("manifest.json")
    }


# The manifest's fields that describe the run itself, not its data (docs/pipeline.md, "Determinism").
RUN_FIELDS = ("created",)


def _same_bytes_and_manifest(out_a, m_a, out_b, m_b) -> None:
    a, b = _file_bytes(out_a), _file_bytes(out_b)
    assert len(a) > 10 and sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], name
    assert {k: v for k, v in m_a.items() if k not in RUN_FIELDS} == {
        k: v for k, v in m_b.items() if k not in RUN_FIELDS
    }


def test_two_runs_write_the_same_bytes(runs):
    # Every file byte for byte (shards dealt by record hash, sorted within: pipeline/writing.py), and
    # the same manifest but for when it was written.
    _same_bytes_and_manifest(runs["on"], runs["manifest_on"], runs["again"], runs["manifest_again"])
    # Train files: ceil(expected_lines / --records_per_shard); validation files: counted, the same rule.
    for c in runs["manifest_on"]["corpora"]:
        assert len(c["train_files"]) == math.ceil(c["expected_lines"] / 20), c["name"]
        assert len(c["validation_files"]) == max(1, math.ceil(c["validation_examples"] / 20)), c["name"]
    assert "clean_pairs/train-00002-of-00003.tfrecord.gz" in _file_bytes(runs["on"])


def test_buckets_follow_the_data_config():
    config = parse_data_config(
        {"corpora": [{"name": "a", "files": ["a"], "record_format": "pair", "weight": 1, "expected_lines": 2_500_000}]}
    )
    assert spec(config, True, (), 1_000_000)["tuple_buckets"] == 3
    assert spec(config, True, (), 1_000)["key_buckets"] == 2500 // 16 + 1
    assert spec(config, False, (), 1_000_000) is None


@pytest.mark.slow
def test_one_bucket_writes_what_many_write(runs):
    # runs["on"] used 7 tuples per bucket (several buckets); one bucket writes the same bytes.
    out = os.path.join(runs["root"], "one_bucket")
    m = _run(runs["root"], out, runs["decon"], "--clean_bucket_tuples=1000000")
    _same_bytes_and_manifest(out, m, runs["on"], runs["manifest_on"])


@pytest.mark.slow
def test_multi_processing_writes_what_in_memory_writes(runs, tmp_path):
    out = str(tmp_path / "mp")
    m = _run(runs["root"], out, runs["decon"], "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    _same_bytes_and_manifest(out, m, runs["on"], runs["manifest_on"])
