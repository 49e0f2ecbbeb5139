"""Per-corpus token-length profiles: what the batch shapes of a run are planned from.

The number of programs a run compiles and the padding it pays depend on how long the texts of each
corpus are (trainer/program_count.py). Before the Beam job has run there is no histogram, so a stated
table gives each corpus's columns a log-normal token count (roberta-large / BERT tokenizers, special
tokens included, before the cut at max_seq_length); after it, the manifest's p50 / p95 replace it.
Numpy only: no TensorFlow, no JAX.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping

import numpy as np

from pipeline.manifest import Manifest
from pipeline.record_schema import TRIPLET_FORMATS


@dataclasses.dataclass(frozen=True)
class ColumnProfile:
    """Token counts of one column: log-normal with this median and sigma (of the log)."""

    median: float
    sigma: float


@dataclasses.dataclass(frozen=True)
class CorpusProfile:
    name: str
    record_format: str  # the corpus's record_format in data_config.json
    weight: float
    columns: tuple[ColumnProfile, ...]  # anchor, positive[, negative]

    @property
    def triplet(self) -> bool:
        return len(self.columns) == 3


# Text kinds: (median tokens, sigma).
KINDS: dict[str, ColumnProfile] = {
    "short": ColumnProfile(14, 0.35),  # captions, titles, questions, queries
    "sentence": ColumnProfile(22, 0.4),  # one encyclopedia / NLI sentence
    "medium": ColumnProfile(45, 0.6),  # answers, comments, question bodies
    "long": ColumnProfile(140, 0.45),  # abstracts, passages, code: most cut at 128
}

# Per corpus of data_config.json, the kind of each column (anchor, positive[, negative]).
STATED: dict[str, tuple[str, ...]] = {
    # question or title -> answer or body
    **dict.fromkeys(("gooaq", "paq", "yahoo_answers_title_answer", "yahoo_answers_title_question", "wikihow"),
                    ("short", "medium")),
    # question or title -> passage, abstract or evidence
    **dict.fromkeys(("eli5", "searchqa", "trivia_qa", "squad", "natural_questions", "s2orc_title_abstract"),
                    ("short", "long")),
    "msmarco": ("short", "long", "long"),  # query, relevant passage, hard-negative passage
    # duplicate questions, citing / cited titles, captions of one image
    **dict.fromkeys(("wikianswers", "stackexchange_duplicate_questions", "s2orc_citation_pairs",
                     "flickr30k_captions", "coco_captions"), ("short", "short")),
    **dict.fromkeys(("quora_duplicates", "specter"), ("short", "short", "short")),  # questions; paper titles
    # sentence paraphrases and compressions; NLI premise, entailment, contradiction
    **dict.fromkeys(("simple_wiki", "altlex", "sentence_compression"), ("sentence", "sentence")),
    "allnli": ("sentence", "sentence", "sentence"),
    # comment -> reply; question body -> answer
    **dict.fromkeys(("reddit", "yahoo_answers_question_answer"), ("medium", "medium")),
    "codesearchnet": ("medium", "long"),  # docstring -> code
    "s2orc_citation_abstract": ("long", "long"),  # citing abstract -> cited abstract
}

_Z95 = 1.645  # standard-normal 95th percentile


def _field(corpus: Any, key: str) -> Any:
    """A field of a DataConfig corpus (attribute) or of a manifest entry (dict key)."""
    return corpus[key] if isinstance(corpus, Mapping) else getattr(corpus, key)


def n_columns(record_format: str) -> int:
    return 3 if record_format in TRIPLET_FORMATS else 2


def stated_profiles(corpora: Iterable[Any]) -> list[CorpusProfile]:
    """Profiles from the table above for DataConfig corpora or manifest entries (name, record_format, weight).
    A corpus not in the table gets sentence-like columns; the column count always follows the record format."""
    out = []
    for c in corpora:
        record_format = _field(c, "record_format")
        n = n_columns(record_format)
        kinds = STATED.get(_field(c, "name"), ("sentence",) * n)
        kinds = (tuple(kinds) + (kinds[-1],) * n)[:n]  # a format changed since the table: pad or cut
        out.append(CorpusProfile(_field(c, "name"), record_format, float(_field(c, "weight")),
                                 tuple(KINDS[k] for k in kinds)))
    return out


def manifest_profiles(manifest: Manifest) -> list[CorpusProfile]:
    """Profiles from the Beam job's measured token lengths: median = p50, sigma from p95 / p50.

    The manifest counts all texts of a corpus together, so every column gets the same profile; its
    lengths are after the cut at max_seq_length, which only matters above the cut. Corpora without
    texts are skipped (the trainer has nothing to draw from them either)."""
    out = []
    for c in manifest.corpora:
        tl = c.token_lengths
        if not tl.get("texts"):
            continue
        p50 = max(float(tl["p50"]), 1.0)
        sigma = max(math.log(max(float(tl["p95"]), p50) / p50) / _Z95, 0.05)
        out.append(CorpusProfile(c.name, c.record_format, c.weight,
                                 (ColumnProfile(p50, sigma),) * n_columns(c.record_format)))
    return out


def sample_lengths(profile: CorpusProfile, n: int, rng: np.random.Generator, max_seq_length: int) -> np.ndarray:
    """Token counts int64 [C, n] of n records: log-normal draws, rounded, clipped to [3, max_seq_length]
    (3: a special token on each side of at least one word piece)."""
    median = np.array([c.median for c in profile.columns], np.float64)[:, None]
    sigma = np.array([c.sigma for c in profile.columns], np.float64)[:, None]
    draws = np.exp(np.log(median) + sigma * rng.standard_normal((len(profile.columns), int(n))))
    return np.clip(np.rint(draws), min(3, max_seq_length), max_seq_length).astype(np.int64)
