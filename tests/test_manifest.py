import json

import pytest

from pipeline.data_config import CorpusConfig
from pipeline.manifest import (
    Manifest,
    ManifestError,
    build_manifest,
    cleaning_summary,
    corpus_entry,
    load_manifest,
    read_manifest,
    write_manifest,
)
from pipeline.stats import new_stats


def _acc(lines, train, val, rejected):
    a = new_stats(4)
    a.update(lines_read=lines, train=train, validation=val, rejected=rejected, texts=2, truncated=1)
    a["hist"][2] = 1
    a["hist"][4] = 1
    return a


CORPUS = CorpusConfig("c", ("c-*.jsonl.gz",), "pair", 3.0, 10, True)


def test_entry_and_manifest_fields(tmp_path):
    e = corpus_entry(
        CORPUS,
        ["/in/c-0.jsonl.gz"],
        _acc(10, 7, 1, {"bad_json": 2}),
        ["c/train-00000-of-00001.tfrecord.gz"],
        ["c/validation-00000-of-00001.tfrecord.gz"],
    )
    assert e["rejected"] == {"total": 2, "by_reason": {"bad_json": 2}}
    assert e["dropped_texts"] == {"empty_member": 0}
    acc = _acc(10, 8, 0, {"empty_text": 2})
    acc["dropped"] = {"empty_member": 5}  # texts out of lines that stay: not lines, the counts still reconcile
    assert corpus_entry(CORPUS, [], acc, [], [])["dropped_texts"] == {"empty_member": 5}
    assert e["token_lengths"] == {"texts": 2, "mean": 3.0, "p50": 2, "p95": 4, "max": 4, "truncated_share": 0.5}
    assert (e["weight"], e["symmetric"], e["expected_lines"]) == (3.0, True, 10)
    tok = {"name": "t", "vocab_fingerprint": "f" * 64, "vocab_size": 5, "pad_token_id": 0}
    m = build_manifest([e], tok, 4, 0.01, created="2026-01-01T00:00:00+00:00")
    assert m["totals"] == {
        "lines_read": 10,
        "train_examples": 7,
        "validation_examples": 1,
        "rejected": 2,
        "skipped_files": 0,
        "duplicates_removed": 0,
        "decontaminated": 0,
    }
    assert m["schema_version"] == 1 and m["compression"] == "GZIP" and m["tokenizer"] == tok
    path = write_manifest(str(tmp_path), m)
    assert path == str(tmp_path / "manifest.json") and not (tmp_path / "manifest.json.tmp").exists()
    assert read_manifest(str(tmp_path)) == m == read_manifest(path)
    typed = load_manifest(str(tmp_path))
    assert typed.raw == m and typed.pad_token_id == 0 and typed.max_seq_length == 4 and typed.compression == "GZIP"
    (c,) = typed.corpora
    assert (c.name, c.record_format, c.weight, c.symmetric, c.train_examples, c.validation_examples) == (
        "c",
        "pair",
        3.0,
        True,
        7,
        1,
    )
    assert c.validation_files == (str(tmp_path / "c/validation-00000-of-00001.tfrecord.gz"),)
    assert load_manifest(path).corpora == typed.corpora
    remote = Manifest.from_json(m, "gs://b/out/")
    assert remote.corpus("c").train_files == ("gs://b/out/c/train-00000-of-00001.tfrecord.gz",)
    with pytest.raises(ManifestError, match="corpus 'nope' is not in the manifest"):
        typed.corpus("nope")


def test_typed_manifest_checks_what_the_trainer_needs():
    tok = {"name": "t", "vocab_fingerprint": "f" * 64, "vocab_size": 5, "pad_token_id": 0}
    entry = {"name": "c", "shape": "set", "weight": 1, "train_files": ["c/train-0.tfrecord.gz"]}
    # A manifest written before `shape` was renamed still reads.
    assert Manifest.from_json({"corpora": [entry], "tokenizer": tok}, "d").corpora[0].record_format == "set"
    with pytest.raises(ManifestError, match="unknown record format 'quad'"):
        Manifest.from_json({"corpora": [dict(entry, shape="quad")], "tokenizer": tok}, "d")
    with pytest.raises(ManifestError, match="lacks field 'train_files'"):
        Manifest.from_json({"corpora": [{"name": "c", "record_format": "pair", "weight": 1}], "tokenizer": tok}, "d")
    with pytest.raises(ManifestError, match="pad_token_id is missing"):
        Manifest.from_json({"corpora": [entry], "tokenizer": {}}, "d")
    with pytest.raises(ManifestError, match="'corpora' must be a non-empty list"):
        Manifest.from_json({"corpora": [], "tokenizer": tok}, "d")


def test_counts_must_reconcile():
    with pytest.raises(ManifestError, match="do not reconcile"):
        corpus_entry(CORPUS, [], _acc(10, 7, 1, {}), [], [])


def test_read_errors(tmp_path):
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ManifestError, match="schema version 99"):
        read_manifest(str(tmp_path))


def test_prompts_are_recorded_and_old_manifests_have_none(tmp_path):
    from pipeline.data_config import Prompt

    corpus = CorpusConfig("c", ("c.jsonl.gz",), "pair", 1.0, prompts={"anchor": Prompt("query", "query: ")})
    e = corpus_entry(corpus, [], _acc(1, 1, 0, {}), ["c/train-0.tfrecord.gz"], [])
    assert e["prompts"] == {"anchor": {"name": "query", "text": "query: "}}
    assert corpus_entry(CORPUS, [], _acc(1, 1, 0, {}), [], [])["prompts"] == {}
    tok = {"name": "t", "vocab_fingerprint": "f" * 64, "vocab_size": 5, "pad_token_id": 0}
    table = {"query": "query: ", "passage": "passage: "}
    m = build_manifest([e], tok, 4, 0.0, prompts=table, default_prompt_name="passage")
    assert (m["prompts"], m["default_prompt_name"]) == (table, "passage")
    write_manifest(str(tmp_path), m)
    typed = load_manifest(str(tmp_path))
    assert (typed.prompts, typed.default_prompt_name) == (table, "passage")
    assert typed.corpus("c").prompts == {"anchor": Prompt("query", "query: ")}
    # A manifest written before prompts: no table, no default, no corpus prompts.
    old = {k: v for k, v in m.items() if k not in ("prompts", "default_prompt_name")}
    old["corpora"] = [{k: v for k, v in e.items() if k != "prompts"}]
    typed = Manifest.from_json(old, "d")
    assert (typed.prompts, typed.default_prompt_name, typed.corpus("c").prompts) == ({}, None, {})
    with pytest.raises(ManifestError, match="'default_prompt_name' 'doc' is not in 'prompts'"):
        Manifest.from_json(dict(m, default_prompt_name="doc"), "d")
    with pytest.raises(ManifestError, match="'prompts' must map prompt names to texts"):
        Manifest.from_json(dict(m, prompts={"query": None}), "d")
    with pytest.raises(ManifestError, match="corpus 'c': prompts.positive must be"):
        Manifest.from_json(dict(m, corpora=[dict(e, prompts={"positive": {"name": "query", "text": "q"}})]), "d")


def test_removed_tuples_reconcile_and_are_summarised():
    acc = _acc(10, 4, 1, {"bad_json": 1})
    acc.update(duplicates=3, decontaminated=1, decontaminated_by_set={"sts": 1}, overlap={"other": 2})
    e = corpus_entry(CORPUS, [], acc, [], [])
    assert (e["duplicates_removed"], e["decontaminated"], e["overlap"]) == (
        3,
        {"total": 1, "by_set": {"sts": 1}},
        {"other": 2},
    )
    acc["duplicates"] = 2  # one line unaccounted for
    with pytest.raises(ManifestError, match="counts do not reconcile"):
        corpus_entry(CORPUS, [], acc, [], [])
    tok = {"name": "t", "pad_token_id": 0}
    cleaning = {"deduplicate": True, "decontaminate": [{"name": "sts", "removed_lines": 1}]}
    m = build_manifest([e], tok, 4, 0.0, cleaning=cleaning)
    assert m["cleaning"] == cleaning and m["totals"]["duplicates_removed"] == 3
    assert cleaning_summary(m) == "3 duplicate tuples removed, 1 removed as evaluation texts (sts: 1; decontaminated/)"
    plain = build_manifest([e], tok, 4, 0.0)
    assert cleaning_summary(plain) == "duplicates kept (--no_deduplicate), not checked against evaluation sets"
    del plain["cleaning"]
    assert "before the cleaning stages" in cleaning_summary(plain)
