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
by document id), never in the launcher's memory. Output: (set name, text) elements, and per set the
counters `texts` (texts taken, repeats included) and `skipped` (lines that give no text: bad JSON, an
STS header or short row, a BEIR line the BEIR readers reject; listed in the manifest, not fatal).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import NamedTuple

import apache_beam as beam

from pipeline import beir, storage
from pipeline.user_errors import UserError

BEIR_SPLIT = "test"
STS_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
COUNTERS = ("texts", "skipped")


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


class _TextsOfLines(beam.DoFn):
    def __init__(self, name: str, kind: str):
        self._name, self._kind = name, kind

    def process(self, raw: bytes):
        if self._kind == "sts":
            texts = sts_sentences(raw)
        elif self._kind == "jsonl":
            text = jsonl_text(raw)
            texts = None if text is None else [text]
        else:
            text = raw.decode("utf-8", "replace").strip()
            texts = [text] if text else None
        if texts is None:
            yield beam.pvalue.TaggedOutput(COUNTS, (self._name, "skipped"))
            return
        for t in texts:
            yield self._name, t


COUNTS = "counts"


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
            | "SkippedCount" >> beam.Map(lambda _, name: (name, "skipped"), s.name)
        )
        return texts | "Texts" >> beam.Flatten(), skipped_counts


def _judged_texts(element, name: str):
    """(id, {"text": [...], "judged": [...]}) -> (set, text) for an id that is judged; a repeated id
    keeps its first text in sorted order (pipeline/beir.py's rule)."""
    _, grouped = element
    texts = sorted(grouped["text"])
    if grouped["judged"] and texts:
        yield name, texts[0]


class EvalTexts(NamedTuple):
    texts: object  # PCollection of (set name, text)
    counts: object  # PCollection of ((set name, counter), n)


class ReadEvalTexts(beam.PTransform):
    def __init__(self, sets: tuple[EvalSet, ...]):
        super().__init__()
        self._sets = sets

    def expand(self, p):
        texts, counts = [], []
        for i, s in enumerate(self._sets):
            if s.kind == "beir":
                t, c = p | f"Set{i}" >> _ReadBeirSet(s)
            else:
                out = (
                    p
                    | f"Set{i}/Read" >> beam.io.ReadFromText(s.path, coder=beam.coders.BytesCoder())
                    | f"Set{i}/Texts" >> beam.ParDo(_TextsOfLines(s.name, s.kind)).with_outputs(COUNTS, main="main")
                )
                t, c = out.main, out[COUNTS]
            texts.append(t)
            counts += [c, t | f"Set{i}/Taken" >> beam.Map(lambda kv: (kv[0], "texts"))]
        texts = texts | "EvalTexts" >> beam.Flatten()
        counts = counts | "EvalCounts" >> beam.Flatten() | "CountEval" >> beam.combiners.Count.PerElement()
        return EvalTexts(texts, counts)
