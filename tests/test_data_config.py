import json
import os
import re

import pytest

from pipeline.data_config import (
    RECORD_FORMATS,
    DataConfigError,
    expand_files,
    load_data_config,
    parse_data_config,
    resolve_corpora,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_public_config_describes_the_public_repository():
    c = load_data_config(os.path.join(REPO, "data_config.json"))
    assert len(c.corpora) == 27 and len(set(c.names)) == 27
    # The public repository's line counts (corpora.md, "What the public file repository holds today"), plus
    # Reddit's 2021 tuple count (not in that repository).
    assert sum(x.expected_lines for x in c.corpora if x.name != "reddit") == 234_534_258
    assert c.get("flickr30k_captions").expected_lines == 31_783 and c.get("coco_captions").expected_lines == 82_783
    assert c.get("wikianswers").files == ("WikiAnswers.jsonl.gz",) and c.get("wikianswers").record_format == "set"
    assert c.get("msmarco").files == ("msmarco-triplets.jsonl.gz",) and c.get("msmarco").expected_lines == 499_184
    assert c.get("searchqa").record_format == "query" and c.get("quora_duplicates").expected_lines == 101_762
    assert c.get("s2orc_citation_pairs").files == ("S2ORC_citations_titles.jsonl.gz",)
    assert c.get("reddit").input_format == "reddit_comments" and c.get("reddit").record_format == "pair"
    assert c.get("reddit").fields == {
        "anchor": "response",
        "positive": "context",
    }  # the 2021 script read [response, context]
    # Every corpus keeps its 2021 weight, so its share of batches is the 2021 one.
    ref = load_data_config(os.path.join(REPO, "data_configs", "reference_2021.json"))
    assert {x.name: x.weight for x in c.corpora} == {x.name: x.weight for x in ref.corpora}
    assert c.probabilities()["gooaq"] == pytest.approx(247 / 2711)
    assert {x.name for x in c.corpora if x.symmetric} == {
        "stackexchange_duplicate_questions",
        "quora_duplicates",
        "simple_wiki",
        "altlex",
    }


# The 2021 card (../shared/reference/corpora.md, first table): corpus -> (file(s), training tuples, weight).
CARD_2021 = {
    "gooaq": (["gooaq_pairs.jsonl.gz"], 3_012_496, 247),
    "stackexchange_duplicate_questions": ([], 364_001, 91),  # the card names no file: "a (title, body) file"
    "flickr30k_captions": (["flickr30k_captions.jsonl.gz"], 317_695, 1),
    "coco_captions": (["coco_captions.jsonl.gz"], 828_395, 1),
    "codesearchnet": (["codesearchnet.jsonl.gz"], 1_151_414, 1),
    "trivia_qa": (["TriviaQA_pairs.jsonl.gz"], 73_346, 19),
    "squad": (["squad_pairs.jsonl.gz"], 87_599, 22),
    "natural_questions": (["NQ-train_pairs.jsonl.gz"], 100_231, 25),
    "simple_wiki": (["SimpleWiki.jsonl.gz"], 102_225, 26),
    "quora_duplicates": (["quora_duplicates_triplets.jsonl.gz"], 103_663, 26),
    "altlex": (["altlex.jsonl.gz"], 112_696, 28),
    "wikihow": (["wikihow.jsonl.gz"], 128_542, 32),
    "sentence_compression": (["sentence-compression.jsonl.gz"], 180_000, 45),
    "allnli": (["AllNLI.jsonl.gz"], 277_230, 69),
    "eli5": (["eli5_question_answer.jsonl.gz"], 325_475, 81),
    "specter": (["specter_train_triples.jsonl.gz"], 684_100, 84),
    "s2orc_title_abstract": (["S2ORC_title_abstract.jsonl.gz"], 41_769_185, 123),
    "s2orc_citation_pairs": (["S2ORC_citation_pairs.jsonl.gz"], 52_603_982, 123),
    "s2orc_citation_abstract": (["S2ORC_citation_pairs_abstract.jsonl.gz"], 116_288_806, 123),
    "paq": (["PAQ_pairs.jsonl.gz"], 64_371_441, 123),
    "wikianswers": (["WikiAnswers_pairs.jsonl.gz"], 77_427_422, 123),
    "searchqa": (["searchQA_question_top5_snippets_merged.jsonl.gz"], 582_261, 144),
    "yahoo_answers_title_answer": (["yahoo_answers_title_answer.jsonl.gz"], 1_198_260, 247),
    "yahoo_answers_title_question": (["yahoo_answers_title_question.jsonl.gz"], 659_896, 163),
    "yahoo_answers_question_answer": (["yahoo_answers_question_answer.jsonl.gz"], 681_164, 169),
    "msmarco": (["msmarco-query_passage_negative.jsonl.gz"], 9_144_553, 247),
    "reddit": ([f"reddit/reddit_{y}.jsonl.gz" for y in (2015, 2016, 2017, 2018)], 726_484_430, 328),
}
# The public repository's line counts (corpora.md, second table), of the files the configs read.
PUBLIC_LINES = {
    "gooaq_pairs.jsonl.gz": 3_012_496,
    "yahoo_answers_title_answer.jsonl.gz": 1_198_260,
    "yahoo_answers_title_question.jsonl.gz": 659_896,
    "yahoo_answers_question_answer.jsonl.gz": 681_164,
    "msmarco-triplets.jsonl.gz": 499_184,
    "stackexchange_duplicate_questions_title_title.jsonl.gz": 304_525,
    "stackexchange_duplicate_questions_body_body.jsonl.gz": 250_519,
    "stackexchange_duplicate_questions_title-body_title-body.jsonl.gz": 250_460,
    "eli5_question_answer.jsonl.gz": 325_475,
    "squad_pairs.jsonl.gz": 87_599,
    "wikihow.jsonl.gz": 128_542,
    "NQ-train_pairs.jsonl.gz": 100_231,
    "S2ORC_title_abstract.jsonl.gz": 41_769_185,
    "quora_duplicates.jsonl.gz": 103_663,
    "quora_duplicates_triplets.jsonl.gz": 101_762,
    "WikiAnswers.jsonl.gz": 27_383_151,
    "searchQA_top5_snippets.jsonl.gz": 117_220,
    "S2ORC_citations_titles.jsonl.gz": 51_030_086,
    "S2ORC_citations_abstracts.jsonl.gz": 39_567_485,
    "AllNLI.jsonl.gz": 277_230,
    "specter_train_triples.jsonl.gz": 684_100,
    "SimpleWiki.jsonl.gz": 102_225,
    "PAQ_pairs.jsonl.gz": 64_371_441,
    "altlex.jsonl.gz": 112_696,
    "codesearchnet.jsonl.gz": 1_151_414,
    "sentence-compression.jsonl.gz": 180_000,
    "TriviaQA_pairs.jsonl.gz": 73_346,
    "flickr30k_captions.jsonl.gz": 31_783,
    "coco_captions.jsonl.gz": 82_783,
}
# Where the 2021 config cannot follow the card, and what it reads instead (its descriptions say why).
SE_FILES = [
    "stackexchange_duplicate_questions_title_title.jsonl.gz",
    "stackexchange_duplicate_questions_body_body.jsonl.gz",
    "stackexchange_duplicate_questions_title-body_title-body.jsonl.gz",
]
REFERENCE_DEPARTURES = {
    "stackexchange_duplicate_questions": SE_FILES,
    "quora_duplicates": ["quora_duplicates.jsonl.gz"],
}
SET_CORPORA = ("flickr30k_captions", "coco_captions")  # the card counts a line of 5 captions as its 10 pairs


def _numbers(text: str) -> set[int]:
    """The figures of a text written with thousands separators (1,234 and up)."""
    return {int(m.replace(",", "")) for m in re.findall(r"\b\d{1,3}(?:,\d{3})+\b", text)}


def _description_errors(config_path: str, known: set[int]) -> list[str]:
    """Figures in a config's descriptions that are not the card's, sums (a + b = c) that do not add up, and
    weights (a sum of small numbers, or 'weight N') other than the entry's own."""
    with open(config_path) as f:
        raw = json.load(f)
    errors = []
    for c in [{"name": "top level", "description": raw["description"]}] + raw["corpora"]:
        where, text = c["name"], c.get("description", "")
        errors += [f"{where}: {n:,} is not a figure of the card" for n in sorted(_numbers(text) - known)]
        for terms, total in re.findall(r"((?:\d[\d,]*\s*\+\s*)+\d[\d,]*)\s*=\s*(\d[\d,]*)", text):
            values = [int(t.replace(",", "")) for t in terms.split("+")]
            if sum(values) != int(total.replace(",", "")):
                errors.append(f"{where}: {terms}= {total} does not add up")
            elif max(values) < 1000 and "weight" in c and sum(values) != c["weight"]:
                errors.append(f"{where}: weights {terms}= {total}, not the entry's {c['weight']}")
        for w in re.findall(r"\b[Ww]eight,? (\d+)\b", text):
            if "weight" in c and int(w) != c["weight"]:
                errors.append(f"{where}: says weight {w}, the entry has {c['weight']}")
    return errors


def test_the_reference_config_agrees_with_the_2021_card_and_with_itself():
    c = load_data_config(os.path.join(REPO, "data_configs", "reference_2021.json"))
    assert c.names == list(CARD_2021)
    for x in c.corpora:
        files, tuples, weight = CARD_2021[x.name]
        assert x.weight == weight, x.name  # every weight is the card's
        # Files: the card's, except where it names none that exists (the descriptions say so).
        assert list(x.files) == REFERENCE_DEPARTURES.get(x.name, files), x.name
        # Counts: the card's tuples where a line is a tuple; else the lines of the files read.
        if x.name in REFERENCE_DEPARTURES or x.name in SET_CORPORA:
            assert x.expected_lines == sum(PUBLIC_LINES[f] for f in x.files), x.name
        else:
            assert x.expected_lines == tuples, x.name
    # The card's weight rule, lines / 4,000 capped at 247, where it states it: within 2 of each weight
    # (its rounding), SPECTER the one corpus that does not fit (84; the rule gives 171, its entry says so).
    rule = {n: min(247, round(t / 4000)) for n, (_, t, w) in CARD_2021.items() if w not in (1, 123, 328)}
    assert {n for n, r in rule.items() if abs(r - CARD_2021[n][2]) > 2} == {"specter"} and rule["specter"] == 171
    assert rule["stackexchange_duplicate_questions"] == 91 and rule["quora_duplicates"] == 26
    assert "would give 171" in c.get("specter").description
    assert c.get("reddit").weight == 82 * len(c.get("reddit").files)
    # Quora: the count the card gives is the pair file's, which the entry reads as pairs.
    assert c.get("quora_duplicates").record_format == "pair" and c.get("quora_duplicates").expected_lines == 103_663
    assert sum(x.expected_lines for x in c.corpora) == 1_098_470_487
    known = {t for _, t, _ in CARD_2021.values()} | set(PUBLIC_LINES.values()) | {805_504, 4_000}
    assert _description_errors(os.path.join(REPO, "data_configs", "reference_2021.json"), known) == []
    assert _description_errors(os.path.join(REPO, "data_config.json"), known) == []


def test_the_public_config_counts_are_its_files_lines():
    c = load_data_config(os.path.join(REPO, "data_config.json"))
    for x in c.corpora:
        if x.name != "reddit":
            assert x.expected_lines == sum(PUBLIC_LINES[f] for f in x.files), x.name


def test_the_reference_config_keeps_the_2021_file_set():
    c = load_data_config(os.path.join(REPO, "data_configs", "reference_2021.json"))
    assert len(c.corpora) == 27 and len(set(c.names)) == 27
    se = c.get("stackexchange_duplicate_questions")
    assert se.expected_lines == 805_504 and se.weight == 91 and len(se.files) == 3
    assert {x.record_format for x in c.corpora} == {"pair", "set", "triplet"}
    assert c.get("gooaq").weight == 247 and c.get("reddit").weight == 328 and len(c.get("reddit").files) == 4
    assert c.get("coco_captions").record_format == "set" and c.get("msmarco").record_format == "triplet"
    assert c.get("wikianswers").files == ("WikiAnswers_pairs.jsonl.gz",)
    assert {x.name for x in c.corpora if x.symmetric} == {
        "stackexchange_duplicate_questions",
        "quora_duplicates",
        "wikianswers",
        "simple_wiki",
        "altlex",
    }


def test_the_sample_config_covers_every_shape_and_its_files_exist():
    c = load_data_config(os.path.join(REPO, "samples", "data_config.json"))
    assert {x.record_format for x in c.corpora} == set(RECORD_FORMATS)
    assert any(x.symmetric for x in c.corpora)
    for corpus in c.corpora:
        files = expand_files(corpus, os.path.join(REPO, "samples", "corpora"))
        assert files and all(f.endswith(".jsonl.gz") for f in files)
    assert len(expand_files(c.get("sample_qa"), os.path.join(REPO, "samples", "corpora"))) == 2
    size = sum(
        os.path.getsize(os.path.join(REPO, "samples", "corpora", f))
        for f in os.listdir(os.path.join(REPO, "samples", "corpora"))
    )
    assert size < 2_000_000


def _one(**patch):
    return {"corpora": [{"name": "c", "files": ["c.jsonl.gz"], "record_format": "pair", "weight": 1, **patch}]}


@pytest.mark.parametrize(
    "raw,message",
    [
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
        (_one(fields={"anchor": "q"}), "corpus 'c': field 'fields': a pair corpus maps exactly ['anchor', 'positive']"),
        (_one(fields={"anchor": "q", "positive": "a", "negative": "n"}), "maps exactly ['anchor', 'positive'], got"),
        (_one(fields={"question": "q"}), "field 'fields': unknown key(s) ['question']"),
        (_one(fields={"texts": "t", "anchor": "a"}), "no role keys beside it"),
        (_one(fields={"anchor": "", "positive": "a"}), "every value must be a non-empty key"),
        (_one(fields=["q", "a"]), "field 'fields': must be a non-empty object"),
        (_one(record_format="set", fields={"anchor": "a", "positive": "b"}), "a set corpus's members are one list"),
        (_one(record_format="query", fields={"texts": "t"}), "'texts' serves pair, triplet and set corpora"),
        (_one(files=["c.parquet"]), "field 'fields' is required for Parquet files"),
        (_one(input_format="csv"), "field 'input_format' is 'csv'; must be one of lines, beir"),
        (_one(input_format="beir"), "a beir corpus has record_format 'query'"),
        (_one(record_format="query", input_format="beir", qrels_split="a/b"), "field 'qrels_split' must name a file"),
        (_one(qrels_split="dev"), "field 'qrels_split' applies to input_format 'beir' only"),
        ({"corpora": [_one()["corpora"][0]] * 2}, "corpus 'c': duplicate name"),
        ({"corpora": []}, "'corpora' must be a non-empty list"),
        ({"datasets": []}, "must be an object with a 'corpora' list"),
    ],
)
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


def _config(*corpora):
    return parse_data_config({"corpora": [{"record_format": "pair", "weight": 1, **c} for c in corpora]})


def test_every_missing_file_is_named_at_once_and_skipping_is_a_decision(tmp_path):
    (tmp_path / "a.jsonl.gz").write_bytes(b"")
    (tmp_path / "c-1.jsonl.gz").write_bytes(b"")
    config = _config(
        {"name": "a", "files": ["a.jsonl.gz"], "weight": 3},
        {"name": "b", "files": ["b-1.jsonl.gz", "b-2.jsonl.gz"]},
        {"name": "c", "files": ["c-1.jsonl.gz", "c-2.jsonl.gz"]},
        {"name": "d", "files": ["d.jsonl.gz"], "weight": 2},
    )
    with pytest.raises(DataConfigError) as e:
        resolve_corpora(config, str(tmp_path))
    msg = str(e.value)
    assert msg.startswith("data config: 3 corpus(es) with missing files: corpus 'b': ") and "\n" not in msg
    for name in ("b-1", "b-2", "c-2", "d"):
        assert str(tmp_path / f"{name}.jsonl.gz") in msg
    assert "--skip_missing_corpora" in msg
    # Skipping leaves out b and d (no file at all) but not c: a partial download stays an error.
    with pytest.raises(
        DataConfigError, match=r"1 corpus\(es\) with missing files: corpus 'c': .*c-2.jsonl.gz \(found 1 other"
    ):
        resolve_corpora(config, str(tmp_path), skip_missing=True)
    (tmp_path / "c-2.jsonl.gz").write_bytes(b"")
    kept, files, left_out = resolve_corpora(config, str(tmp_path), skip_missing=True)
    assert kept.names == ["a", "c"] and [lo.name for lo in left_out] == ["b", "d"]
    assert files["c"] == [str(tmp_path / "c-1.jsonl.gz"), str(tmp_path / "c-2.jsonl.gz")]
    assert left_out[1].weight == 2 and left_out[1].missing == (str(tmp_path / "d.jsonl.gz"),)
    assert kept.probabilities() == {"a": 0.75, "c": 0.25}


def test_beir_corpora_name_directories(tmp_path):
    (tmp_path / "scifact").mkdir()
    (tmp_path / "scifact" / "corpus.jsonl").write_text("")
    config = _config({"name": "s", "files": ["scifact", "nfcorpus"], "record_format": "query", "input_format": "beir"})
    with pytest.raises(DataConfigError, match="corpus 's': .*nfcorpus"):
        resolve_corpora(config, str(tmp_path))
    one = _config({"name": "s", "files": ["scifact"], "record_format": "query", "input_format": "beir"})
    assert resolve_corpora(one, str(tmp_path))[1] == {"s": [str(tmp_path / "scifact")]}
    assert one.get("s").options == {"qrels_split": "train"}


# ------------------------------------------------------------------------------------------ prompts

PROMPTS = {"query": "query: ", "passage": "passage: "}


def _prompted(fmt="pair", symmetric=False, top=None, **corpus_prompts):
    raw = _one(record_format=fmt, symmetric=symmetric, prompts=corpus_prompts)
    raw.update({"prompts": PROMPTS} if top is None else top)
    return raw


@pytest.mark.parametrize(
    "raw,message",
    [
        (
            _prompted(top={"prompts": ["query: "]}),
            "top level: field 'prompts' must be an object of prompt names to prompt texts",
        ),
        (
            _prompted(top={"prompts": {"query": 3}}),
            "top level: field 'prompts': the text of 'query' must be a string, got 3",
        ),
        (
            _prompted(top={"prompts": {"": "x: "}}),
            "top level: field 'prompts': a prompt name must be a non-empty string",
        ),
        (
            _prompted(top={"prompts": PROMPTS, "default_prompt_name": "doc"}),
            "top level: field 'default_prompt_name' is 'doc', not a name in 'prompts' ('query', 'passage')",
        ),
        (
            _prompted(top={"default_prompt_name": "query"}),
            "field 'default_prompt_name' is 'query', not a name in 'prompts' (none)",
        ),
        (
            _prompted(anchor="qeury"),
            "corpus 'c': field 'prompts.anchor' is 'qeury', not a name in the top-level 'prompts' ('query', 'passage')",
        ),
        (_prompted(candidate=1), "corpus 'c': field 'prompts.candidate' is 1, not a name in the top-level 'prompts'"),
        (
            _prompted(top={}, anchor="query"),
            "corpus 'c': field 'prompts.anchor' is 'query', not a name in the top-level 'prompts' (none)",
        ),
        (
            _prompted(query="query"),
            "corpus 'c': field 'prompts': unknown key(s) ['query']; allowed: ['anchor', 'candidate']",
        ),
        (_one(prompts="query"), "corpus 'c': field 'prompts' must be an object with 'anchor' and/or 'candidate'"),
        (
            _prompted("set", anchor="query"),
            "corpus 'c': field 'prompts': a set corpus draws its anchor and positive among "
            "the same texts, so 'anchor' and 'candidate' must name the same prompt (got "
            "'query' and None)",
        ),
        (
            _prompted("pair", True, anchor="query", candidate="passage"),
            "corpus 'c': field 'prompts': a symmetric corpus swaps anchor and positive, so 'anchor' and "
            "'candidate' must name the same prompt (got 'query' and 'passage')",
        ),
    ],
)
def test_prompt_errors_name_the_corpus_and_field(raw, message):
    with pytest.raises(DataConfigError) as e:
        parse_data_config(raw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_prompts_resolve_per_role_and_survive_select_and_to_json():
    from pipeline.record_schema import ROLE_ANCHOR, ROLE_MEMBER, ROLE_NEGATIVE, ROLE_POSITIVE

    raw = {
        "prompts": PROMPTS,
        "default_prompt_name": "passage",
        "corpora": [
            {
                "name": "q",
                "files": ["q"],
                "record_format": "query_with_negatives",
                "weight": 1,
                "prompts": {"anchor": "query", "candidate": "passage"},
            },
            {
                "name": "only_anchor",
                "files": ["a"],
                "record_format": "triplet",
                "weight": 1,
                "prompts": {"anchor": "query"},
            },
            {
                "name": "s",
                "files": ["s"],
                "record_format": "set",
                "weight": 1,
                "prompts": {"anchor": "passage", "candidate": "passage"},
            },
            {
                "name": "sym",
                "files": ["p"],
                "record_format": "pair",
                "weight": 1,
                "symmetric": True,
                "prompts": {"anchor": "query", "candidate": "query"},
            },
            {"name": "none", "files": ["n"], "record_format": "pair", "weight": 1},
        ],
    }
    c = parse_data_config(raw)
    assert c.prompts == PROMPTS and c.default_prompt_name == "passage"
    assert c.get("q").role_prompts() == {ROLE_ANCHOR: "query: ", ROLE_POSITIVE: "passage: ", ROLE_NEGATIVE: "passage: "}
    assert c.get("only_anchor").role_prompts() == {ROLE_ANCHOR: "query: "}
    assert c.get("s").role_prompts() == {ROLE_MEMBER: "passage: "}
    assert c.get("sym").role_prompts() == {ROLE_ANCHOR: "query: ", ROLE_POSITIVE: "query: "}
    assert c.get("none").role_prompts() == {} and c.get("none").prompts == {}
    assert (c.get("q").prompts["anchor"].name, c.get("q").prompts["anchor"].text) == ("query", "query: ")
    sub = c.select(["none"])
    assert sub.names == ["none"] and sub.prompts == PROMPTS and sub.default_prompt_name == "passage"
    js = c.to_json()
    assert js["prompts"] == PROMPTS and js["default_prompt_name"] == "passage"
    assert js["corpora"][0]["prompts"] == {"anchor": "query", "candidate": "passage"}
    assert parse_data_config(js) == c and parse_data_config(sub.to_json()) == sub
    assert "prompts" not in parse_data_config(_one()).to_json()  # no table: none written


def test_reddit_corpora_take_comment_files_or_a_bigquery_table():
    c = parse_data_config(
        {
            "corpora": [
                {
                    "name": "r",
                    "files": ["RC_*.zst"],
                    "record_format": "pair",
                    "input_format": "reddit_comments",
                    "weight": 1,
                },
                {
                    "name": "bq",
                    "files": [],
                    "record_format": "pair",
                    "input_format": "reddit_comments",
                    "weight": 1,
                    "reddit_options": {"bigquery_table": "my-project:reddit.comments", "extra_contexts": 2},
                },
            ]
        }
    )
    assert c.get("r").fields == {"anchor": "response", "positive": "context"} and c.get("r").options == {
        "reddit_options": {}
    }
    assert c.get("bq").files == () and c.get("bq").options["reddit_options"]["extra_contexts"] == 2
    assert parse_data_config(c.to_json()) == c
    for patch, message in (
        ({"record_format": "query"}, "a reddit_comments corpus has record_format 'pair'"),
        ({"reddit_options": {"max_lenght": 3}}, "field 'reddit_options': "),
        ({"reddit_options": {"min_length": 0}}, "need 0 < min_length <= max_length"),
        ({"files": []}, "field 'files' must be a non-empty list"),
        ({"reddit_options": {"bigquery_table": "comments"}}, "Expected a table reference"),
    ):
        raw = {
            "name": "r",
            "files": ["RC_*.zst"],
            "record_format": "pair",
            "input_format": "reddit_comments",
            "weight": 1,
            **patch,
        }
        with pytest.raises(DataConfigError, match=message):
            parse_data_config({"corpora": [raw]})
    with pytest.raises(DataConfigError, match="'reddit_options' applies to input_format 'reddit_comments' only"):
        parse_data_config(_one(reddit_options={}))


def test_a_bigquery_reddit_corpus_builds_its_read_in_the_job_graph(tmp_path):
    import apache_beam as beam

    from pipeline import options
    from pipeline.job import build_pipeline

    config = parse_data_config(
        {
            "corpora": [
                {
                    "name": "bq",
                    "files": [],
                    "record_format": "pair",
                    "input_format": "reddit_comments",
                    "weight": 1,
                    "reddit_options": {"bigquery_table": "my-project:reddit.comments"},
                }
            ]
        }
    )
    kept, files, left_out = resolve_corpora(config, str(tmp_path))
    assert files == {"bq": []} and not left_out
    opts, _ = options.parse_args([f"--output_dir={tmp_path}"])
    p = beam.Pipeline()
    build_pipeline(p, kept, files, "unused", {}, opts)

    def labels(node):
        yield node.full_label
        for part in node.parts:
            yield from labels(part)

    every = list(labels(p.transforms_stack[0]))
    assert any(label.startswith("Reddit/bq/") and label.endswith("ReadBigQuery") for label in every)


def test_file_bytes_are_compared_before_the_job_starts(tmp_path):
    from pipeline.data_config import check_file_sizes

    (tmp_path / "a.jsonl.gz").write_bytes(b"x" * 100)
    (tmp_path / "b.jsonl.gz").write_bytes(b"x" * 7)

    def config(file_bytes):
        return parse_data_config(
            {
                "corpora": [
                    {
                        "name": "c",
                        "files": ["*.jsonl.gz"],
                        "record_format": "pair",
                        "weight": 1,
                        "file_bytes": file_bytes,
                    }
                ]
            }
        )

    ok = config({"a.jsonl.gz": 100, "b.jsonl.gz": 7})
    assert ok.corpora[0].to_json()["file_bytes"] == {"a.jsonl.gz": 100, "b.jsonl.gz": 7}
    check_file_sizes(*resolve_corpora(ok, str(tmp_path))[:2])
    short = config({"a.jsonl.gz": 120, "gone.jsonl.gz": 5})
    with pytest.raises(DataConfigError) as e:
        check_file_sizes(*resolve_corpora(short, str(tmp_path))[:2])
    assert str(e.value).startswith(
        "data config: 2 file size(s) differ (field 'file_bytes'): corpus 'c': "
        f"{tmp_path / 'a.jsonl.gz'} is 100 bytes, the data config says 120; corpus 'c': "
        "file_bytes names 'gone.jsonl.gz', which none of its files is"
    )
    for bad in ({"a.jsonl.gz": -1}, {"d/a.jsonl.gz": 1}, {"a.jsonl.gz": True}, ["a.jsonl.gz"]):
        with pytest.raises(DataConfigError, match="field 'file_bytes'"):
            config(bad)
    assert (
        "file_bytes"
        not in parse_data_config({"corpora": [{"name": "c", "files": ["x"], "record_format": "pair", "weight": 1}]})
        .corpora[0]
        .to_json()
    )
