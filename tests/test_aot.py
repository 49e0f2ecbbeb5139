"""The compile-only planner: the real train step compiled for TPU topologies on this CPU machine
(libtpu), its memory against the compiler's usable HBM, FLOPs against the analytic count, and the
exit status. The roberta-large reference plan and MiniLM's v3-8 figures are behind the `slow` marker
(minutes per shape); CI compiles the real step of a small BERT for a v3-32."""

import json
import os
import runpy
import shutil
import sys

import pytest

pytest.importorskip("libtpu")

from tests.test_length_profiles import write_manifest  # noqa: E402
from trainer.config import DEMO_MODEL, get_preset  # noqa: E402
from trainer.model.modeling import EncoderConfig  # noqa: E402
from trainer.plan import flops as flops_lib  # noqa: E402
from trainer.plan import planner, projection, tpu  # noqa: E402
from trainer.plan.flops import step_flops  # noqa: E402
from trainer.train import aot  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lines():
    out = []
    return out, out.append


@pytest.mark.slow  # 80-100 s of compiling on 2 cores; CI keeps the v3-32 compile of the real step below
def test_minilm_reference_step_fits_a_v3_8_with_the_compilers_numbers():
    """all-MiniLM-L6-v2 under the reference preset (bfloat16, packing, batch cut to 64 for CI time):
    the worst pair (16 rows x 128 per core) and triplet (24 x 128) compile for a v3-8 and fit."""
    cfg = get_preset("reference").replace(model=DEMO_MODEL, batch_size=64)
    lines, log = _lines()
    report = projection.plan(cfg, tpu.get_slice("v3-8"), shapes=("worst",), sim_steps=200, jobs=2, log=log)
    assert report["fits"] and report["devices"] == 8
    shapes = {s["shape"]: s for s in report["shapes"]}
    assert set(shapes) == {"pair 16x128", "triplet 24x128"}
    enc = EncoderConfig.from_hf_dict(projection.read_model_config(DEMO_MODEL))
    n_params = 22_565_376  # all-MiniLM-L6-v2 (no pooler)
    for label, s in shapes.items():
        rows = 8 * int(label.split()[1].split("x")[0])
        # Arguments: float32 parameters (replicated) and two AdamW moments sharded over 8 cores (ZeRO-1,
        # the preset's plan; a few odd-sized vectors stay replicated), plus the batch.
        assert 5 * 4 * n_params // 4 <= s["argument_bytes"] <= 5 * 4 * n_params // 4 * 1.05
        assert 0 < s["temp_bytes"] < s["usable_bytes"] and s["total_bytes"] < s["usable_bytes"]
        # The compiler's FLOPs (per core) against the analytic executed FLOPs of what runs (model FLOPs and
        # the attention backward's recomputed scores): +2.7% (pair) and +2.6% (triplet) over model FLOPs
        # measured (libtpu 0.0.42.1) before that recompute; the compiler also counts softmax, norms, the loss.
        assert 1.0 <= s["flops"] * 8 / step_flops(enc, rows, 128)[1] <= 1.03
        assert s["compile_s"] > 0
    assert any("pair 16x128" in line and "fits" in line and "GiB" in line for line in lines)
    proj = report["projection"]
    assert proj["compute_saved"] > 1.5 and proj["days"] > 0 and proj["programs"] >= 1
    assert any("compiler figures and a projection" in line for line in lines)


# CI compiles the two unchunked worst shapes; -m slow also the chunked plan's four programs (each
# chunked worst case with the largest shape of its kind that runs whole; compiled on CPU in CI by
# tests/test_preflight.py, and its shapes checked in tests/test_program_count.py).
CHUNKED = [
    ("worst", "pair 4x64 (2 chunks)"),
    ("unchunked", "pair 2x64"),
    ("worst", "triplet 6x64 (3 chunks)"),
    ("unchunked", "triplet 2x64"),
]


@pytest.mark.parametrize(
    "chunk_tokens,want",
    [(0, [("worst", "pair 4x64"), ("worst", "triplet 6x64")]), pytest.param(128, CHUNKED, marks=pytest.mark.slow)],
    ids=["whole", "chunked"],
)
def test_planner_exit_status_multi_host_slice_and_chunked_shapes(tmp_path, tiny_bert_dir, capsys, chunk_tokens, want):
    """A 2-layer BERT on the multi-host v3-32 (4 hosts of 8 cores) compiles (with chunked long shapes:
    `chunked`); against a budget it cannot meet the planner exits 1, with the JSON saying why (exit 0
    when all fit: the MiniLM test above). The data's manifest says its texts were cut at 64 tokens: the
    run's --max_seq_length=128 is planned at 64, as training caps it."""
    bad, cache = tmp_path / "bad.json", tmp_path / "cache.jsonl"
    argv = [
        f"--model={tiny_bert_dir}",
        "--config=reference",
        "--batch_size=64",
        "--shapes=worst",
        "--sim_steps=50",
        "--topology=v3-32",
        "--jobs=2",
        f"--chunk_tokens={chunk_tokens}",
        "--max_seq_length=128",
        "--pack_programs=0",
        f"--manifest={write_manifest(tmp_path, 64)}",
        "--memory_budget_gib=0.0001",
        f"--cache={cache}",
    ]
    assert planner.main([*argv, f"--json={bad}"]) == 1
    out = capsys.readouterr().out
    report = json.loads(bad.read_text())
    # The cache holds every compiled program: a re-run compiles nothing and reports the same figures.
    assert len(cache.read_text().splitlines()) == len(want)
    again = tmp_path / "again.json"
    assert planner.main([*argv, "--no_compile", f"--json={again}"]) == 1
    shapes = json.loads(again.read_text())["shapes"]
    assert all(s.pop("cached") for s in shapes)
    assert not any(s.pop("cached") for s in report["shapes"]) and shapes == report["shapes"]
    assert report["devices"] == 32 and not report["fits"] and report["config"]["max_seq_length"] == 64
    # Per core 2 pairs (4 texts) or 2 triplets (6) of 64 tokens; chunks of at most 128 tokens = 2 rows.
    assert [(s["case"], s["shape"]) for s in report["shapes"]] == want
    assert all(0 < s["total_bytes"] < 2**30 and not s["fits"] for s in report["shapes"])  # compiled, over budget
    assert sum(
        "unchunked" in line and "DOES NOT FIT" in line and "compiled:" not in line for line in out.splitlines()
    ) == sum(case == "unchunked" for case, _ in want)


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["v3-8"])
def test_roberta_large_reference_plan_fits(topology):
    """The reference run (roberta-large, batch 1024, the preset's memory plan) on a v3-8: every
    worst and typical shape fits. About 4 minutes per shape on 2 cores."""
    lines, log = _lines()
    report = projection.plan(get_preset("reference"), tpu.get_slice(topology), jobs=os.cpu_count() or 1, log=log)
    assert report["fits"], "\n".join(lines)


def test_a_model_path_that_exists_wins_over_a_shipped_config(tmp_path, tiny_bert_dir, monkeypatch):
    """A checkpoint directory named like a shipped config (roberta-large) is planned with its own config."""
    ckpt = tmp_path / "ckpts" / "roberta-large"
    ckpt.mkdir(parents=True)
    shutil.copyfile(os.path.join(tiny_bert_dir, "config.json"), ckpt / "config.json")
    assert projection.read_model_config(str(ckpt))["hidden_size"] == 32  # the checkpoint's, not roberta-large's 1024
    assert projection.read_model_config(str(ckpt / "config.json"))["hidden_size"] == 32
    monkeypatch.chdir(tmp_path / "ckpts")
    assert projection.read_model_config("roberta-large")["hidden_size"] == 32  # a relative path that exists
    monkeypatch.chdir(tmp_path)
    # A name that is only a hub id still plans offline with the shipped config.
    assert projection.read_model_config("FacebookAI/roberta-large")["hidden_size"] == 1024
    assert projection.read_model_config("roberta-large")["hidden_size"] == 1024


def test_the_projection_is_labelled_as_one_at_the_stated_efficiency(monkeypatch, capsys):
    """bench/bench_tpu_plan.py's days column and the planner's MFU follow --efficiency (no shapes compiled:
    the projection alone)."""
    monkeypatch.setattr(
        sys,
        "argv",
        ["bench_tpu_plan.py", "--rows=v3-8:minilm:reference", "--shapes=", "--sim_steps=20", "--efficiency=0.25"],
    )
    with pytest.raises(SystemExit) as e:
        runpy.run_path(os.path.join(REPO, "bench", "bench_tpu_plan.py"), run_name="__main__")
    assert e.value.code == 0
    out, err = capsys.readouterr()
    assert "| days @25% |" in out.splitlines()[0]
    line = next(x for x in err.splitlines() if "projection at" in x)
    assert "an assumed 25% of peak" in line and "projected MFU" in line and " (MFU" not in line
    # The preset's --remat=auto: every MiniLM program fits a v3 core without recomputation.
    remat = next(x for x in err.splitlines() if x.strip().startswith("remat per program (--remat=auto"))
    chosen = remat.split("): ", 1)[1].split(", ")  # "pair 247x128: none 1.58", ...
    assert len(chosen) > 3 and all(c.split(": ")[1].startswith("none ") for c in chosen)


@pytest.mark.slow  # 2 shapes of a 6-layer model, 1-3 min on 2 cores; CI: the same refusal in tests/test_preflight.py
def test_planner_reports_a_largest_unchunked_shape_that_does_not_fit(tiny_bert_dir):
    """6 layers x 128 wide on a v3-8, 32 pairs (64 texts of 128 tokens) per core; --chunk_tokens of 63 rows
    splits the worst pair in 2 chunks of 32 rows while a 62-row pair (the ladder's largest count within 63)
    runs whole and, by the TPU compiler, needs more HBM. Under a budget between the two the planner says
    the worst pair fits and the largest unchunked one does not (before, it compiled only the worst case)."""
    import dataclasses

    from trainer.data.shapes import memory_check_shapes

    with open(os.path.join(tiny_bert_dir, "config.json")) as f:
        hf = dict(json.load(f), hidden_size=128, num_hidden_layers=6, num_attention_heads=2, intermediate_size=256)
    cfg = get_preset("reference").replace(batch_size=256, chunk_tokens=63 * 128, pack_row_steps=16)
    s = tpu.get_slice("v3-8")
    mesh = projection.slice_mesh(s)
    pairs = [(case, shape) for case, shape in memory_check_shapes(cfg, 8) if shape.kind == "pair"]
    assert [(case, shape.label) for case, shape in pairs] == [
        ("worst", "pair 64x128 (2 chunks)"),
        ("unchunked", "pair 62x128"),
    ]
    worst, plain = aot.compile_shapes(projection.build_model(cfg, hf)[1], cfg, mesh, pairs, 2**34, jobs=2)
    assert plain.total_bytes > worst.total_bytes, (plain.total_bytes, worst.total_bytes)
    budget = (worst.total_bytes + plain.total_bytes) // 2
    lines = [projection.format_report(dataclasses.replace(r, usable_bytes=budget), s) for r in (worst, plain)]
    assert "fits" in lines[0] and "DOES NOT FIT" in lines[1] and lines[1].lstrip().startswith("unchunked pair 62x128")


def test_the_projection_is_the_executed_flops_it_sums():
    """Days = executed FLOPs (the compiler's per program where given, weighted by how often each runs)
    at the stated efficiency, and the parts (useful, padding by cause, recompute) sum to them."""
    from trainer.plan.length_profiles import corpus_profiles
    from trainer.plan.program_count import simulate

    cfg = get_preset("reference").replace(model=DEMO_MODEL, batch_size=64, pack_programs=6, remat="none")
    enc = EncoderConfig.from_hf_dict(projection.read_model_config(DEMO_MODEL))
    sim = simulate(corpus_profiles(None, None, cfg.model), cfg, 8, steps=60)
    analytic = projection.project(sim, enc, cfg, 8, 123.0, 0.4)
    # Per-program figures as the compiler gives them (per device): 10% over the analytic count.
    compiled = {s: 1.1 * projection.shape_step_flops(enc, s, 8, cfg)[1] / 8 for s in sim.counts}
    proj = projection.project(sim, enc, cfg, 8, 123.0, 0.4, compiled)
    executed = sum(compiled[s] * 8 * n for s, n in sim.counts.items())
    days = executed / sim.steps / (0.4 * 123e12 * 8) * cfg.train_steps / 86400
    assert proj["days"] == pytest.approx(days, rel=1e-12) and proj["compiled_step_share"] == 1.0
    assert proj["days"] == pytest.approx(1.1 * analytic["days"], rel=1e-9)
    assert sum(proj["parts_days"].values()) == pytest.approx(proj["days"], rel=1e-9)
    parts = proj["parts_days"]
    # Model FLOPs are analytic: the recompute is the analytic one plus the 10%.
    assert parts["recompute"] == pytest.approx(0.1 * analytic["days"] + analytic["parts_days"]["recompute"], rel=1e-6)
    # No remat, no chunks in the plan: the attention backward's recomputed scores alone (half its forward).
    attention = sum(
        n * 0.5 * flops_lib.forward_flops(enc, 8 * s.rows * (1 if s.packed else s.columns), s.length)[1]
        for s, n in sim.counts.items()
    )
    assert analytic["parts_days"]["recompute"] == pytest.approx(days * attention / executed, rel=1e-9)
    # 10% over model FLOPs: every program is over 3%, and their excess is the recompute part.
    assert {o["shape"] for o in proj["over_3pct"]} == {s.label for s in sim.counts} and not analytic["over_3pct"]
    assert sum(o["days"] for o in proj["over_3pct"]) == pytest.approx(parts["recompute"], rel=1e-9)
    assert all(o["counted_by"] == "compiler" and o["remat"] == "none" for o in proj["over_3pct"])
    # --remat=auto: each program's own mode, here qkv over 1,000 tokens per device (its recompute counted).
    auto = cfg.replace(remat="auto")
    qkv = projection.project(
        sim, enc, auto, 8, 123.0, 0.4, remat_of=lambda s: "qkv" if s.rows * s.length > 1000 else "none"
    )
    assert qkv["days"] > analytic["days"] and {o["remat"] for o in qkv["over_3pct"]} == {"qkv"}
    with pytest.raises(ValueError, match="program's own mode"):
        projection.project(sim, enc, auto, 8, 123.0, 0.4)
    assert proj["useful_share"] == pytest.approx(parts["useful"] / proj["days"], rel=1e-9)
    assert proj["slots_per_real_token"] == sim.padding and proj["programs"] == sim.programs
    # The 2021 ways: every text at 128 costs more than columns at their longest rounded up to 64.
    assert proj["seed_way_days"] > proj["flax2021_days"] > analytic["days"]
    lines = projection.projection_lines(proj, cfg, sim)
    assert "100.0% of steps counted by the compiler" in lines[1] and "useful share" in lines[1]
    assert "ladder" in lines[2] and "uneven cores" in lines[2] and "2021 Flax script" in lines[3]
