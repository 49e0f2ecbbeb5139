"""The start-up check: the worst-case shapes compiled for the run's devices, refused with a message
that names the shape, the GiB and the flag that fixes it (a tiny budget stands in for small HBM)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from tests._tiny import tiny_model
from trainer.config import TrainConfig
from trainer.mesh import create_mesh
from trainer.train.preflight import PreflightError, check_reports, memory_budget, preflight_shapes, run_preflight
from trainer.train.train_step import create_train_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = TrainConfig(batch_size=16, max_seq_length=32, bucket_lengths=(16, 32), pack_min_row_length=32, train_steps=10)


def test_worst_shapes_fit_a_generous_budget_and_are_refused_by_a_tiny_one():
    model, params = tiny_model()
    mesh = create_mesh()
    cfg = CFG.replace(memory_budget_gib=1.0)
    state = create_train_state(params, cfg, mesh)
    reports = run_preflight(model, cfg, mesh, state, {"pair", "triplet"})
    assert [r.shape.label for r in reports] == ["pair 32x32", "triplet 48x32"]  # 16 texts x 32 tokens a column
    assert all(r.fits and 0 < r.total_bytes < 2**30 for r in reports)
    assert reports[1].temp_bytes > reports[0].temp_bytes  # three columns hold more than two
    # Only the kinds the data has are compiled.
    assert [s.kind for _, s in preflight_shapes(cfg, 1, {"pair"})] == ["pair"]

    # The same compiled figures against half the pair's bytes: refused, with the fix named. (Judged
    # from the reports: compiling the shape again would give the same bytes.)
    tiny = CFG.replace(memory_budget_gib=reports[0].total_bytes / 2**30 * 0.5)
    halved = [dataclasses.replace(r, usable_bytes=int(reports[0].total_bytes * 0.5)) for r in reports]
    with pytest.raises(PreflightError) as e:
        check_reports(halved, tiny)
    msg = str(e.value)
    assert "worst-case pair 32x32 batch (every text at 32 tokens)" in msg and "GiB per device" in msg
    assert "--shard_optimizer=true" in msg and "python -m trainer.plan.planner" in msg


def test_no_budget_on_cpu_unless_asked():
    device = create_mesh().devices.flat[0]
    assert memory_budget(CFG, device) is None
    assert memory_budget(CFG.replace(memory_budget_gib=2.0), device) == 2 * 2**30


@pytest.mark.slow  # a whole train_main start-up (~1 min); the refusal itself is checked by the test above in CI
def test_train_main_stops_before_step_one_with_one_line(tmp_path, sample_data_dir, tiny_bert_dir):
    workdir = tmp_path / "run"
    cmd = [
        sys.executable,
        os.path.join(REPO, "train_main.py"),
        f"--data_dir={sample_data_dir}",
        f"--workdir={workdir}",
        f"--model={tiny_bert_dir}",
        "--from_scratch=true",
        "--batch_size=8",
        "--train_steps=5",
        "--max_seq_length=32",
        "--bucket_lengths=16,32",
        "--no_progress",
        "--memory_budget_gib=0.0001",
    ]
    proc = subprocess.run(
        cmd, cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train_main.py: error: preflight: the worst-case ") and "Fix: " in last
    assert "Traceback" not in proc.stderr
    assert not (workdir / "checkpoints").exists() and not (workdir / "metrics.jsonl").exists()


def test_the_largest_unchunked_shape_is_compiled_and_refused():
    """chunk_tokens just under the worst pair's 32 x 32 tokens: the worst pair runs in 2 chunks of 16 rows,
    a 31-row pair runs whole and needs more memory. The preflight compiles both and refuses a budget that
    only the chunked worst case meets."""
    model, params = tiny_model()
    mesh = create_mesh()
    cfg = CFG.replace(memory_budget_gib=1.0, chunk_tokens=31 * 32)
    reports = run_preflight(model, cfg, mesh, create_train_state(params, cfg, mesh), {"pair"})
    assert [(r.case, r.shape.label) for r in reports] == [
        ("worst", "pair 32x32 (2 chunks)"),
        ("unchunked", "pair 31x32"),
    ]
    worst, plain = reports
    assert plain.temp_bytes > worst.temp_bytes  # 31 rows' activations at once against 16 rows' twice
    # A budget between the two (judged from the compiled figures, as run_preflight judges them).
    budget = (worst.total_bytes + plain.total_bytes) // 2
    with pytest.raises(PreflightError) as e:
        check_reports([dataclasses.replace(r, usable_bytes=budget) for r in reports], cfg)
    msg = str(e.value)
    assert msg.startswith("preflight: the largest unchunked pair 31x32 batch") and "--chunk_tokens=992" in msg
    assert f"but the budget is {budget / 2**30:.2f} GiB" in msg and "Fix: " in msg


def test_train_checks_the_shapes_of_the_data_s_cut(tmp_path, sample_data_dir, tiny_bert_dir):
    """The samples were tokenized at 128 tokens: a run asking for 256 gets batches of at most 128, and
    the preflight checks those (a tiny budget makes it say which)."""
    from trainer.train.train_loop import train

    cfg = CFG.replace(
        model=tiny_bert_dir,
        from_scratch=True,
        batch_size=8,
        max_seq_length=256,
        pack_min_row_length=16,
        memory_budget_gib=1e-4,
        eval_every=0,
    )
    with pytest.raises(PreflightError, match=r"batch \(every text at 128 tokens\)"):
        train(cfg, sample_data_dir, str(tmp_path / "run"), progress=False)
