"""The evaluation sets the job keeps out of training (`--decontaminate=PATH[,PATH...]`), read in Beam.

Each PATH is one set, named by its last path component (names must differ), of one kind:

  beir   a BEIR directory (queries.jsonl, qrels/test.tsv, and corpus.jsonl): its test queries, i.e. the
         queries judged in qrels/test.tsv; with --decontaminate_documents also the documents judged
         relevant (score > 0) to them, as (title + " " + text).strip() like the BEIR readers
  sts    a .csv / .tsv file in the STS benchmark's tab-separated layout, the one the project's STS
         evaluator reads (score in column 5, sentences in columns 6 and 7, no quoting): both sentences
  jsonl  a .jsonl / .json file (.gz allowed): each line a JSON string, or an object with a "text" string
  text   any other file (.gz allowed): each non-blank line is a text

The files are read and joined on the workers (the BEIR queries with their qrels by query id, documents
by document id), never in the launcher's memory. A text, JSON-lines or STS file is read by one DoFn
call in batches of lines, as the corpora are (pipeline/reading.py), so no step pays Beam's cost per
text. Output: batches, lists of up to EVAL_BATCH (set name, text) of one set, and per set the counters
`texts` (texts taken, repeats included) and `skipped` (lines that give no text: bad JSON, an STS
header or short row, a BEIR line the BEIR readers reject; listed in the manifest, not fatal), counted
per batch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import NamedTuple

import apache_beam as beam

from pipeline import beir, reading, storage
from pipeline.user_errors import UserError

BEIR_SPLIT = "test"
STS_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
COUNTERS = ("texts", "skipped")
EVAL_BATCH = 1024  # evaluation texts a batch: keyed at once (decontaminate.EvalKeys), one shuffle element per bucket
MAX_LINE_BYTES = 1 << 30  # an evaluation file's line is read whole, however long (a text is never cut)


class DecontaminateError(UserError):
    """A --decontaminate path that cannot be read as an evaluation set."""


@dataclasses.dataclass(frozen=True)
class EvalSet:
    name: str
    path: str
    kind: str  # beir, sts, jsonl, text
    documents: bool = False  # beir: the relevant documents too

    def describe(self) -> dict:
        what = {
            "beir": f"BEIR {BEIR_SPLIT} queries" + (" and their relevant documents" if self.documents else ""),
            "sts": "STS sentence pairs (both sentences)",
            "jsonl": "JSON-lines texts",
            "text": "text lines",
        }
        return {"name": self.name, "path": self.path, "kind": self.kind, "texts_of": what[self.kind]}


def _kind(path: str) -> str:
    if storage.exists(storage.join(path, "queries.jsonl")):
        return "beir"
    name = path.lower()
    if name.endswith(STS_SUFFIXES):
        return "sts"
    return "jsonl" if name.endswith(JSONL_SUFFIXES) else "text"


def resolve_eval_sets(spec: str, documents: bool = False) -> tuple[EvalSet, ...]:
    """The sets of a --decontaminate value, checked on the launcher: each path exists (a BEIR directory
    with its test qrels, and its corpus.jsonl when documents are asked for), names are unique."""
    paths = [p.strip() for p in (spec or "").split(",") if p.strip()]
    sets, names = [], {}
    for path in paths:
        path = storage.abspath(path)
        if not storage.exists(path):
            raise DecontaminateError(f"--decontaminate: no evaluation set at {path}")
        kind = _kind(path)
        if kind == "beir":
            needed = [storage.join(path, "qrels", f"{BEIR_SPLIT}.tsv")] + (
                [storage.join(path, "corpus.jsonl")] if documents else []
            )
            missing = [p for p in needed if not storage.exists(p)]
            if missing:
                raise DecontaminateError(f"--decontaminate: the BEIR directory {path} has no {', '.join(missing)}")
        name = os.path.basename(path.rstrip("/"))
        if name in names:
            raise DecontaminateError(
                f"--decontaminate: two evaluation sets are named {name!r} ({names[name]} and "
                f"{path}); a set is named by its last path component"
            )
        names[name] = path
        sets.append(EvalSet(name, path, kind, documents and kind == "beir"))
    if documents and not any(s.kind == "beir" for s in sets):
        raise DecontaminateError("--decontaminate_documents needs a BEIR directory among --decontaminate's paths")
    return tuple(sets)


def sts_sentences(raw: bytes) -> list[str] | None:
    """Both sentences of an STS benchmark line, or None for a line that is not an STS row (a header, too
    few columns, a score that is not a number): the layout trainer/evaluators/sts.py reads."""
    cells = raw.decode("utf-8", "replace").rstrip("\r").split("\t")
    if len(cells) < 7:
        return None
    try:
        float(cells[4])
    except ValueError:
        return None
    return [cells[5], cells[6]]


def jsonl_text(raw: bytes) -> str | None:
    """The text of a JSON-lines line: a JSON string, or an object's "text" string; None otherwise."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if isinstance(obj, dict):
        obj = obj.get("text")
    return obj if isinstance(obj, str) else None


def texts_of_line(kind: str, raw: bytes) -> list[str] | None:
    """The texts of one line of a text, JSON-lines or STS file; None for a line that gives none."""
    if kind == "sts":
        return sts_sentences(raw)
    if kind == "jsonl":
        text = jsonl_text(raw)
        return None if text is None else [text]
    text = raw.decode("utf-8", "replace").strip()
    return [text] if text else None


COUNTS = "counts"


class _ReadLineFile(beam.DoFn):
    """(set name, path, kind) of a text, jsonl or sts set -> batches [(set, text), ...], and ((set,
    counter), n) on COUNTS per batch of lines read."""

    def process(self, element):
        name, path, kind = element
        for batch in reading.iter_line_batches(name, path, EVAL_BATCH, MAX_LINE_BYTES):
            texts, skipped = [], 0
            for raw in batch.lines:
                found = texts_of_line(kind, raw)
                if found is None:
                    skipped += 1
                else:
                    texts.extend((name, t) for t in found)
            if texts:
                yield texts
            for counter, n in (("texts", len(texts)), ("skipped", skipped)):
                if n:
                    yield beam.pvalue.TaggedOutput(COUNTS, ((name, counter), n))


class _ReadBeirSet(beam.PTransform):
    def __init__(self, s: EvalSet):
        super().__init__()
        self._set = s

    def expand(self, p):
        s, join = self._set, storage.join
        queries_path, qrels_path = join(s.path, "queries.jsonl"), join(s.path, "qrels", f"{BEIR_SPLIT}.tsv")

        def read(name, path, fn, *tags):
            return (
                p
                | f"Read{name}" >> beam.io.ReadFromText(path, coder=beam.coders.BytesCoder())
                | f"Parse{name}" >> beam.ParDo(fn).with_outputs(beir.REJECTED, beir.EVENT, *tags, main="main")
            )

        queries = read("Queries", queries_path, beir.ParseQueries(s.name, queries_path))
        qrels = read("Qrels", qrels_path, beir.ParseQrels(s.name, qrels_path), beir.ParseQrels.JUDGED)
        judged = qrels[beir.ParseQrels.JUDGED] | "JudgedQueries" >> beam.Distinct()
        texts = [
            {"text": queries.main, "judged": judged}
            | "ByQuery" >> beam.CoGroupByKey()
            | "TestQueries" >> beam.FlatMap(_judged_texts, s.name)
        ]
        skipped = [queries[beir.REJECTED], qrels[beir.REJECTED]]
        if s.documents:
            docs_path = join(s.path, "corpus.jsonl")
            docs = read("Documents", docs_path, beir.ParseDocuments(s.name, docs_path))
            relevant = (
                qrels.main | "RelevantDocuments" >> beam.Map(lambda kv: (kv[0], None)) | "Once" >> beam.Distinct()
            )
            texts.append(
                {"text": docs.main, "judged": relevant}
                | "ByDocument" >> beam.CoGroupByKey()
                | "RelevantTexts" >> beam.FlatMap(_judged_texts, s.name)
            )
            skipped.append(docs[beir.REJECTED])
        skipped_counts = (
            skipped
            | "AllSkipped" >> beam.Flatten()
            | "SkippedCount" >> beam.Map(lambda _, name: ((name, "skipped"), 1), s.name)
        )
        batches = (
            texts
            | "Texts" >> beam.Flatten()
            | "Batches" >> beam.BatchElements(min_batch_size=EVAL_BATCH, max_batch_size=EVAL_BATCH)
        )
        taken = batches | "TextCount" >> beam.Map(lambda batch, name: ((name, "texts"), len(batch)), s.name)
        return batches, (skipped_counts, taken) | "Counts" >> beam.Flatten()


def _judged_texts(element, name: str):
    """(id, {"text": [...], "judged": [...]}) -> (set, text) for an id that is judged; a repeated id
    keeps its first text in sorted order (pipeline/beir.py's rule)."""
    _, grouped = element
    texts = sorted(grouped["text"])
    if grouped["judged"] and texts:
        yield name, texts[0]


class EvalTexts(NamedTuple):
    batches: object  # PCollection of [(set name, text), ...], up to EVAL_BATCH texts of one set
    counts: object  # PCollection of ((set name, counter), n)


class ReadEvalTexts(beam.PTransform):
    def __init__(self, sets: tuple[EvalSet, ...]):
        super().__init__()
        self._sets = sets

    def expand(self, p):
        batches, counts = [], []
        files = [(s.name, s.path, s.kind) for s in self._sets if s.kind != "beir"]
        for i, s in enumerate(self._sets):
            if s.kind == "beir":
                b, c = p | f"Set{i}" >> _ReadBeirSet(s)
                batches.append(b)
                counts.append(c)
        if files:
            read = (
                p
                | "LineFiles" >> beam.Create(files, reshuffle=False)
                | "ReadLineFiles" >> beam.ParDo(_ReadLineFile()).with_outputs(COUNTS, main="main")
            )
            batches.append(read.main)
            counts.append(read[COUNTS])
        batches = batches | "EvalBatches" >> beam.Flatten()
        counts = counts | "EvalCounts" >> beam.Flatten() | "CountEval" >> beam.CombinePerKey(sum)
        return EvalTexts(batches, counts)
