"""The accelerator benchmark's CPU path (--smoke): both sides run, plain and cached, and report."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # ~1 min of PyTorch and XLA on 2 cores; the TensorFlow-free check below stays in CI
def test_bench_gpu_smoke_runs_both_sides_plain_and_cached():
    proc = subprocess.run(
        [sys.executable, "bench/bench_gpu.py", "--smoke", "--steps=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(l[len("SUMMARY ") :]) for l in proc.stdout.splitlines() if l.startswith("SUMMARY ")]
    assert [r["case"] for r in rows] == ["tiny", "tiny-cached"]
    for r in rows:
        ours, theirs = r["ours"], r["theirs"]
        assert ours["finite"] and ours["pairs_per_s"] > 0 and theirs["pairs_per_s"] > 0
        assert r["ratio"] > 0
        # Same random-ish task, same loss: both start near log(batch) (16 pairs -> ~2.8).
        assert 1.5 < ours["loss"] < 4.5 and 1.5 < theirs["loss"] < 4.5
        assert ours["flops_per_s"] > 0 and theirs["flops_per_s"] > 0
        # Every timed shape was compiled before timing, and nothing compiled while timing.
        assert ours["compiled_shapes"] and set(ours["timed_shapes"]) <= set(ours["compiled_shapes"])
        assert ours["compiles_during_timing"] == 0
    assert "compiled" in proc.stdout and "0 compiles during timing" in proc.stdout
    plain, cached = rows
    assert cached["grad_cache_chunk"] == 8
    assert plain["theirs"]["texts_per_call"] == 16 and plain["ours"]["chunk_tokens"] == 0
    # Cached: ST embeds 8 texts of one column per call; ours chunks packed rows under a token budget
    # of 8 x ST's padded length, so no call of ours holds more tokens than ST's largest.
    assert cached["theirs"]["texts_per_call"] == 8
    assert cached["ours"]["chunk_tokens"] > 0
    assert all("chunks" in s for s in cached["ours"]["compiled_shapes"])
    assert cached["ours"]["max_tokens_per_call"] <= cached["theirs"]["max_tokens_per_call"]


def test_bench_gpu_ours_runs_without_tensorflow():
    """The GPU machine has no TensorFlow: our side (and what it imports from trainer/) must not need it."""
    code = (
        "import runpy, sys; sys.modules['tensorflow'] = None; "
        "sys.argv = ['bench_gpu.py', '--worker=ours', '--smoke', '--steps=1', '--max_len=32', '--median_len=10', "
        '\'--case_json={"name": "tiny", "model": "tiny", "batch": 16, "chunk": 8}\']; '
        "runpy.run_path('bench/bench_gpu.py', run_name='__main__')"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT " in proc.stdout
