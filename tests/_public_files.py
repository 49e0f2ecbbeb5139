"""Small stand-ins for the public corpus files: the exact file names of
sentence-transformers/embedding-training-data (and of the 2021 run's file set) with the line shapes
their card gives, a few lines each, written by the tests (no download)."""

from __future__ import annotations

import gzip
import json
import os


def _pair(i, f):
    return [f"{f} anchor {i}", f"{f} positive {i}"]


def _triplet(i, f):
    return [f"{f} anchor {i}", f"{f} positive {i}", f"{f} negative {i}"]


def triplet_object(i, f):  # the card's other triplet shape: every positive and negative kept
    return {
        "query": f"{f} query {i}",
        "pos": [f"{f} positive {i}"] + [f"{f} positive {i}b"] * (i % 2),
        "neg": [f"{f} negative {i}.{k}" for k in range(1 + i % 3)],
    }


def _set(i, f):  # line 1 has a blank caption: dropped and counted (empty_member), the line kept
    return {"set": ["" if (i, k) == (1, 2) else f"{f} caption {i}.{k}" for k in range(5)]}


def _citations(i, f):  # a list of two or more linked papers
    return [f"{f} paper {i}.{k}" for k in range(2 + i % 3)]


def _query(i, f):
    return {"query": f"{f} question {i}", "pos": [f"{f} snippet {i}.{k}" for k in range(5)]}


# file name -> line maker: the public repository as its card describes it (Reddit is not there); msmarco
# as {"query", "pos", "neg"} objects, Quora's triplets as lists (tests read both in both shapes).
PUBLIC = {
    "gooaq_pairs.jsonl.gz": _pair,
    "yahoo_answers_title_answer.jsonl.gz": _pair,
    "yahoo_answers_title_question.jsonl.gz": _pair,
    "yahoo_answers_question_answer.jsonl.gz": _pair,
    "msmarco-triplets.jsonl.gz": triplet_object,
    "stackexchange_duplicate_questions_title_title.jsonl.gz": _pair,
    "stackexchange_duplicate_questions_body_body.jsonl.gz": _pair,
    "stackexchange_duplicate_questions_title-body_title-body.jsonl.gz": _pair,
    "eli5_question_answer.jsonl.gz": _pair,
    "squad_pairs.jsonl.gz": _pair,
    "wikihow.jsonl.gz": _pair,
    "NQ-train_pairs.jsonl.gz": _pair,
    "S2ORC_title_abstract.jsonl.gz": _pair,
    "quora_duplicates.jsonl.gz": _pair,
    "quora_duplicates_triplets.jsonl.gz": _triplet,
    "WikiAnswers.jsonl.gz": _set,
    "searchQA_top5_snippets.jsonl.gz": _query,
    "S2ORC_citations_titles.jsonl.gz": _citations,
    "S2ORC_citations_abstracts.jsonl.gz": _citations,
    "AllNLI.jsonl.gz": _triplet,
    "specter_train_triples.jsonl.gz": _triplet,
    "SimpleWiki.jsonl.gz": _pair,
    "PAQ_pairs.jsonl.gz": _pair,
    "altlex.jsonl.gz": _pair,
    "codesearchnet.jsonl.gz": _pair,
    "sentence-compression.jsonl.gz": _pair,
    "TriviaQA_pairs.jsonl.gz": _pair,
    "flickr30k_captions.jsonl.gz": _set,
    "coco_captions.jsonl.gz": _set,
}

# The 2021 run's own names that differ from the public ones, as the reference config names them.
REFERENCE_2021 = {
    **{
        k: v
        for k, v in PUBLIC.items()
        if k
        not in (
            "msmarco-triplets.jsonl.gz",
            "WikiAnswers.jsonl.gz",
            "searchQA_top5_snippets.jsonl.gz",
            "S2ORC_citations_titles.jsonl.gz",
            "S2ORC_citations_abstracts.jsonl.gz",
        )
    },
    "msmarco-query_passage_negative.jsonl.gz": _triplet,
    "WikiAnswers_pairs.jsonl.gz": _pair,
    "searchQA_question_top5_snippets_merged.jsonl.gz": _pair,
    "S2ORC_citation_pairs.jsonl.gz": _pair,
    "S2ORC_citation_pairs_abstract.jsonl.gz": _pair,
    **{
        f"reddit/reddit_{y}.jsonl.gz": (
            lambda i, f: {
                "context": f"{f} post {i}",
                "response": f"{f} reply {i}",
                "context_author": "a",
                "subreddit": "s",
            }
        )
        for y in (2015, 2016, 2017, 2018)
    },
}


def write_files(root: str, table: dict, lines_per_file: int = 4) -> dict[str, int]:
    """Writes every file of `table` under root; returns file name -> lines written."""
    for name, make in table.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with gzip.open(path, "wt", encoding="utf-8") as f:
            for i in range(lines_per_file):
                f.write(json.dumps(make(i, name.split(".")[0])) + "\n")
    return {name: lines_per_file for name in table}
