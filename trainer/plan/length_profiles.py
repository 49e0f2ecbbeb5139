"""Per-corpus token-length profiles: what the batch shapes of a run are planned from.

The number of programs a run compiles and the padding it pays depend on how long the texts of each
corpus are (trainer/plan/program_count.py). The profile types, the manifest's profiles and the draws
live in trainer/data/row_fit.py (the run fits its row counts to them). Before the Beam job has run
there is no histogram, so a stated table gives each corpus's columns a log-normal token count
(roberta-large / BERT tokenizers, special tokens included, before the cut at max_seq_length), plus the
tokens of the corpus's prompts when the data config gives it some (counted with the model's
tokenizer); after it, the manifest's p50 / p95 replace it (the job measured the prompted texts, so
nothing is added). Numpy only: no TensorFlow, no JAX (the tokenizer, when prompts need it, is
transformers').
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Iterable, Mapping

# The profiles and the manifest's live below the planner: the run fits its row counts to them.
from trainer.data.row_fit import ColumnProfile, CorpusProfile, manifest_profiles, n_columns, sample_lengths  # noqa: F401

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
    **dict.fromkeys(
        ("gooaq", "paq", "yahoo_answers_title_answer", "yahoo_answers_title_question", "wikihow"), ("short", "medium")
    ),
    # question or title -> passage, abstract or evidence
    **dict.fromkeys(
        ("eli5", "searchqa", "trivia_qa", "squad", "natural_questions", "s2orc_title_abstract"), ("short", "long")
    ),
    "msmarco": ("short", "long", "long"),  # query, relevant passage, hard-negative passage
    # duplicate questions, citing / cited titles, captions of one image
    **dict.fromkeys(
        (
            "wikianswers",
            "stackexchange_duplicate_questions",
            "s2orc_citation_pairs",
            "flickr30k_captions",
            "coco_captions",
        ),
        ("short", "short"),
    ),
    **dict.fromkeys(("quora_duplicates", "specter"), ("short", "short", "short")),  # questions; paper titles
    # sentence paraphrases and compressions; NLI premise, entailment, contradiction
    **dict.fromkeys(("simple_wiki", "altlex", "sentence_compression"), ("sentence", "sentence")),
    "allnli": ("sentence", "sentence", "sentence"),
    # comment -> reply; question body -> answer
    **dict.fromkeys(("reddit", "yahoo_answers_question_answer"), ("medium", "medium")),
    "codesearchnet": ("medium", "long"),  # docstring -> code
    "s2orc_citation_abstract": ("long", "long"),  # citing abstract -> cited abstract
}


def _field(corpus: Any, key: str) -> Any:
    """A field of a DataConfig corpus (attribute) or of a manifest entry (dict key)."""
    return corpus[key] if isinstance(corpus, Mapping) else getattr(corpus, key)


def _prompt_texts(corpus: Any) -> dict[str, str]:
    """A corpus's prompts, "anchor" / "candidate" -> text: DataConfig corpora and typed manifests hold
    Prompt objects, manifest entries {"name", "text"} dicts; corpora from before prompts have none."""
    raw = (corpus.get("prompts") if isinstance(corpus, Mapping) else getattr(corpus, "prompts", None)) or {}
    return {key: p["text"] if isinstance(p, Mapping) else p.text for key, p in raw.items()}


def stated_profiles(corpora: Iterable[Any], prompt_tokens: Callable[[str], int] | None = None) -> list[CorpusProfile]:
    """Profiles from the table above for DataConfig corpora or manifest entries (name, record_format, weight).
    A corpus not in the table gets sentence-like columns; the column count always follows the record format.
    The table counts the texts alone: a corpus with prompts gets `prompt_tokens(prompt)` (the model's
    tokenizer: prompt_token_counter) added to its anchor column (its "anchor" prompt) and its positive
    and negative columns (its "candidate" prompt); without `prompt_tokens` such a corpus is a ValueError."""
    out = []
    for c in corpora:
        record_format = _field(c, "record_format")
        n = n_columns(record_format)
        kinds = STATED.get(_field(c, "name"), ("sentence",) * n)
        kinds = (tuple(kinds) + (kinds[-1],) * n)[:n]  # a format changed since the table: pad or cut
        columns = tuple(KINDS[k] for k in kinds)
        prompts = _prompt_texts(c)
        if prompts:
            if prompt_tokens is None:
                raise ValueError(
                    f"corpus {_field(c, 'name')!r} has prompts: counting their tokens needs the "
                    "model's tokenizer (prompt_tokens)"
                )
            keys = ("anchor",) + ("candidate",) * (n - 1)
            columns = tuple(
                dataclasses.replace(col, prompt_tokens=prompt_tokens(prompts[key])) if key in prompts else col
                for col, key in zip(columns, keys)
            )
        out.append(CorpusProfile(_field(c, "name"), record_format, float(_field(c, "weight")), columns))
    return out


def prompt_token_counter(tokenizer) -> Callable[[str], int]:
    """prompt -> the tokens it adds in front of a text, as the Beam job tokenizes prompt + text: the
    count of prompt + a word less that of the word, special tokens left out. (Tokenized alone, a
    prompt's trailing space is a token of its own in byte-level BPE (RoBERTa) and SentencePiece
    vocabularies; in front of a text it joins the text's first word.)"""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return lambda prompt: max(count(prompt + "word") - count("word"), 0)


def model_prompt_counter(model: str) -> Callable[[str], int]:
    """prompt_token_counter of `model`'s tokenizer (a Hugging Face name, a local or gs:// directory, or
    the demo model), loaded when the first prompt is counted; one that does not load is a UserError."""

    @functools.lru_cache(maxsize=None)
    def counter() -> Callable[[str], int]:
        from transformers import AutoTokenizer

        from pipeline.model_source import resolve_model_source
        from pipeline.user_errors import UserError

        try:
            return prompt_token_counter(AutoTokenizer.from_pretrained(resolve_model_source(model)))
        except Exception as e:  # noqa: BLE001 - no network, no tokenizer files: one line naming the flag
            raise UserError(
                f"--model={model}: the data config's prompts are counted with the model's tokenizer, "
                f"which did not load: {type(e).__name__}: {e}"
            ) from None

    return lambda prompt: counter()(prompt)


def corpus_profiles(manifest: Any, data_config: str | None, model: str) -> list:
    """The profiles a plan uses: the (typed) manifest's measured lengths, else the stated table for the
    data config's corpora (default: the shipped data_config.json; their prompts counted with `model`'s
    tokenizer)."""
    if manifest is not None:
        return manifest_profiles(manifest)
    from pipeline.data_config import load_data_config

    return stated_profiles(load_data_config(data_config or shipped_data_config()).corpora, model_prompt_counter(model))


def shipped_data_config() -> str:
    """The path of the repository's data_config.json (the public corpora)."""
    return os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data_config.json"
    )
