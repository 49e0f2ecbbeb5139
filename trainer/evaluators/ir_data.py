"""Retrieval data sets in the BEIR format, local or gs:// (pipeline/storage.py). TensorFlow- and JAX-free.

    D/corpus.jsonl        {"_id": "d1", "title": "...", "text": "..."} per line (title optional)
    D/queries.jsonl       {"_id": "q1", "text": "..."} per line
    D/qrels/<split>.tsv   query-id <tab> corpus-id <tab> score, after a header line

As BEIR, MTEB and the sentence-transformers examples do: a document is `(title + " " + text).strip()`;
a qrels row is relevant when its score is > 0 (0 marks a judged non-relevant document); a query counts
only when it has a relevant document and a line in queries.jsonl. Documents and queries whose text is
empty are kept (embedded as the empty text), as sentence-transformers' InformationRetrievalEvaluator
keeps them, so that the metrics are over the same sets; they are counted and logged. Relevant ids
missing from the corpus still count in recall's denominator, as in that evaluator. Every malformed
line is a BeirFormatError (a UserError) naming the file and line.
"""

from __future__ import annotations

import dataclasses
import json
import logging

from pipeline import storage
from pipeline.user_errors import UserError
from trainer.config import ir_dataset_name

log = logging.getLogger(__name__)


class BeirFormatError(UserError):
    """A BEIR directory that is missing a file, or a line that is not in the format."""


@dataclasses.dataclass
class BeirDataset:
    name: str
    corpus_ids: list[str]
    corpus: list[str]  # document texts, title joined
    query_ids: list[str]
    queries: list[str]
    relevant: dict[str, set[str]]  # query id -> relevant corpus ids (every query of query_ids has one)
    empty_documents: int = 0  # documents of corpus whose text is "" (kept)
    empty_queries: int = 0  # queries of query_ids whose text is "" (kept)


def _jsonl(path: str, fields: tuple[str, ...]) -> dict[str, dict]:
    if not storage.exists(path):
        raise BeirFormatError(
            f"no {path.rsplit('/', 1)[-1]} at {path} (a BEIR directory has corpus.jsonl, "
            "queries.jsonl and qrels/<split>.tsv)"
        )
    out: dict[str, dict] = {}
    with storage.open_file(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise BeirFormatError(f"{path}:{lineno}: not JSON ({e.msg})") from None
            if (
                not isinstance(rec, dict)
                or not isinstance(rec.get("_id"), (str, int))
                or not all(isinstance(rec.get(k) or "", str) for k in fields)
            ):
                raise BeirFormatError(
                    f'{path}:{lineno}: expected an object with a string "_id" and string '
                    f"{', '.join(repr(k) for k in fields)}"
                )
            key = str(rec["_id"])
            if key in out:
                raise BeirFormatError(f"{path}:{lineno}: _id {key!r} repeats line {out[key]['line']}")
            out[key] = dict(rec, line=lineno)
    return out


def read_qrels(path: str) -> dict[str, set[str]]:
    """Query id -> the corpus ids with score > 0."""
    if not storage.exists(path):
        raise BeirFormatError(f"no qrels file at {path}")
    relevant: dict[str, set[str]] = {}
    with storage.open_file(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            cols = line.rstrip("\r\n").split("\t")
            if not line.strip():
                continue
            if len(cols) != 3:
                raise BeirFormatError(
                    f"{path}:{lineno}: expected 3 tab-separated columns (query-id, corpus-id, score), found {len(cols)}"
                )
            try:
                score = float(cols[2])
            except ValueError:
                if lineno == 1:  # the header: query-id corpus-id score
                    continue
                raise BeirFormatError(f"{path}:{lineno}: score {cols[2]!r} is not a number") from None
            if score > 0:
                relevant.setdefault(cols[0], set()).add(cols[1])
    return relevant


def read_beir(path: str, split: str = "test") -> BeirDataset:
    """The data set in directory `path` with the qrels of `split`."""
    if not storage.exists(path):
        raise BeirFormatError(f"no BEIR directory at {path}")
    docs = _jsonl(storage.join(path, "corpus.jsonl"), ("title", "text"))
    queries = _jsonl(storage.join(path, "queries.jsonl"), ("text",))
    relevant = read_qrels(storage.join(path, "qrels", f"{split}.tsv"))
    corpus = {k: ((d.get("title") or "") + " " + (d.get("text") or "")).strip() for k, d in docs.items()}
    query_text = {k: (q.get("text") or "") for k, q in queries.items()}
    query_ids = [k for k in query_text if relevant.get(k)]
    if not query_ids or not corpus:
        raise BeirFormatError(
            f"{path}: no query of queries.jsonl has a relevant document in qrels/{split}.tsv"
            if corpus
            else f"{path}: corpus.jsonl has no documents"
        )
    data = BeirDataset(
        ir_dataset_name(path),
        list(corpus),
        list(corpus.values()),
        query_ids,
        [query_text[k] for k in query_ids],
        {k: relevant[k] for k in query_ids},
        empty_documents=sum(not t for t in corpus.values()),
        empty_queries=sum(not query_text[k] for k in query_ids),
    )
    if data.empty_documents or data.empty_queries:
        log.warning(
            "%s: %d empty document(s) of %d and %d empty query(ies) of %d kept and ranked, as "
            "sentence-transformers' evaluator does",
            path,
            data.empty_documents,
            len(data.corpus),
            data.empty_queries,
            len(query_ids),
        )
    return data
