"""Launcher-side pieces of pipeline/job.py (the whole job runs in tests/test_beam_main.py)."""
import json

import pytest

from pipeline import options
from pipeline.data_config import parse_data_config
from pipeline.job import WriteManifest, train_shards
from pipeline.manifest import ManifestError
from pipeline.stats import new_stats

CONFIG = parse_data_config({"corpora": [
    {"name": "big", "files": ["b"], "record_format": "pair", "weight": 1, "expected_lines": 2_500_001},
    {"name": "small", "files": ["s"], "record_format": "set", "weight": 1, "expected_lines": 10},
    {"name": "unknown", "files": ["u"], "record_format": "pair", "weight": 1}]})


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
        list(fn.process(None, {"small": _stats(10)}, {"small": 12}, {}, []))
    assert not (tmp_path / "manifest.json").exists()
    (path,) = fn.process(None, {"small": _stats(10)}, {"small": 10}, {}, [])
    m = json.loads(open(path).read())
    assert m["corpora"][0]["lines_read"] == 10 and m["corpora"][0]["train_files"] == []
