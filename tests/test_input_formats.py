"""pipeline/input_formats.py: a format added from this file alone (no project file edited) is read by
the data config, the start-up check, the job and the manifest, as the shipped formats are."""

import json
import os

import apache_beam as beam
import pytest
from _tfrecords import read_tfrecords

from pipeline import input_formats, job
from pipeline.data_config import DataConfigError, parse_data_config
from pipeline.format_check import FormatCheckError, check_before_start
from pipeline.input_formats import InputFormat, SourceOutputs
from pipeline.lines import LineBatch
from pipeline.manifest import read_manifest
from pipeline.record_schema import decode_record, fingerprint

LINES = [
    "what is a cat\ta small animal",
    "what is a dog\ta loyal animal",
    "no separator here",
    "what is a fox\ta wild animal",
]


class _TsvToBatches(beam.DoFn):
    """A TSV file -> one LineBatch of pair lines, events for its own accounting."""

    def __init__(self, corpus, delimiter):
        self._corpus, self._delimiter = corpus, delimiter

    def process(self, path):
        with open(path, encoding="utf-8") as f:
            rows = [line.rstrip("\n").split(self._delimiter) for line in f]
        lines = []
        for row in rows:
            yield beam.pvalue.TaggedOutput("events", (self._corpus, "rows_read"))
            if len(row) == 2:
                lines.append(json.dumps(row).encode())
                yield beam.pvalue.TaggedOutput("events", (self._corpus, "pairs"))
            else:  # left to the parser: a wrong_format rejection, as any bad line
                lines.append(json.dumps(row).encode())
                yield beam.pvalue.TaggedOutput("events", (self._corpus, "not_pairs"))
        yield LineBatch(self._corpus, path, 1, lines, ())
        yield beam.pvalue.TaggedOutput("counts", (self._corpus, len(lines)))


class TsvPairs(InputFormat):
    name = "toy_tsv"
    options = {"delimiter": "\t"}

    def parse_options(self, options, record_format, fields, files):
        if record_format != "pair" or len(options["delimiter"]) != 1:
            raise ValueError("a toy_tsv corpus is a pair corpus with a one-character 'delimiter'")
        return options, fields

    def read(self, p, corpus, files, settings):
        got = (
            p
            | f"Toy/{corpus.name}/Files" >> beam.Create(files)
            | f"Toy/{corpus.name}/Read"
            >> beam.ParDo(_TsvToBatches(corpus.name, corpus.options["delimiter"])).with_outputs(
                "events", "counts", main="batches"
            )
        )
        return SourceOutputs([got.batches], [got.counts], [got.events], [], [])

    def check_counts(self, counts):
        ok = counts.get("rows_read", 0) == counts.get("pairs", 0) + counts.get("not_pairs", 0)
        return [] if ok else ["rows_read = pairs + not_pairs"]

    def check_before_start(self, corpus, files, n):
        for f in files:
            if not f.endswith(".tsv"):
                raise FormatCheckError(f"corpus {corpus.name!r}: {f} is not a .tsv file")


@pytest.fixture(scope="module")
def toy():
    fmt = input_formats.register(TsvPairs())
    yield fmt
    input_formats._LOADED.pop(fmt.name)


def _config(**corpus):
    return parse_data_config(
        {
            "corpora": [
                {
                    "name": "t",
                    "files": ["pairs.tsv"],
                    "record_format": "pair",
                    "weight": 1,
                    "input_format": "toy_tsv",
                    **corpus,
                }
            ]
        }
    )


def test_the_data_config_takes_the_format_and_its_options(toy):
    assert "toy_tsv" in input_formats.names() and input_formats.get("toy_tsv") is toy
    c = _config(delimiter="|").corpora[0]
    assert c.reader is toy and c.options == {"delimiter": "|"} and c.to_json()["delimiter"] == "|"
    assert _config().corpora[0].options == {"delimiter": "\t"}
    with pytest.raises(DataConfigError, match="one-character 'delimiter'"):
        _config(delimiter="||")
    with pytest.raises(DataConfigError, match="'delimiter' applies to input_format 'toy_tsv' only"):
        parse_data_config(
            {"corpora": [{"name": "t", "files": ["x"], "record_format": "pair", "weight": 1, "delimiter": "|"}]}
        )
    with pytest.raises(DataConfigError, match="must be one of lines, beir, reddit_comments, toy_tsv"):
        _config(input_format="csv")


def test_the_start_up_check_is_the_formats(toy):
    config = _config()
    check_before_start(config, {"t": ["/data/pairs.tsv"]})
    with pytest.raises(FormatCheckError, match="pairs.csv is not a .tsv file"):
        check_before_start(config, {"t": ["/data/pairs.csv"]})


def test_the_job_reads_a_toy_format_and_counts_its_events(toy, tmp_path, tiny_bert_dir):
    (tmp_path / "pairs.tsv").write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    (tmp_path / "cfg.json").write_text(
        json.dumps(
            {
                "corpora": [
                    {
                        "name": "toy",
                        "files": ["pairs.tsv"],
                        "record_format": "pair",
                        "weight": 1,
                        "input_format": "toy_tsv",
                    }
                ]
            }
        )
    )
    out = tmp_path / "out"
    assert (
        job.run(
            [
                f"--data_config={tmp_path / 'cfg.json'}",
                f"--output_dir={out}",
                f"--tokenizer={tiny_bert_dir}",
                "--max_seq_length=16",
                "--validation_fraction=0",
            ]
        )
        == 0
    )
    c = read_manifest(str(out))["corpora"][0]
    assert c["lines_read"] == 4 and c["rejected"]["by_reason"] == {"wrong_format": 1}
    assert c["source"] == {"input_format": "toy_tsv", "counts": {"not_pairs": 1, "pairs": 3, "rows_read": 4}}
    written = sorted(
        tuple(decode_record(r)["fingerprints"])
        for f in c["train_files"]
        for r in read_tfrecords(os.path.join(str(out), f))
    )
    assert written == sorted(tuple(map(fingerprint, line.split("\t"))) for line in LINES if "\t" in line)
