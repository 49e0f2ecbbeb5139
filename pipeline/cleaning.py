"""The cleaning stages in the job's graph: duplicate tuples (pipeline/dedup.py) and evaluation sets
(pipeline/eval_texts.py, pipeline/decontaminate.py), between the processing step and the writers.

  ProcessLineBatch --tuples (bucket, [entries])----------------------------+
                   --keys (key bucket, [(key, tuple key)])--+               |
  evaluation sets -> [(set, text)...] -> EvalKeys ----------+-CoGroupByKey--+-> JoinKeys: candidates
                                                                            +-CoGroupByKey(tuple bucket)
                                                                                -> Decide -> kept records,
                                                                                   decontaminated/, stats

Buckets: tuple keys go to ceil(lines / --clean_bucket_tuples) buckets, so a bucket, which one worker
holds while deciding, has about that many tuples; text keys to KEY_BUCKET_SHARE times fewer buckets
(a bucket's evaluation keys are held, its training keys only stream past). The counts come from the
data config's expected_lines (UNKNOWN_LINES for a corpus without), so they are the same on every
runner; the output does not depend on them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import apache_beam as beam

from pipeline import dedup, processing
from pipeline.decontaminate import EvalKeys, JoinKeys
from pipeline.eval_texts import EvalSet, ReadEvalTexts

UNKNOWN_LINES = 10_000_000  # a corpus without expected_lines counts as this many lines when sizing buckets
KEY_BUCKET_SHARE = 16
DECONTAMINATED_DIR = "decontaminated"
DECONTAMINATED = dedup.DECONTAMINATED  # the Decide output tag of removed tuples


def spec(config, deduplicate: bool, eval_sets: tuple[EvalSet, ...], bucket_tuples: int) -> dict | None:
    """The cleaning spec ProcessLineBatch gets (plain data for the workers), or None when both stages are off."""
    if not deduplicate and not eval_sets:
        return None
    lines = sum(c.expected_lines or UNKNOWN_LINES for c in config.corpora)
    tuple_buckets = max(1, math.ceil(lines / bucket_tuples))
    return {
        "deduplicate": deduplicate,
        "decontaminate": bool(eval_sets),
        "symmetric": {c.name: c.symmetric for c in config.corpora},
        "tuple_buckets": tuple_buckets,
        "key_buckets": max(1, math.ceil(tuple_buckets / KEY_BUCKET_SHARE)),
    }


def describe(deduplicate: bool, eval_sets: tuple[EvalSet, ...], documents: bool) -> dict:
    """The manifest's `cleaning` record before its counts (what was asked for, and the rules)."""
    from pipeline import normalize

    return {
        "deduplicate": deduplicate,
        "normalization": "Unicode NFKC, case folded, whitespace collapsed",
        "decontaminate": [s.describe() for s in eval_sets],
        "decontaminate_documents": documents,
        "rule": (
            f"a tuple is removed when a text of it (negatives included) equals an evaluation text after "
            f"normalisation, or both have {normalize.SPAN_WORDS} words or more and share "
            f"{normalize.SPAN_WORDS} consecutive normalised words"
        )
        if eval_sets
        else None,
    }


class Cleaned(NamedTuple):
    outputs: object  # the Decide step's tagged outputs: output_tag(corpus, split), STATS, DECONTAMINATED
    eval_counts: object  # ((set, counter), n), or None without evaluation sets


def clean(p, results, c: dict, eval_sets: tuple[EvalSet, ...], tags: list[str], max_seq_length: int) -> Cleaned:
    groups = {"copies": results[processing.TUPLES]}
    eval_counts = None
    if eval_sets:
        evals = p | "EvaluationSets" >> ReadEvalTexts(eval_sets)
        eval_counts = evals.counts
        eval_keys = evals.batches | "EvalKeys" >> beam.ParDo(EvalKeys(c["key_buckets"]))
        groups["hits"] = (
            {"train": results[processing.KEYS], "eval": eval_keys}
            | "ByTextKey" >> beam.CoGroupByKey()
            | "JoinKeys" >> beam.ParDo(JoinKeys(c["tuple_buckets"]))
        )
    outputs = (
        groups
        | "ByTuple" >> beam.CoGroupByKey()
        | "Decide"
        >> beam.ParDo(
            dedup.Decide(c["deduplicate"], max_seq_length, processing.output_tag, processing.STATS)
        ).with_outputs(dedup.DECONTAMINATED, processing.STATS, *tags)
    )
    return Cleaned(outputs, eval_counts)


def manifest_record(
    deduplicate: bool, eval_sets: tuple[EvalSet, ...], documents: bool, counts: dict, entries: list[dict]
) -> dict:
    """The manifest's `cleaning` record: `describe`, with per evaluation set the texts read and skipped
    (counts: ((set, counter), n)) and the training lines it removed, summed over the corpus entries."""
    removed: dict[str, int] = {}
    for e in entries:
        for name, n in e["decontaminated"]["by_set"].items():
            removed[name] = removed.get(name, 0) + n
    record = describe(deduplicate, eval_sets, documents)
    record["decontaminate"] = [
        {
            **s.describe(),
            "texts": counts.get((s.name, "texts"), 0),
            "skipped": counts.get((s.name, "skipped"), 0),
            "removed_lines": removed.get(s.name, 0),
        }
        for s in eval_sets
    ]
    return record
