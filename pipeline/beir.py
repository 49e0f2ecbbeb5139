"""A BEIR-format directory as a training corpus: one `query` record per query with its relevant documents.

  DIR/corpus.jsonl        {"_id", "title", "text"}: a document's text is (title + " " + text).strip(),
                          as BEIR, sentence-transformers and MTEB build it
  DIR/queries.jsonl       {"_id", "text"}
  DIR/qrels/SPLIT.tsv     query-id <TAB> corpus-id <TAB> score (a header line is recognised and skipped);
                          score > 0 marks a relevant document

The join runs in Beam, keyed by document id and then by query id, so no file is held in one
process's memory (Dataflow scales it like any other step). Each query with at least one relevant
document that exists becomes the line {"query": text, "pos": [documents, sorted by id]}, read by the
`query` record format downstream. Events (counted into the manifest's `source` record) account for
every input line:

  documents_read = documents kept + documents_bad (rejected: bad JSON, no id, empty text); of those
                   kept, duplicate_document_ids repeat an id (its first text in sorted order is kept)
  queries_read   = records + queries_not_in_split + queries_without_relevant_document
                   + duplicate_query_ids + bad queries (rejected)
  qrels_read     = qrels_relevant + qrels_not_relevant (score <= 0) + qrels_missing_document
                   + bad qrels (rejected); a header line is qrels_header, not read
  qrels_relevant = positives + qrels_missing_query + duplicate_qrels
"""

from __future__ import annotations

import json
from typing import NamedTuple

import apache_beam as beam

from pipeline import (
    hf_filesystem,  # noqa: F401 (registers hf:// with Beam's FileSystems)
    parsing,
)
from pipeline.lines import LineBatch
from pipeline.processing import rejected_record

QRELS_HEADER = ("query-id", "corpus-id", "score")
EVENTS = (
    "documents_read",
    "documents_bad",
    "duplicate_document_ids",
    "queries_read",
    "queries_bad",
    "duplicate_query_ids",
    "records",
    "positives",
    "queries_not_in_split",
    "queries_without_relevant_document",
    "qrels_read",
    "qrels_header",
    "qrels_bad",
    "qrels_relevant",
    "qrels_not_relevant",
    "qrels_missing_document",
    "qrels_missing_query",
    "duplicate_qrels",
)
REJECTED = "rejected"
EVENT = "event"


def check_beir_counts(n: dict) -> list[str]:
    """The identities of the module docstring that do not hold for counts `n` (empty: all hold)."""
    g = lambda k: n.get(k, 0)  # noqa: E731
    identities = {
        "queries_read = records + queries_not_in_split + queries_without_relevant_document + duplicate_query_ids "
        "+ queries_bad": g("queries_read")
        == g("records")
        + g("queries_not_in_split")
        + g("queries_without_relevant_document")
        + g("duplicate_query_ids")
        + g("queries_bad"),
        "qrels_read = qrels_relevant + qrels_not_relevant + qrels_missing_document + qrels_bad": g("qrels_read")
        == g("qrels_relevant") + g("qrels_not_relevant") + g("qrels_missing_document") + g("qrels_bad"),
        "qrels_relevant = positives + qrels_missing_query + duplicate_qrels": g("qrels_relevant")
        == g("positives") + g("qrels_missing_query") + g("duplicate_qrels"),
    }
    return [k for k, ok in identities.items() if not ok]


def _rejection(corpus: str, path: str, reason: str, detail: str, raw: bytes, event: str):
    return [
        beam.pvalue.TaggedOutput(REJECTED, rejected_record(corpus, path, None, reason, detail, raw)),
        beam.pvalue.TaggedOutput(EVENT, (corpus, event)),
    ]


def _decode_object(raw: bytes, keys: tuple[str, ...]) -> dict:
    """A JSON object line with string values at `keys` ("_id" may be a number); raises Rejection."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise parsing.Rejection(parsing.INVALID_UTF8, str(e)) from None
    except (ValueError, RecursionError) as e:
        raise parsing.Rejection(parsing.BAD_JSON, str(e)[:200]) from None
    if not isinstance(obj, dict) or "_id" not in obj:
        raise parsing.Rejection(parsing.WRONG_FORMAT, "a BEIR line is a JSON object with an '_id'")
    if isinstance(obj["_id"], (int, float)) and not isinstance(obj["_id"], bool):
        obj["_id"] = str(obj["_id"])
    for k in ("_id", *keys):
        if not isinstance(obj.get(k, ""), str):
            raise parsing.Rejection(parsing.NON_STRING_TEXT, f"field {k!r} is not a string")
    return obj


class ParseDocuments(beam.DoFn):
    def __init__(self, corpus: str, path: str):
        self._corpus, self._path = corpus, path

    def process(self, raw: bytes):
        yield beam.pvalue.TaggedOutput(EVENT, (self._corpus, "documents_read"))
        try:
            obj = _decode_object(raw, ("title", "text"))
            text = (obj.get("title", "") + " " + obj.get("text", "")).strip()
            if not text:
                raise parsing.Rejection(parsing.EMPTY_TEXT, f"document {obj['_id']!r} has no title and no text")
        except parsing.Rejection as r:
            yield from _rejection(self._corpus, self._path, r.reason, r.detail, raw, "documents_bad")
            return
        yield obj["_id"], text


class ParseQueries(beam.DoFn):
    def __init__(self, corpus: str, path: str):
        self._corpus, self._path = corpus, path

    def process(self, raw: bytes):
        yield beam.pvalue.TaggedOutput(EVENT, (self._corpus, "queries_read"))
        try:
            obj = _decode_object(raw, ("text",))
            if not obj.get("text", "").strip():
                raise parsing.Rejection(parsing.EMPTY_TEXT, f"query {obj['_id']!r} has no text")
        except parsing.Rejection as r:
            yield from _rejection(self._corpus, self._path, r.reason, r.detail, raw, "queries_bad")
            return
        yield obj["_id"], obj["text"]


class ParseQrels(beam.DoFn):
    """A qrels line -> (doc id, query id) on the main output when relevant; (query id, None) on
    JUDGED for every judged query, relevant or not."""

    JUDGED = "judged"

    def __init__(self, corpus: str, path: str):
        self._corpus, self._path = corpus, path

    def process(self, raw: bytes):
        try:
            cells = raw.decode("utf-8").rstrip("\r").split("\t")
        except UnicodeDecodeError as e:
            cells, bad = [], (parsing.INVALID_UTF8, str(e))
        if tuple(c.strip().lower() for c in cells) == QRELS_HEADER:
            yield beam.pvalue.TaggedOutput(EVENT, (self._corpus, "qrels_header"))
            return
        yield beam.pvalue.TaggedOutput(EVENT, (self._corpus, "qrels_read"))
        if cells:
            bad = (parsing.WRONG_FORMAT, f"{len(cells)} tab-separated cell(s), not query-id, corpus-id, score")
            if len(cells) == 3 and cells[0] and cells[1]:
                try:
                    score, bad = float(cells[2]), None
                except ValueError:
                    bad = (parsing.WRONG_FORMAT, f"score {cells[2][:40]!r} is not a number")
        if bad:
            yield from _rejection(self._corpus, self._path, *bad, raw, "qrels_bad")
            return
        query_id, doc_id = cells[0], cells[1]
        yield beam.pvalue.TaggedOutput(self.JUDGED, (query_id, None))
        if score > 0:
            yield doc_id, query_id
        else:
            yield beam.pvalue.TaggedOutput(EVENT, (self._corpus, "qrels_not_relevant"))


def _first(texts) -> tuple[str | None, int]:
    """The text kept for an id and how many repeats were dropped (sorted: the same in every run)."""
    texts = sorted(texts)
    return (texts[0] if texts else None), max(0, len(texts) - 1)


class JoinDocuments(beam.DoFn):
    """doc id, {"doc": [text], "qrel": [query ids]} -> (query id, (doc id, text))."""

    def __init__(self, corpus: str):
        self._corpus = corpus

    def process(self, element):
        doc_id, grouped = element
        text, repeats = _first(grouped["doc"])
        for _ in range(repeats):
            yield beam.pvalue.TaggedOutput(EVENT, (self._corpus, "duplicate_document_ids"))
        for query_id in grouped["qrel"]:
            yield beam.pvalue.TaggedOutput(
                EVENT, (self._corpus, "qrels_relevant" if text is not None else "qrels_missing_document")
            )
            if text is not None:
                yield query_id, (doc_id, text)


class JoinQueries(beam.DoFn):
    """query id, {"query": [text], "pos": [(doc id, text)], "judged": [None...]} -> a `query` line."""

    def __init__(self, corpus: str):
        self._corpus = corpus

    def process(self, element):
        _, grouped = element
        text, repeats = _first(grouped["query"])
        event = lambda name: beam.pvalue.TaggedOutput(EVENT, (self._corpus, name))  # noqa: E731
        for _ in range(repeats):
            yield event("duplicate_query_ids")
        positives = dict(sorted(grouped["pos"]))  # doc id -> text; a repeated (query, doc) judgement counts once
        for _ in range(len(grouped["pos"]) - len(positives)):
            yield event("duplicate_qrels")
        if text is None:
            for _ in positives:
                yield event("qrels_missing_query")
            return
        if positives:
            for _ in positives:
                yield event("positives")
            yield event("records")
            yield json.dumps({"query": text, "pos": list(positives.values())}, ensure_ascii=False).encode("utf-8")
        elif grouped["judged"]:
            yield event("queries_without_relevant_document")
        else:
            yield event("queries_not_in_split")


class BeirOutputs(NamedTuple):
    batches: object
    line_counts: object
    events: object
    rejected: object


class ReadBeir(beam.PTransform):
    def __init__(self, corpus: str, directory: str, split: str, batch_lines: int):
        super().__init__()
        self._corpus, self._dir, self._split, self._batch_lines = corpus, directory, split, batch_lines

    def _read(self, p, name: str, path: str, fn: beam.DoFn, *extra_tags: str):
        # Bytes, not str: a line that is not UTF-8 is a rejected record, not a failed read.
        return (
            p
            | f"Read{name}" >> beam.io.ReadFromText(path, coder=beam.coders.BytesCoder())
            | f"Parse{name}" >> beam.ParDo(fn).with_outputs(REJECTED, EVENT, *extra_tags, main="main")
        )

    def expand(self, p):
        from apache_beam.io.filesystems import FileSystems

        corpus, join = self._corpus, FileSystems.join
        docs_path, queries_path = join(self._dir, "corpus.jsonl"), join(self._dir, "queries.jsonl")
        qrels_path = join(self._dir, "qrels", f"{self._split}.tsv")
        docs = self._read(p, "Documents", docs_path, ParseDocuments(corpus, docs_path))
        queries = self._read(p, "Queries", queries_path, ParseQueries(corpus, queries_path))
        qrels = self._read(p, "Qrels", qrels_path, ParseQrels(corpus, qrels_path), ParseQrels.JUDGED)
        joined_docs = (
            {"doc": docs.main, "qrel": qrels.main}
            | "ByDocument" >> beam.CoGroupByKey()
            | "JoinDocuments" >> beam.ParDo(JoinDocuments(corpus)).with_outputs(EVENT, main="main")
        )
        judged = qrels[ParseQrels.JUDGED] | "JudgedOnce" >> beam.Distinct()
        records = (
            {"query": queries.main, "pos": joined_docs.main, "judged": judged}
            | "ByQuery" >> beam.CoGroupByKey()
            | "JoinQueries" >> beam.ParDo(JoinQueries(corpus)).with_outputs(EVENT, main="main")
        )
        directory = self._dir
        batches = (
            records.main
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._batch_lines)
            | "ToLineBatch" >> beam.Map(lambda lines: LineBatch(corpus, directory, 0, list(lines), ()))
        )
        line_counts = batches | "CountLines" >> beam.Map(lambda b: (b.corpus, len(b.lines)))
        events = (
            docs[EVENT],
            queries[EVENT],
            qrels[EVENT],
            joined_docs[EVENT],
            records[EVENT],
        ) | "Events" >> beam.Flatten()
        rejected = (docs[REJECTED], queries[REJECTED], qrels[REJECTED]) | "Rejected" >> beam.Flatten()
        return BeirOutputs(batches, line_counts, events, rejected)
