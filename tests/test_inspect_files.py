"""pipeline/inspect_files.py: what a file holds, whether a config reads it, and entries for files it does not cover."""

import gzip
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import inspect_files
from pipeline.data_config import parse_data_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gz(path, objs):
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(o) + "\n" for o in objs)


def test_inspect_reports_shapes_counts_checks_and_suggestions(tmp_path, capsys):
    _gz(tmp_path / "WikiAnswers.jsonl.gz", [{"set": [f"q{i}", f"r{i}", f"s{i}"]} for i in range(30)])
    _gz(tmp_path / "pairs.jsonl.gz", [[f"a{i}", f"b{i}"] for i in range(12)])
    _gz(tmp_path / "old.jsonl.gz", [{"texts": [f"a{i}", f"b{i}", f"c{i}"]} for i in range(5)])
    pq.write_table(
        pa.table({"question": ["q1", "q2"], "answer": ["a1", "a2"], "score": [1.0, 0.5]}), tmp_path / "gooaq.parquet"
    )
    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps(
            {
                "corpora": [
                    {"name": "wikianswers", "files": ["WikiAnswers.jsonl.gz"], "record_format": "pair", "weight": 1},
                    {"name": "pairs", "files": ["pairs.jsonl.gz"], "record_format": "pair", "weight": 1},
                ]
            }
        )
    )
    rc = inspect_files.main([str(tmp_path / "*.gz"), str(tmp_path / "gooaq.parquet"), f"--data_config={cfg}"])
    out = capsys.readouterr().out
    assert rc == 1  # wikianswers declared pair: its sets are rejected
    assert "  lines: 30\n  shape: object {set: list}  (30 of the first 30)" in out
    assert "corpus 'wikianswers': record_format 'pair' rejects 30 of the first 30 lines" in out
    assert "(100.0%) -> REJECTS MOST" in out
    assert "corpus 'pairs': record_format 'pair' rejects 0 of the first 12 lines (0.0%) -> ok" in out
    assert "Parquet schema: question: string, answer: string, score: double" in out
    assert 'sample: ["a0", "b0"]' in out
    entries = {e["name"]: e for e in json.loads(out.split("(check each entry before use):\n")[1])}
    assert entries["old"]["record_format"] == "triplet" and "fields" not in entries["old"]
    assert entries["old"]["expected_lines"] == 5 and "small set" in entries["old"]["description"]
    assert entries["gooaq"]["fields"] == {"anchor": "question", "positive": "answer"}
    assert entries["gooaq"]["record_format"] == "pair" and set(entries) == {"old", "gooaq"}
    # Each suggested entry is a valid data-config corpus, and its format accepts its own file.
    parse_data_config({"corpora": list(entries.values())})


def test_counts_are_estimated_past_the_exact_limit(tmp_path, monkeypatch):
    _gz(tmp_path / "big.jsonl.gz", [[f"a{i}" * 3, f"b{i}"] for i in range(200_000)])
    assert inspect_files.count_lines(str(tmp_path / "big.jsonl.gz")) == (200_000, True)
    size = os.path.getsize(tmp_path / "big.jsonl.gz")
    monkeypatch.setattr(inspect_files, "EXACT_BYTES", size // 4)
    monkeypatch.setattr(inspect_files, "PREFIX_BYTES", size // 3)
    n, exact = inspect_files.count_lines(str(tmp_path / "big.jsonl.gz"))
    assert not exact and abs(n - 200_000) < 10_000  # within 5%: gzip reads a little ahead of the lines


def test_the_command_line_exit_status(tmp_path):
    _gz(tmp_path / "p.jsonl.gz", [["a", "b"]])
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.inspect_files", str(tmp_path / "p.jsonl.gz")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and '"record_format": "pair"' in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.inspect_files", str(tmp_path / "none.jsonl.gz")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.strip().endswith(f"no such file: {tmp_path / 'none.jsonl.gz'}")


def test_an_output_directory_shows_what_was_removed(tmp_path, capsys):
    from pipeline.data_config import CorpusConfig
    from pipeline.manifest import build_manifest, corpus_entry, write_manifest
    from pipeline.stats import new_stats

    acc = new_stats(4)
    acc.update(
        lines_read=10,
        train=5,
        validation=1,
        duplicates=3,
        decontaminated=1,
        decontaminated_by_set={"sts-test.csv": 1},
        overlap={"other": 2},
    )
    entry = corpus_entry(CorpusConfig("qa", ("qa.jsonl.gz",), "pair", 1.0, 10), [], acc, [], [])
    cleaning = {
        "deduplicate": True,
        "decontaminate": [
            {
                "name": "sts-test.csv",
                "kind": "sts",
                "path": "/e/sts-test.csv",
                "texts": 8,
                "skipped": 1,
                "removed_lines": 1,
            }
        ],
    }
    write_manifest(str(tmp_path), build_manifest([entry], {"pad_token_id": 0}, 4, 0.0, cleaning=cleaning))
    assert inspect_files.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (
        "10 lines read, 5 train, 1 validation, 0 rejected; 3 duplicate tuples removed, 1 removed as evaluation "
        "texts (sts-test.csv: 1; decontaminated/)" in out
    )
    assert out.splitlines()[2].split() == [
        "qa",
        "10",
        "6",
        "0",
        "3",
        "1",
        "also",
        "in",
        "other:",
        "2;",
        "sts-test.csv:",
        "1",
    ]
    assert (
        "evaluation set sts-test.csv (sts, /e/sts-test.csv): 8 texts read, 1 lines skipped, 1 training lines removed"
        in out
    )
