"""pipeline/format_check.py: the job stops before it starts when a declared format rejects most lines."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import format_check, job
from pipeline.data_config import parse_data_config


def _gz(path, objs):
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(o) + "\n" for o in objs)


def _corpus(**kw):
    return parse_data_config({"corpora": [{"name": "c", "files": ["x"], "weight": 1, **kw}]}).corpora[0]


def test_sample_counts_reasons_and_reads_only_the_head(tmp_path):
    _gz(tmp_path / "sets.jsonl.gz", [{"set": ["a", "b", "c"]}] * 1500 + [["a", "b"]] * 10)
    result = format_check.check_sample(_corpus(record_format="pair"), str(tmp_path / "sets.jsonl.gz"))
    assert (result.sampled, result.rejected, result.mostly_rejected) == (1000, 1000, True)
    assert result.describe() == (
        "record_format 'pair' rejects 1000 of the first 1000 lines: wrong_format 1000 "
        '(a pair line is ["a", "p"], {"texts": ["a", "p"]} or {"query": "a", '
        "\"pos\": [...]}; got an object with keys ['set'])"
    )
    ok = format_check.check_sample(_corpus(record_format="set"), str(tmp_path / "sets.jsonl.gz"))
    assert (ok.rejected, ok.mostly_rejected) == (0, False)


def test_parquet_rows_are_checked_through_the_fields(tmp_path):
    pq.write_table(pa.table({"q": ["a", None, "c"], "a": ["x", "y", "z"]}), tmp_path / "t.parquet")
    right = format_check.check_sample(
        _corpus(record_format="pair", files=["t.parquet"], fields={"anchor": "q", "positive": "a"}),
        str(tmp_path / "t.parquet"),
    )
    assert (right.sampled, right.rejected, dict(right.reasons)) == (3, 1, {"non_string_text": 1})
    wrong = format_check.check_sample(
        _corpus(record_format="pair", files=["t.parquet"], fields={"anchor": "question", "positive": "a"}),
        str(tmp_path / "t.parquet"),
    )
    assert wrong.mostly_rejected and "no field 'question'" in wrong.describe()


def test_the_job_stops_before_any_work_naming_corpus_file_format_and_reasons(tmp_path, capsys):
    _gz(tmp_path / "good.jsonl.gz", [["a", "b"]] * 5)
    _gz(tmp_path / "bad.jsonl.gz", [{"query": "q", "pos": ["p"], "neg": ["n"]}] * 7 + [["a", "b"]] * 3)
    (tmp_path / "cfg.json").write_text(
        json.dumps(
            {
                "corpora": [
                    {"name": "good", "files": ["good.jsonl.gz"], "record_format": "pair", "weight": 1},
                    {"name": "declared_pair", "files": ["bad.jsonl.gz"], "record_format": "pair", "weight": 1},
                ]
            }
        )
    )
    out = tmp_path / "out"
    rc = job.run([f"--data_config={tmp_path / 'cfg.json'}", f"--output_dir={out}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and not out.exists()
    assert err[0].startswith(
        f"beam_main.py: error: corpus 'declared_pair', file {tmp_path / 'bad.jsonl.gz'}: "
        "record_format 'pair' rejects 7 of the first 10 lines: wrong_format 7 (a pair line is "
        '["a", "p"], {"texts": ["a", "p"]} or {"query": "a", "pos": [...]}; got an object with '
        "keys ['neg', 'pos', 'query'])"
    )
    assert "--no_format_check" in err[0]


def test_a_beir_directory_without_its_qrels_split_is_refused(tmp_path):
    d = tmp_path / "toy"
    d.mkdir()
    (d / "corpus.jsonl").write_text("")
    (d / "queries.jsonl").write_text("")
    c = parse_data_config(
        {"corpora": [{"name": "b", "files": ["toy"], "record_format": "query", "input_format": "beir", "weight": 1}]}
    )
    with pytest.raises(format_check.FormatCheckError, match=r"corpus 'b' \(beir\): missing .*qrels/train.tsv"):
        format_check.check_before_start(c, {"b": [str(d)]})
