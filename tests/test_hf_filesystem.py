"""pipeline/hf_filesystem.py (hf:// for Beam) through the real huggingface_hub client against a
stand-in for the Hub's endpoints on loopback (tests/_hf_standin.py): listing, reading, revisions,
the launcher's pins, a worker process that has only the reader imported, and the whole job."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest
from apache_beam.internal import pickler
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from pipeline import hf_filesystem
from pipeline.reading import ReadLineBatches
from pipeline.user_errors import UserError
from tests import _hf_standin
from tests._tfrecords import read_tfrecords

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD, NEW = "a" * 40, "b" * 40
LINES = [json.dumps([f"question {i}", f"answer {i}"]).encode() for i in range(1500)]
FILES = {
    "pairs/qa-0.jsonl.gz": gzip.compress(b"\n".join(LINES[:900]) + b"\n"),
    "pairs/qa-1.jsonl.gz": gzip.compress(b"\n".join(LINES[900:]) + b"\n"),
    "README.md": b"card",
}
REPOS = {
    "org/data": {
        "refs": {"main": NEW},
        "commits": {OLD: {"pairs/qa-0.jsonl.gz": gzip.compress(b"\n".join(LINES[:10]) + b"\n")}, NEW: FILES},
    }
}
ROOT = "hf://datasets/org/data"


@pytest.fixture(scope="module")
def hub():
    with _hf_standin.serve(REPOS) as server, _hf_standin.endpoint_set(server.url):
        yield server


def test_match_open_size_and_a_pinned_revision(hub):
    (result,) = FileSystems.match([f"{ROOT}/pairs/*.jsonl.gz"])
    assert [(m.path, m.size_in_bytes) for m in result.metadata_list] == [
        (f"{ROOT}/pairs/{n}", len(FILES[f"pairs/{n}"])) for n in ("qa-0.jsonl.gz", "qa-1.jsonl.gz")
    ]
    with FileSystems.open(f"{ROOT}/pairs/qa-1.jsonl.gz", compression_type="uncompressed") as f:
        assert f.read() == FILES["pairs/qa-1.jsonl.gz"]
    with FileSystems.open(f"{ROOT}@{OLD}/pairs/qa-0.jsonl.gz") as f:  # gunzipped by Beam (AUTO)
        assert f.read().splitlines() == LINES[:10]
    fs = FileSystems.get_filesystem(ROOT)
    assert fs.exists(f"{ROOT}/README.md") and not fs.exists(f"{ROOT}/nope.gz")
    assert fs.size(f"{ROOT}/README.md") == 4 == int(fs.checksum(f"{ROOT}/README.md"))
    with pytest.raises(BeamIOError, match="read-only"):
        fs.create(f"{ROOT}/x")


def test_the_launcher_pins_each_revision_to_its_commit(hub):
    files = {"qa": [f"{ROOT}/pairs/qa-0.jsonl.gz", f"{ROOT}@{OLD}/pairs/qa-0.jsonl.gz"], "local": ["/data/x.gz"]}
    pinned, pins = hf_filesystem.pin_revisions(files)
    assert pinned == {
        "qa": [f"{ROOT}@{NEW}/pairs/qa-0.jsonl.gz", f"{ROOT}@{OLD}/pairs/qa-0.jsonl.gz"],
        "local": ["/data/x.gz"],
    }
    assert pins == {ROOT: NEW, f"{ROOT}@{OLD}": OLD}
    assert hf_filesystem.pin_revisions({"local": ["/x"]}) == ({"local": ["/x"]}, {})
    with pytest.raises(UserError, match="corpus 'qa': cannot resolve the revision of hf://datasets/org/gone"):
        hf_filesystem.pin_revisions({"qa": ["hf://datasets/org/gone/a.gz"]})


def test_a_worker_with_only_the_reader_unpickled_reads_hf(hub):
    """What a Dataflow or multi_processing worker does: unpickle the reading DoFn in a fresh process
    (which imports pipeline/reading.py and nothing else of ours) and read an hf:// file."""
    fn = pickler.dumps(ReadLineBatches(512, 1 << 20))
    code = (
        "import sys; from apache_beam.internal import pickler; fn = pickler.loads(sys.stdin.buffer.read()); "
        f"print(sum(len(b.lines) for b in fn.process(('qa', '{ROOT}/pairs/qa-0.jsonl.gz')) "
        "if hasattr(b, 'lines')))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        input=fn,
        capture_output=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, "PYTHONPATH": REPO, "HF_ENDPOINT": hub.url},
    )
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert r.stdout.decode().split() == ["900"]


def _config(tmp_path):
    config = tmp_path / "data_config.json"
    config.write_text(
        json.dumps(
            {
                "corpora": [
                    {
                        "name": "qa",
                        "files": ["pairs/qa-*.jsonl.gz"],
                        "record_format": "pair",
                        "weight": 1,
                        "expected_lines": 1500,
                    }
                ]
            }
        )
    )
    return [f"--data_config={config}", f"--input_root={ROOT}"]


def _records(out):
    m = json.load(open(os.path.join(out, "manifest.json")))
    (c,) = m["corpora"]
    return m, sorted(r for f in c["train_files"] + c["validation_files"] for r in read_tfrecords(os.path.join(out, f)))


@pytest.mark.slow
def test_multi_processing_and_in_memory_give_identical_records(hub, tmp_path):
    """Two beam_main.py processes with HF_ENDPOINT at the stand-in: worker processes read hf:// too, at
    the commit the launcher pinned. CI covers it with the worker and pin tests above."""
    outs = {}
    for mode in ("in_memory", "multi_processing"):
        outs[mode] = str(tmp_path / mode)
        r = subprocess.run(
            [
                sys.executable,
                os.path.join(REPO, "beam_main.py"),
                *_config(tmp_path),
                f"--output_dir={outs[mode]}",
                f"--direct_running_mode={mode}",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=600,
            env={**os.environ, "HF_ENDPOINT": hub.url},
        )
        assert r.returncode == 0, r.stderr[-3000:]
    (m1, r1), (m2, r2) = _records(outs["in_memory"]), _records(outs["multi_processing"])
    assert r1 == r2 and len(r1) == 1500 and m1["totals"] == m2["totals"] and m1["hf_revisions"] == {ROOT: NEW}
    assert m2["corpora"][0]["files"] == [f"{ROOT}@{NEW}/pairs/qa-0.jsonl.gz", f"{ROOT}@{NEW}/pairs/qa-1.jsonl.gz"]
