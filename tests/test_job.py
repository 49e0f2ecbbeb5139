"""pipeline/job.py: launcher-side pieces, the manifest step's checks, and the whole job under injected
read faults (tests/_faulty_fs.py); the whole job's output is checked in tests/test_beam_main.py."""

import filecmp
import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest

from pipeline import job, options
from pipeline.data_config import parse_data_config
from pipeline.job import CountMismatch, WriteManifest, train_shards
from pipeline.manifest import ManifestError
from pipeline.stats import new_stats
from tests import _faulty_fs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "samples", "corpora", "sample_paraphrases.jsonl.gz")  # ~3,000 lines, 35 KB
with gzip.open(SAMPLE, "rb") as _f:
    SAMPLE_LINES = sum(1 for _ in _f)

CONFIG = parse_data_config(
    {
        "corpora": [
            {"name": "big", "files": ["b"], "record_format": "pair", "weight": 1, "expected_lines": 2_500_001},
            {"name": "small", "files": ["s"], "record_format": "set", "weight": 1, "expected_lines": 10},
            {"name": "unknown", "files": ["u"], "record_format": "pair", "weight": 1},
        ]
    }
)


def test_train_shards():
    opts, _ = options.parse_args([])
    assert [train_shards(c, opts) for c in CONFIG.corpora] == [3, 1, 0]
    opts, _ = options.parse_args(["--train_shards=7"])
    assert [train_shards(c, opts) for c in CONFIG.corpora] == [7, 7, 7]


def _stats(lines):
    s = new_stats(128)
    s["lines_read"] = s["train"] = lines
    return s


def test_manifest_step_refuses_lost_lines(tmp_path):
    opts, _ = options.parse_args([f"--output_dir={tmp_path}"])
    config = CONFIG.select(["small"])
    fn = WriteManifest(config, {"small": ["/in/s"]}, {"name": "t"}, opts)
    with pytest.raises(ManifestError, match="12 lines were read but 10 processed"):
        list(fn.process(None, {"small": _stats(10)}, {"small": 12}, {}, [], []))
    assert not (tmp_path / "manifest.json").exists()
    (path,) = fn.process(None, {"small": _stats(10)}, {"small": 10}, {}, [], [])
    m = json.loads(open(path).read())
    assert m["corpora"][0]["lines_read"] == 10 and m["corpora"][0]["train_files"] == []


def test_expected_lines_are_enforced_within_the_tolerance(tmp_path):
    config = CONFIG.select(["small"])  # expected_lines 10
    for flags, read, ok in (
        ([], 10, True),
        ([], 9, False),
        ([], 11, False),
        (["--expected_lines_tolerance=0.1"], 9, True),
        (["--expected_lines_tolerance=0.1"], 8, False),
    ):
        opts, _ = options.parse_args([f"--output_dir={tmp_path}", *flags])
        fn = WriteManifest(config, {"small": ["/in/s"]}, {"name": "t"}, opts)
        if ok:
            (path,) = fn.process(None, {"small": _stats(read)}, {"small": read}, {}, [], [])
            assert json.load(open(path))["corpora"][0]["lines_read"] == read
        else:
            with pytest.raises(CountMismatch, match=f"corpus 'small': expected 10 lines .* but read {read}"):
                list(fn.process(None, {"small": _stats(read)}, {"small": read}, {}, [], []))
    # A corpus with a file left out by --on_corrupt_file=skip records it instead of failing.
    opts, _ = options.parse_args([f"--output_dir={tmp_path}", "--on_corrupt_file=skip"])
    fn = WriteManifest(config, {"small": ["/in/s"]}, {"name": "t"}, opts)
    skipped = [("small", {"file": "/in/s", "last_line": 4, "cause": "EOFError: cut"})]
    (path,) = fn.process(None, {"small": _stats(0)}, {}, {}, [], skipped)
    m = json.load(open(path))
    assert m["corpora"][0]["skipped_files"] == [skipped[0][1]] and m["totals"]["skipped_files"] == 1
    with pytest.raises(SystemExit):
        options.parse_args(["--on_corrupt_file=ignore"])
    with pytest.raises(options.OptionsError, match="non-negative fraction"):
        options.parse_args(["--expected_lines_tolerance=-0.1"])


# ---------------------------------------------------------------------------------------------------
# The whole job under injected faults (in_memory: the fault file system is registered in this process).


def _job_args(root, corpora):
    """A data config of one pair corpus per (name, file under root), read through faulty://."""
    config = root / "data_config.json"
    config.write_text(
        json.dumps(
            {
                "corpora": [
                    {
                        "name": name,
                        "files": [_faulty_fs.url(str(root / f))],
                        "record_format": "pair",
                        "weight": 1,
                        "expected_lines": SAMPLE_LINES,
                    }
                    for name, f in corpora
                ]
            }
        )
    )
    # Without the cleaning stages: these tests compare bytes, and a shard's order after them follows
    # the buckets' arrival (docs/pipeline.md, "Determinism").
    return [f"--data_config={config}", f"--output_dir={root / 'out'}", "--overwrite", "--no_deduplicate"]


def _same_output(a, b):
    """Every file byte for byte, the manifest but for its creation time."""
    files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    assert files == sorted(os.path.relpath(os.path.join(d, f), b) for d, _, fs in os.walk(b) for f in fs)
    for rel in files:
        if rel == "manifest.json":
            ma, mb = (json.load(open(os.path.join(x, rel))) for x in (a, b))
            assert {**ma, "created": ""} == {**mb, "created": ""}
        else:
            assert filecmp.cmp(os.path.join(a, rel), os.path.join(b, rel), shallow=False), rel


def _write_cut(root):
    whole = open(SAMPLE, "rb").read()
    (root / "cut.jsonl.gz").write_bytes(whole[: len(whole) * 2 // 3])


def test_a_transient_fault_heals_and_a_truncated_file_is_skipped_whole(tmp_path, caplog):
    """Two runs with --on_corrupt_file=skip over a whole file and a truncated one; the second run's
    reads of the whole file fail once at the 7th read (mid-file). Byte-identical outputs; the truncated
    file gives nothing (never a prefix) and is recorded."""
    shutil.copy(SAMPLE, tmp_path / "para.jsonl.gz")
    _write_cut(tmp_path)
    args = _job_args(tmp_path, [("para", "para.jsonl.gz"), ("cut", "cut.jsonl.gz")]) + ["--on_corrupt_file=skip"]
    state = str(tmp_path / "state")
    _faulty_fs.set_faults(state, {})
    assert job.run(args) == 0
    os.rename(tmp_path / "out", tmp_path / "clean")
    _faulty_fs.set_faults(state, {"para.jsonl.gz": {"nth_read": 7, "times": 1}})
    with caplog.at_level("INFO", logger="beam_main"):
        assert job.run(args) == 0
    assert _faulty_fs.injected(state) == ["para.jsonl.gz"]
    _same_output(str(tmp_path / "clean"), str(tmp_path / "out"))
    m = json.load(open(tmp_path / "out" / "manifest.json"))
    para, cut = m["corpora"]
    assert para["lines_read"] == SAMPLE_LINES and para["skipped_files"] == []
    assert (cut["lines_read"], cut["train_examples"], cut["validation_examples"]) == (0, 0, 0)
    (skipped,) = cut["skipped_files"]
    assert skipped["file"].endswith("cut.jsonl.gz") and skipped["cause"].startswith("EOFError")
    assert 0 < skipped["last_line"] < SAMPLE_LINES and m["totals"]["skipped_files"] == 1
    assert "1 file(s) skipped (--on_corrupt_file=skip): faulty://" in caplog.text


def test_a_fault_that_persists_fails_the_job_in_one_line(tmp_path, capsys):
    shutil.copy(SAMPLE, tmp_path / "para.jsonl.gz")
    state = str(tmp_path / "state")
    _faulty_fs.set_faults(state, {"para.jsonl.gz": {"nth_read": 7, "times": 0}})
    assert job.run(_job_args(tmp_path, [("para", "para.jsonl.gz")])) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert (
        line.startswith(
            f"beam_main.py: error: cannot read {_faulty_fs.url(str(tmp_path / 'para.jsonl.gz'))} (after line "
        )
        and "3 attempt(s)): OSError: injected fault at read" in line
    )
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_failure_is_found_in_what_the_runner_wraps_it_in():
    """in_memory keeps the exception in the chain; worker processes and Dataflow keep its text."""
    from pipeline.lines import FileReadFailed
    from pipeline.user_errors import find_job_failure

    e = FileReadFailed("gs://b/f.gz", 7, "EOFError: cut")
    try:
        try:
            raise FileReadFailed("gs://b/f.gz [while running 'ReadLines']", 7, "EOFError: cut")
        except FileReadFailed as inner:
            raise RuntimeError("bundle failed") from inner
    except RuntimeError as wrapped:
        assert find_job_failure(wrapped) == str(e)
    text = RuntimeError(
        "Traceback (most recent call last):\n  File ...\npipeline.lines.FileReadFailed: "
        f"{e} [while running 'ReadLines/ParDo(ReadLineBatches)']\n\nmore"
    )
    assert find_job_failure(text) == str(e) == "cannot read gs://b/f.gz (after line 7, 1 attempt(s)): EOFError: cut"
    assert find_job_failure(CountMismatch("corpus 'x': expected 3 lines")) == "corpus 'x': expected 3 lines"
    assert find_job_failure(RuntimeError("a bug")) is None


@pytest.mark.slow
def test_a_truncated_file_fails_a_multi_processing_job_in_one_line(tmp_path):
    """A whole beam_main.py process on two worker processes (the failure comes back as text): exit
    status 1, one error line naming file, last line and cause, no traceback from the launcher."""
    _write_cut(tmp_path)
    config = tmp_path / "data_config.json"
    config.write_text(
        json.dumps(
            {
                "corpora": [
                    {"name": "cut", "files": [str(tmp_path / "cut.jsonl.gz")], "record_format": "pair", "weight": 1}
                ]
            }
        )
    )
    r = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "beam_main.py"),
            f"--data_config={config}",
            f"--output_dir={tmp_path / 'out'}",
            "--direct_running_mode=multi_processing",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert r.returncode == 1, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("beam_main.py:")]
    assert line.startswith(f"beam_main.py: error: cannot read {tmp_path / 'cut.jsonl.gz'} (after line ") and (
        "3 attempt(s)): EOFError: Compressed file ended before the end-of-stream marker was reached" in line
    )
    assert not (tmp_path / "out" / "manifest.json").exists()
