import json
import os

import pytest

from pipeline.data_config import RECORD_FORMATS, DataConfigError, expand_files, load_data_config, parse_data_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_27_corpora_config():
    c = load_data_config(os.path.join(REPO, "data_config.json"))
    assert len(c.corpora) == 27 and len(set(c.names)) == 27
    # The rows of corpora.md (1,099,060,508), except Stack Exchange duplicate questions: its three real files
    # hold 304,525 + 250,519 + 250,460 = 805,504 lines, not the model card's 364,001 (+441,503).
    assert sum(x.expected_lines for x in c.corpora) == 1_099_502_011
    se = c.get("stackexchange_duplicate_questions")
    assert se.expected_lines == 805_504 and se.weight == 91 and len(se.files) == 3
    assert {x.record_format for x in c.corpora} == {"pair", "set", "triplet"}
    assert c.get("gooaq").weight == 247 and c.get("reddit").weight == 328 and len(c.get("reddit").files) == 4
    assert c.get("coco_captions").record_format == "set" and c.get("msmarco").record_format == "triplet"
    assert {x.name for x in c.corpora if x.symmetric} == {
        "stackexchange_duplicate_questions", "quora_duplicates", "wikianswers", "simple_wiki", "altlex"}
    assert c.probabilities()["gooaq"] == pytest.approx(247 / 2711)


def test_the_sample_config_covers_every_shape_and_its_files_exist():
    c = load_data_config(os.path.join(REPO, "samples", "data_config.json"))
    assert {x.record_format for x in c.corpora} == set(RECORD_FORMATS)
    assert any(x.symmetric for x in c.corpora)
    for corpus in c.corpora:
        files = expand_files(corpus, os.path.join(REPO, "samples", "corpora"))
        assert files and all(f.endswith(".jsonl.gz") for f in files)
    assert len(expand_files(c.get("sample_qa"), os.path.join(REPO, "samples", "corpora"))) == 2
    size = sum(os.path.getsize(os.path.join(REPO, "samples", "corpora", f))
               for f in os.listdir(os.path.join(REPO, "samples", "corpora")))
    assert size < 2_000_000


def _one(**patch):
    return {"corpora": [{"name": "c", "files": ["c.jsonl.gz"], "record_format": "pair", "weight": 1, **patch}]}


@pytest.mark.parametrize("raw,message", [
    (_one(record_format="quad"), "corpus 'c': field 'record_format' is 'quad'"),
    (_one(shape="pair"), "corpus 'c': field 'shape' is now called 'record_format'"),
    (_one(weight=0), "corpus 'c': field 'weight' must be a positive number, got 0"),
    (_one(weight="1"), "corpus 'c': field 'weight' must be a positive number"),
    (_one(weight=float("nan")), "field 'weight'"),
    (_one(files=[]), "corpus 'c': field 'files'"),
    (_one(expected_lines=-1), "field 'expected_lines'"),
    (_one(symmetric="yes"), "field 'symmetric'"),
    (_one(colour="red"), "unknown field(s) ['colour']"),
    (_one(name="a/b"), "field 'name' may hold only"),
    ({"corpora": [_one()["corpora"][0]] * 2}, "corpus 'c': duplicate name"),
    ({"corpora": []}, "'corpora' must be a non-empty list"),
    ({"datasets": []}, "must be an object with a 'corpora' list"),
])
def test_config_errors_name_the_corpus_and_field(raw, message):
    with pytest.raises(DataConfigError) as e:
        parse_data_config(raw)
    assert message in str(e.value)


def test_files_that_match_nothing_and_unreadable_configs(tmp_path):
    c = parse_data_config(_one(files=["c-*.jsonl.gz"])).corpora[0]
    with pytest.raises(DataConfigError, match="corpus 'c': field 'files': no file matches"):
        expand_files(c, str(tmp_path))
    (tmp_path / "c-1.jsonl.gz").write_bytes(b"")
    (tmp_path / "c-0.jsonl.gz").write_bytes(b"")
    assert expand_files(c, str(tmp_path)) == [str(tmp_path / "c-0.jsonl.gz"), str(tmp_path / "c-1.jsonl.gz")]
    with pytest.raises(DataConfigError, match="file not found"):
        load_data_config(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataConfigError, match="not valid JSON"):
        load_data_config(str(tmp_path / "bad.json"))
    (tmp_path / "ok.json").write_text(json.dumps(_one()))
    assert load_data_config(str(tmp_path / "ok.json")).names == ["c"]
