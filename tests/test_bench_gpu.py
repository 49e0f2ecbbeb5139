"""The accelerator benchmark's CPU path (--smoke): both sides run, plain and cached, and report."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_gpu_smoke_runs_both_sides_plain_and_cached():
    proc = subprocess.run([sys.executable, "bench/bench_gpu.py", "--smoke", "--steps=1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(l[len("SUMMARY "):]) for l in proc.stdout.splitlines() if l.startswith("SUMMARY ")]
    assert [r["case"] for r in rows] == ["tiny", "tiny-cached"]
    for r in rows:
        assert r["ours"]["finite"] and r["ours"]["pairs_per_s"] > 0 and r["theirs"]["pairs_per_s"] > 0
        assert r["ratio"] > 0
        # Same random-ish task, same loss: both start near log(batch) (16 pairs -> ~2.8).
        assert 1.5 < r["ours"]["loss"] < 4.5 and 1.5 < r["theirs"]["loss"] < 4.5
        assert r["ours"]["flops_per_s"] > 0
    assert rows[1]["grad_cache_chunk"] == 8
