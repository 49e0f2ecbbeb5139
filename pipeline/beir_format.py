"""The "beir" input format: BEIR-format directories (corpus.jsonl, queries.jsonl, qrels/<qrels_split>.tsv)
joined in Beam into one `query` record per query (the join and its accounting: pipeline/beir.py)."""

from __future__ import annotations

from pipeline import storage
from pipeline.format_check import FormatCheckError
from pipeline.input_formats import InputFormat, SourceOutputs

CORPUS_FILE, QUERIES_FILE = "corpus.jsonl", "queries.jsonl"


class BeirDirectories(InputFormat):
    name = "beir"
    # qrels_split: the qrels file whose judgements become training records.
    options = {"qrels_split": "train"}
    reads_files = False
    counts_input_lines = False

    def parse_options(self, options, record_format, fields, files):
        if record_format != "query" or fields:
            raise ValueError(
                "a beir corpus has record_format 'query' (a query and its relevant documents) and no 'fields'"
            )
        split = options["qrels_split"]
        if not isinstance(split, str) or not split or "/" in split:
            raise ValueError(f"field 'qrels_split' must name a file qrels/<split>.tsv, got {split!r}")
        return options, fields

    def find(self, path):
        return [storage.dirname(f) for f in storage.glob(storage.join(path, CORPUS_FILE))]

    def read(self, p, corpus, files, settings) -> SourceOutputs:
        from pipeline.beir import ReadBeir

        out = SourceOutputs([], [], [], [], [])
        for i, directory in enumerate(files):
            got = p | f"Beir/{corpus.name}/{i}" >> ReadBeir(
                corpus.name, directory, corpus.options["qrels_split"], settings.batch_lines
            )
            out.batches.append(got.batches)
            out.line_counts.append(got.line_counts)
            out.events.append(got.events)
            out.rejected.append(got.rejected)
        return out

    def check_counts(self, counts):
        from pipeline.beir import check_beir_counts

        return check_beir_counts(counts)

    def check_before_start(self, corpus, files, n):
        missing = [m for d in files for m in missing_files(d, corpus.options["qrels_split"])]
        if missing:
            raise FormatCheckError(f"corpus {corpus.name!r} (beir): missing {', '.join(missing)}")


def missing_files(directory: str, split: str) -> list[str]:
    """The files of a BEIR directory that are not there (corpus.jsonl was found by `find`)."""
    needed = [storage.join(directory, QUERIES_FILE), storage.join(directory, "qrels", f"{split}.tsv")]
    return [f for f in needed if not storage.exists(f)]


BEIR = BeirDirectories()
