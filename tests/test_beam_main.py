"""End to end: the Beam job on the DirectRunner (FnApiRunner), on real files.

Two pipeline runs per module (module-scoped fixtures): the default run (no flags: bundled samples,
all five shapes) and a run over a corrupt corpus plus one sample corpus (split stability)."""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import subprocess
import sys

import pytest

from pipeline import job
from pipeline.data_config import load_data_config
from pipeline.manifest import read_manifest
from pipeline.record_schema import ROLE_ANCHOR, ROLE_MEMBER, ROLE_NEGATIVE, ROLE_POSITIVE, decode_record, fingerprint
from pipeline.tokenizing import DEMO_TOKENIZER, load_hf_tokenizer
from tests._tfrecords import read_tfrecords

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(REPO, "samples")
FORMAT_OF = {
    "sample_paraphrases": "pair",
    "sample_qa": "pair",
    "sample_captions": "set",
    "sample_nli": "triplet",
    "sample_faq": "query",
    "sample_search": "query_with_negatives",
}


@pytest.fixture(scope="module")
def tokenizer():
    return load_hf_tokenizer(DEMO_TOKENIZER)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """`beam_main.py` with no flags, from a scratch working directory (output: ./out/data)."""
    cwd = tmp_path_factory.mktemp("default_run")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        rc = job.run([])
    finally:
        os.chdir(old)
    assert rc == 0
    return os.path.join(cwd, "out", "data")


def _records(out_dir, rel_files):
    return [decode_record(r) for rel in rel_files for r in read_tfrecords(os.path.join(out_dir, rel))]


def _lines(pattern):
    out = []
    for path in sorted(glob.glob(os.path.join(SAMPLES, "corpora", pattern))):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            out.extend(json.loads(line) for line in f)
    return out


def _texts_and_roles(obj, shape):
    if shape == "pair":
        return obj, [ROLE_ANCHOR, ROLE_POSITIVE]
    if shape == "triplet":
        return obj, [ROLE_ANCHOR, ROLE_POSITIVE, ROLE_NEGATIVE]
    if shape == "set":
        members = obj["set"] if isinstance(obj, dict) else obj
        return members, [ROLE_MEMBER] * len(members)
    neg = obj.get("neg", [])
    return (
        [obj["query"], *obj["pos"], *neg],
        [ROLE_ANCHOR] + [ROLE_POSITIVE] * len(obj["pos"]) + [ROLE_NEGATIVE] * len(neg),
    )


def test_default_run_writes_every_corpus_and_reconciles(default_run):
    m = read_manifest(default_run)
    config = load_data_config(os.path.join(SAMPLES, "data_config.json"))
    assert [c["name"] for c in m["corpora"]] == config.names
    assert m["max_seq_length"] == 128 and m["validation_fraction"] == 0.01 and m["compression"] == "GZIP"
    assert m["tokenizer"]["name"] == DEMO_TOKENIZER and m["tokenizer"]["vocab_size"] == 30522
    assert m["tokenizer"]["pad_token_id"] == 0 and len(m["tokenizer"]["vocab_fingerprint"]) == 64
    for c, cfg in zip(m["corpora"], config.corpora):
        assert c["record_format"] == cfg.record_format == FORMAT_OF[c["name"]]
        assert c["lines_read"] == cfg.expected_lines
        assert c["rejected"] == {"total": 0, "by_reason": {}}
        # The samples repeat tuples (templated texts, and a few planted variants): removed by default.
        assert c["lines_read"] == (
            c["train_examples"] + c["validation_examples"] + c["rejected"]["total"] + c["duplicates_removed"]
        )
        assert c["validation_examples"] > 0 and c["train_files"] and c["validation_files"]
        assert all(f.startswith(c["name"] + "/train-") and f.endswith(".tfrecord.gz") for f in c["train_files"])
        assert len(_records(default_run, c["train_files"])) == c["train_examples"]
        assert len(_records(default_run, c["validation_files"])) == c["validation_examples"]
        tl = c["token_lengths"]
        assert 3 <= tl["p50"] <= tl["p95"] <= tl["max"] <= 128 and tl["truncated_share"] == 0.0
    t = m["totals"]
    assert (
        t["lines_read"]
        == sum(c["lines_read"] for c in m["corpora"])
        == (t["train_examples"] + t["validation_examples"] + t["duplicates_removed"])
    )
    assert t["duplicates_removed"] > 0 and m["cleaning"]["deduplicate"]
    # The rejected file exists (empty) and the manifest is the newest file.
    rejected = glob.glob(os.path.join(default_run, "rejected", "rejected-*.jsonl"))
    assert len(rejected) == 1 and os.path.getsize(rejected[0]) == 0
    newest = max(glob.glob(os.path.join(default_run, "**", "*.*"), recursive=True), key=os.path.getmtime)
    assert os.path.basename(newest) == "manifest.json"


@pytest.mark.parametrize("corpus", sorted(FORMAT_OF))
def test_each_shape_round_trips_to_the_original_texts(default_run, tokenizer, corpus):
    """Every line's texts come back, once per distinct tuple (duplicates are removed by default): the ids
    equal the HF tokenizer's, decoding gives the text (uncased, whitespace aside), roles and
    fingerprints follow the shape."""
    m = read_manifest(default_run)
    entry = next(c for c in m["corpora"] if c["name"] == corpus)
    got = _records(default_run, entry["train_files"] + entry["validation_files"])
    cfg = load_data_config(os.path.join(SAMPLES, "data_config.json")).get(corpus)
    expected = collections.Counter()
    for obj in _lines(cfg.files[0]):
        texts, roles = _texts_and_roles(obj, FORMAT_OF[corpus])
        ids = tokenizer(texts, truncation=True, max_length=128)["input_ids"]
        expected[(tuple(map(tuple, ids)), tuple(roles), tuple(fingerprint(t.strip()) for t in texts))] += 1
    actual = collections.Counter(
        (tuple(map(tuple, r["texts"])), tuple(r["roles"]), tuple(r["fingerprints"])) for r in got
    )
    assert set(actual) <= set(expected) and max(actual.values()) == 1
    assert len(actual) == sum(expected.values()) - entry["duplicates_removed"]
    # Decoding the stored ids gives the texts back.
    for obj in _lines(cfg.files[0])[:50]:
        texts, _ = _texts_and_roles(obj, FORMAT_OF[corpus])
        ids = tokenizer(texts, truncation=True, max_length=128)["input_ids"]
        for text, one in zip(texts, ids):
            decoded = tokenizer.decode(one, skip_special_tokens=True)
            assert "".join(decoded.split()) == "".join(text.lower().split())
        assert any(tuple(map(tuple, ids)) == tuple(map(tuple, r["texts"])) for r in got)


def _write_gz(path, data: bytes):
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(data)


LONG_TEXT = "word " * 20_000  # 100 KB: accepted, cut in characters, then at 128 tokens
CORRUPT_PAIRS = [  # (line bytes, expected reason or None)
    (b'["a good first line", "its good partner"]', None),
    (b'{"not json', "bad_json"),
    (b'["only one text"]', "wrong_format"),
    (b'["one", "two", "three"]', "wrong_format"),
    (b'{"query": "q", "pos": ["p"], "neg": ["n"]}', "wrong_format"),  # a triplet object in a pair corpus
    (b'["", "empty anchor"]', "empty_text"),
    (b'["   ", "blank anchor"]', "empty_text"),
    (b'["number partner", 5]', "non_string_text"),
    (b'["null partner", null]', "non_string_text"),
    (b'["caf\xff invalid byte", "x"]', "invalid_utf8"),
    (b'["' + b"a" * (10 << 20) + b'", "ten megabytes"]', "line_too_long"),
    (b"", "empty_line"),
    (b'["crlf line", "ends with CR LF"]\r', None),
    (("[" + json.dumps(LONG_TEXT) + ', "short"]').encode(), None),
    ('["Unicode: café naïve 東京", "ok"]'.encode("utf-8"), None),
    (b'["a good last line", "without a line break"]', None),
]
CORRUPT_QUERIES = [
    (b'{"query": "q1", "pos": ["p1", "p2"], "neg": ["n1"]}', None),
    (b'{"query": "q2", "pos": ["p"]}', "wrong_format"),
    (b'{"query": "q3", "pos": "p", "neg": ["n"]}', "wrong_format"),
    (b'{"query": "q4", "pos": ["p"], "neg": []}', "wrong_format"),
    (b'{"query": 4, "pos": ["p"], "neg": ["n"]}', "non_string_text"),
    (b'["a", "b"]', "wrong_format"),
    (b'{"query": "q5", "pos": ["p5"], "neg": ["n5"]}', None),
]


@pytest.fixture(scope="module")
def corrupt_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupt")
    corpora = root / "corpora"
    corpora.mkdir()
    _write_gz(corpora / "pairs-0.jsonl.gz", b"\n".join(line for line, _ in CORRUPT_PAIRS))
    _write_gz(corpora / "pairs-1-empty.jsonl.gz", b"")
    (corpora / "queries.jsonl").write_bytes(b"\n".join(line for line, _ in CORRUPT_QUERIES) + b"\n")
    config = root / "data_config.json"
    config.write_text(
        json.dumps(
            {
                "corpora": [
                    {
                        "name": "sample_qa",
                        "files": [os.path.join(SAMPLES, "corpora", "sample_qa-*.jsonl.gz")],
                        "record_format": "pair",
                        "weight": 1,
                    },
                    {"name": "corrupt_pairs", "files": ["pairs-*.jsonl.gz"], "record_format": "pair", "weight": 1},
                    {
                        "name": "corrupt_queries",
                        "files": ["queries.jsonl"],
                        "record_format": "query_with_negatives",
                        "weight": 2,
                    },
                ]
            }
        )
    )
    out = root / "out"
    out.mkdir()
    (out / "stale.txt").write_text("left by an earlier run")
    rc = job.run(
        [
            f"--data_config={config}",
            f"--input_root={corpora}",
            f"--output_dir={out}",
            "--overwrite",
            "--max_line_bytes=1000000",
            "--train_shards=2",
            "--no_format_check",  # most of corrupt_pairs' lines are bad on purpose
            # the default run is in_memory; this one goes through two worker processes
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
        ]
    )
    assert rc == 0
    return str(out)


def _rejected(out):
    rows = []
    for path in glob.glob(os.path.join(out, "rejected", "*.jsonl")):
        with open(path, encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f)
    return rows


@pytest.mark.parametrize("corpus,lines", [("corrupt_pairs", CORRUPT_PAIRS), ("corrupt_queries", CORRUPT_QUERIES)])
def test_corrupt_corpus_rejects_each_bad_line_with_its_reason(corrupt_run, tokenizer, corpus, lines):
    assert not os.path.exists(os.path.join(corrupt_run, "stale.txt"))  # --overwrite cleared it
    m = read_manifest(corrupt_run)
    c = next(c for c in m["corpora"] if c["name"] == corpus)
    rejected = sorted((r["line_number"], r["reason"]) for r in _rejected(corrupt_run) if r["corpus"] == corpus)
    assert rejected == [(i + 1, reason) for i, (_, reason) in enumerate(lines) if reason]
    good = [line for line, reason in lines if reason is None]
    assert c["lines_read"] == len(lines)
    assert c["train_examples"] + c["validation_examples"] == len(good)
    assert c["rejected"]["total"] == len(rejected)
    assert c["rejected"]["by_reason"] == dict(collections.Counter(r for _, r in rejected))
    records = _records(corrupt_run, c["train_files"] + c["validation_files"])
    shape = "pair" if corpus == "corrupt_pairs" else "query_with_negatives"
    expected = sorted(
        tuple(
            map(
                tuple,
                tokenizer(_texts_and_roles(json.loads(g.decode("utf-8")), shape)[0], truncation=True, max_length=128)[
                    "input_ids"
                ],
            )
        )
        for g in good
    )
    assert sorted(tuple(map(tuple, r["texts"])) for r in records) == expected


def test_corrupt_run_details(corrupt_run):
    m = read_manifest(corrupt_run)
    pairs = next(c for c in m["corpora"] if c["name"] == "corrupt_pairs")
    assert len(pairs["files"]) == 2 and len(pairs["train_files"]) == 2  # the empty file counts, --train_shards
    # The 100 KB text is cut to 128 tokens and counted as truncated.
    assert pairs["token_lengths"]["max"] == 128
    assert pairs["token_lengths"]["truncated_share"] == pytest.approx(1 / pairs["token_lengths"]["texts"])
    rows = [r for r in _rejected(corrupt_run) if r["corpus"] == "corrupt_pairs"]
    for r in rows:
        assert set(r) == {"corpus", "file", "line_number", "reason", "detail", "line"}
        assert r["file"].endswith("pairs-0.jsonl.gz") and len(r["line"]) <= 1000
    too_long = next(r for r in rows if r["reason"] == "line_too_long")
    assert too_long["line"] == '["' + "a" * 998
    assert next(r for r in rows if r["reason"] == "invalid_utf8")["line"].startswith('["caf\ufffd')


def test_validation_split_is_the_same_across_runs(default_run, corrupt_run):
    def split_sets(out):
        c = next(c for c in read_manifest(out)["corpora"] if c["name"] == "sample_qa")
        val = {tuple(r["fingerprints"]) for r in _records(out, c["validation_files"])}
        train = {tuple(r["fingerprints"]) for r in _records(out, c["train_files"])}
        return c["validation_examples"], val, train

    n1, val1, train1 = split_sets(default_run)
    n2, val2, train2 = split_sets(corrupt_run)
    assert n1 == n2 > 0 and val1 == val2 and train1 == train2
    assert not val1 & train1  # identical lines never straddle the splits


def test_non_empty_output_dir_is_refused(default_run, capsys):
    rc = job.run([f"--output_dir={default_run}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--overwrite" in err
    assert os.path.exists(os.path.join(default_run, "manifest.json"))


@pytest.mark.parametrize(
    "corpus_patch,message",
    [
        ({"record_format": "quad"}, "field 'record_format' is 'quad'"),
        ({"weight": 0}, "field 'weight' must be a positive number"),
        ({"weight": -2.5}, "field 'weight' must be a positive number"),
        ({"files": ["nothing-*.jsonl.gz"]}, "with missing files"),
    ],
)
def test_config_errors_end_the_job_before_any_work(tmp_path, capsys, corpus_patch, message):
    corpus = {"name": "c1", "files": ["c1.jsonl.gz"], "record_format": "pair", "weight": 1, **corpus_patch}
    _write_gz(tmp_path / "c1.jsonl.gz", b'["a", "b"]\n')
    (tmp_path / "cfg.json").write_text(json.dumps({"corpora": [corpus]}))
    out = tmp_path / "out"
    rc = job.run([f"--data_config={tmp_path / 'cfg.json'}", f"--output_dir={out}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "corpus 'c1'" in err
    assert not out.exists()


def test_duplicate_names_and_unknown_corpora_are_config_errors(tmp_path, capsys):
    _write_gz(tmp_path / "c1.jsonl.gz", b'["a", "b"]\n')
    c = {"name": "c1", "files": ["c1.jsonl.gz"], "record_format": "pair", "weight": 1}
    (tmp_path / "dup.json").write_text(json.dumps({"corpora": [c, c]}))
    assert job.run([f"--data_config={tmp_path / 'dup.json'}", f"--output_dir={tmp_path / 'o1'}"]) == 2
    assert "corpus 'c1': duplicate name" in capsys.readouterr().err
    (tmp_path / "one.json").write_text(json.dumps({"corpora": [c]}))
    assert job.run([f"--data_config={tmp_path / 'one.json'}", "--corpora=c2", f"--output_dir={tmp_path / 'o2'}"]) == 2
    assert "unknown corpus 'c2'" in capsys.readouterr().err


def test_command_line_exit_status_and_message(tmp_path):
    """The script itself: a config error exits non-zero with the message on stderr."""
    (tmp_path / "cfg.json").write_text(
        json.dumps({"corpora": [{"name": "x", "files": ["x"], "record_format": "pair", "weight": 0}]})
    )
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "beam_main.py"),
            f"--data_config={tmp_path / 'cfg.json'}",
            f"--output_dir={tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "beam_main.py: error: data config: corpus 'x': field 'weight' must be a positive number" in proc.stderr


# ----------------------------------------------------------------------------------- prompts


def test_prompts_are_tokenized_with_their_texts_and_recorded(prompted_data_dir, tiny_bert_dir):
    """The job tokenizes prompt + text (as sentence-transformers' encode(prompt_name=...) does, cut at
    max_seq_length with the prompt), fingerprints the texts alone, and records the prompts."""
    from transformers import AutoTokenizer

    from pipeline.manifest import load_manifest
    from tests._prompted import PROMPTED_LINES, PROMPTED_MAX_SEQ_LENGTH

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    ids = lambda texts: [tuple(x) for x in tok(texts, truncation=True, max_length=PROMPTED_MAX_SEQ_LENGTH)["input_ids"]]
    m = read_manifest(prompted_data_dir)
    assert m["prompts"] == {"query": "query: ", "passage": "passage: ", "unused": "never applied: "}
    assert m["default_prompt_name"] == "query"
    entries = {c["name"]: c for c in m["corpora"]}
    assert entries["search"]["prompts"] == {
        "anchor": {"name": "query", "text": "query: "},
        "candidate": {"name": "passage", "text": "passage: "},
    }
    assert entries["plain"]["prompts"] == {}
    prefix = {
        "search": {ROLE_ANCHOR: "query: ", ROLE_POSITIVE: "passage: ", ROLE_NEGATIVE: "passage: "},
        "captions": {ROLE_MEMBER: "passage: "},
        "plain": {},
    }
    for corpus, lines in PROMPTED_LINES.items():
        expected = collections.Counter()
        lengths = []
        for obj in lines:
            texts, roles = _texts_and_roles(
                obj, {"search": "query_with_negatives", "captions": "set", "plain": "pair"}[corpus]
            )
            prompted = ids([prefix[corpus].get(r, "") + t for t, r in zip(texts, roles)])
            lengths += map(len, prompted)
            expected[(tuple(prompted), tuple(roles), tuple(fingerprint(t.strip()) for t in texts))] += 1
        got = _records(prompted_data_dir, entries[corpus]["train_files"])
        assert (
            collections.Counter(
                (tuple(map(tuple, r["texts"])), tuple(r["roles"]), tuple(r["fingerprints"])) for r in got
            )
            == expected
        ), corpus
        # The length statistics count the prompt's tokens; the long search texts were cut with it.
        tl = entries[corpus]["token_lengths"]
        mean = round(sum(lengths) / len(lengths), 3)
        assert (tl["texts"], tl["max"], tl["mean"]) == (len(lengths), max(lengths), mean)
    assert entries["search"]["token_lengths"]["max"] == PROMPTED_MAX_SEQ_LENGTH
    first = ids(["query: where is paris"])[0]
    assert tok.convert_ids_to_tokens(list(first))[:4] == ["[CLS]", "query", ":", "where"]
    # The typed manifest the trainer reads.
    typed = load_manifest(prompted_data_dir)
    assert typed.prompts == m["prompts"] and typed.default_prompt_name == "query"
    assert {k: (p.name, p.text) for k, p in typed.corpus("captions").prompts.items()} == {
        "anchor": ("passage", "passage: "),
        "candidate": ("passage", "passage: "),
    }
    assert typed.corpus("plain").prompts == {}
    # The planner's --manifest profiles take these prompted lengths as they are (nothing added twice).
    from trainer.plan.length_profiles import manifest_profiles

    search = next(p for p in manifest_profiles(typed) if p.name == "search")
    assert {(c.median, c.prompt_tokens) for c in search.columns} == {(entries["search"]["token_lengths"]["p50"], 0)}
