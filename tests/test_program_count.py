"""The program-count simulation: exact placement, consistent counts, and the reference run's bounds."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pipeline.data_config import load_data_config
from tests.test_length_profiles import write_manifest
from trainer.config import TrainConfig, get_preset
from trainer.data.packing import RowLadder, best_fit_decreasing, row_bucket
from trainer.data.padding import effective_buckets
from trainer.data.row_fit import fit_ladder, fit_rungs, row_ladder
from trainer.data.shapes import Chunking, Shape, bin_count, largest_unchunked_shape, memory_check_shapes, worst_shapes
from trainer.plan.length_profiles import stated_profiles
from trainer.plan.program_count import main, simulate, summary_lines, typical_shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILES = stated_profiles(load_data_config(os.path.join(REPO, "data_config.json")).corpora)
SMALL = TrainConfig(batch_size=256)


def test_bin_count_equals_best_fit_decreasing():
    rng = np.random.default_rng(0)
    for t in range(400):
        cap = int(rng.choice([8, 24, 64, 128]))
        n = int(rng.integers(0, 300))
        if t % 3 == 0:
            lengths = rng.integers(0, cap + 1, n)
        elif t % 3 == 1:  # log-normal, as the profiles draw
            lengths = np.clip(np.rint(np.exp(rng.normal(np.log(cap / 5), 0.8, n))), 0, cap).astype(np.int64)
        else:  # few distinct lengths: long runs of equal items
            lengths = rng.choice(rng.integers(1, cap + 1, 3), n)
        assert bin_count(lengths, cap) == best_fit_decreasing(lengths, cap)[2], (cap, lengths.tolist())
    with pytest.raises(ValueError):
        bin_count(np.array([5, 9]), 8)


def test_simulation_equals_the_packer_itself():
    cfg = SMALL.replace(mixed_batch_share=0.2, chunk_tokens=2048)
    fast = simulate(PROFILES, cfg, 4, steps=60, seed=3)
    exact = simulate(PROFILES, cfg, 4, steps=60, seed=3, exact_packer=True)
    assert fast == exact


def test_simulation_counts_add_up_and_repeat():
    sim = simulate(PROFILES, SMALL, 8, steps=300, seed=1)
    assert sum(sim.counts.values()) == sim.steps == 300
    assert sim.programs == len(sim.counts) > 1
    assert 0 < sim.real_tokens <= sim.slot_tokens <= sim.seed_tokens
    assert sim.padding >= 1 and sim.seed_padding >= sim.padding and sim.compute_saved >= 1
    assert {s.kind for s in sim.counts} == {"pair", "triplet"}
    for s in sim.counts:
        assert s.packed and s.length in effective_buckets(SMALL.bucket_lengths, SMALL.max_seq_length)
        assert s.length >= SMALL.pack_min_row_length and s.chunks == 1
    assert simulate(PROFILES, SMALL, 8, steps=300, seed=1) == sim
    assert simulate(PROFILES, SMALL, 8, steps=300, seed=2) != sim
    typical = typical_shapes(sim)
    assert [s.kind for s in typical] == ["pair", "triplet"]
    assert all(sim.counts[s] == max(n for t, n in sim.counts.items() if t.kind == s.kind) for s in typical)
    lines = summary_lines(sim)
    assert f"{sim.programs} programs" in lines[0] and len(lines) == sim.programs + 3
    assert "token slots per real token" in lines[-2] and "by cause: gaps" in lines[-1]


def test_mixed_batches_are_pair_batches():
    sim = simulate(PROFILES, SMALL.replace(mixed_batch_share=1.0), 8, steps=50)
    assert {s.kind for s in sim.counts} == {"pair"}
    assert sim.seed_tokens == 50 * 2 * SMALL.batch_size * SMALL.max_seq_length


def test_min_row_length_at_max_gives_one_row_length():
    sim = simulate(PROFILES, SMALL.replace(pack_min_row_length=128), 8, steps=200)
    assert {s.length for s in sim.counts} == {128}


def test_fewer_row_steps_never_more_programs():
    programs = [
        simulate(PROFILES, SMALL.replace(pack_row_steps=k), 8, steps=300, seed=5).programs for k in (16, 8, 4, 2)
    ]
    assert programs == sorted(programs, reverse=True) and programs[-1] < programs[0]


def test_small_chunk_tokens_chunk_the_long_shapes():
    cfg = SMALL.replace(chunk_tokens=2048)
    sim = simulate(PROFILES, cfg, 8, steps=200)
    assert any(s.chunks > 1 for s in sim.counts)
    for s in sim.counts:
        assert s.rows % s.chunks == 0
        assert s.tokens_per_device / s.chunks <= cfg.chunk_tokens  # rows of 128 tokens: 16 per chunk
    assert all(s.chunks == 1 for s in sim.counts if s.tokens_per_device <= 2048)


def test_padded_shapes_without_packing():
    cfg = SMALL.replace(packing=False)
    sim = simulate(PROFILES, cfg, 8, steps=200)
    buckets = effective_buckets(cfg.bucket_lengths, cfg.max_seq_length)
    for s in sim.counts:
        assert not s.packed and s.rows == 32 and s.length in buckets and s.chunks == 1
        assert s.tokens_per_device == s.columns * 32 * s.length
    assert sim.padding >= 1
    assert sim.seed_tokens >= sim.slot_tokens
    # Gradient caching embeds one column at a time, in `chunks` chunks of texts.
    chunked = simulate(PROFILES, cfg.replace(chunk_tokens=2048), 8, steps=100)
    assert any(s.chunks > 1 for s in chunked.counts)
    assert all(s.rows % s.chunks == 0 and s.rows * s.length / s.chunks <= 2048 for s in chunked.counts)


def test_worst_shapes_of_the_reference_run():
    pair, triplet = worst_shapes(TrainConfig(), 8)
    assert (pair.kind, pair.packed, pair.rows, pair.length, pair.chunks) == ("pair", True, 256, 128, 1)
    assert (triplet.kind, triplet.rows, triplet.length, triplet.chunks) == ("triplet", 384, 128, 1)
    pair, triplet = worst_shapes(TrainConfig(chunk_tokens=16384), 8)
    assert (pair.rows, pair.chunks) == (256, 2) and pair.label == "pair 256x128 (2 chunks)"
    assert triplet.chunks == 3 and triplet.rows % 3 == 0
    padded = worst_shapes(TrainConfig(packing=False), 8)
    assert padded == [Shape("pair", False, 128, 128, 1), Shape("triplet", False, 128, 128, 1)]


def test_the_memory_check_adds_the_largest_shape_that_runs_unchunked():
    """Per-shape chunks split the worst shape, so the largest plain shape is a program of its own: the
    reference preset chunks the 384-row triplet in 2 and runs a 256-row one whole (32,768 tokens)."""
    assert [(case, s.label) for case, s in memory_check_shapes(get_preset("reference"), 8)] == [
        ("worst", "pair 256x128"),
        ("worst", "triplet 384x128 (2 chunks)"),
        ("unchunked", "triplet 256x128"),
    ]
    assert memory_check_shapes(TrainConfig(), 8) == [("worst", s) for s in worst_shapes(TrainConfig(), 8)]  # no chunks
    assert largest_unchunked_shape(TrainConfig(grad_cache_chunk=256), 8, "pair") is None  # every shape chunked
    for cfg in (
        SMALL.replace(chunk_tokens=2048),
        SMALL.replace(chunk_tokens=3000, pack_row_steps=4),
        SMALL.replace(chunk_tokens=2048, pack_min_row_length=128),
        SMALL.replace(chunk_tokens=9000, packing=False),
    ):
        plan = Chunking.from_config(cfg, 8)
        sim = simulate(PROFILES, cfg, 8, steps=300, seed=4)
        for kind in ("pair", "triplet"):
            plain = largest_unchunked_shape(cfg, 8, kind)
            if plain.packed:
                assert plan.packed_chunks(plain.rows, plain.length) == 1
                assert row_bucket(plain.rows, cfg.pack_row_steps) == plain.rows  # a count the ladder emits
                assert plan.packed_chunks(row_bucket(plain.rows + 1, cfg.pack_row_steps), plain.length) > 1
            else:
                assert plan.padded_chunk(plain.columns, plain.length) == 0
            # No plain shape of the simulated run holds more tokens per device. (A padded shape's chunks
            # count texts per column; a column embedded whole in a gradient-caching pass shows 1.)
            ran_plain = [
                s
                for s in sim.counts
                if s.kind == kind and (s.chunks == 1 if s.packed else not plan.padded_chunk(s.columns, s.length))
            ]
            assert ran_plain and max(s.tokens_per_device for s in ran_plain) <= plain.tokens_per_device, cfg


def test_reference_tpu_setting_compiles_few_programs():
    """The reference run on a v3-8 with one row length and 2 ladder steps per doubling: at most 16 programs."""
    cfg = TrainConfig(dtype="bfloat16", pack_min_row_length=128, pack_row_steps=2)
    sim = simulate(PROFILES, cfg, 8, steps=300)
    assert sim.programs <= 16
    assert {s.length for s in sim.counts} == {128}
    assert sim.compute_saved > 1.5


def test_cli(capsys, tmp_path):
    assert main(["--config=reference", "--devices=4", "--steps=20", "--batch_size=64", "--pack_row_steps=4"]) == 0
    out = capsys.readouterr().out
    assert "20 steps of batch 64 over 4 devices" in out and "pack_row_steps=4" in out
    assert "memory check shapes: worst pair 32x128, worst triplet 48x128" in out
    # Data the job cut at 64 tokens: planned at 64, as the trainer's batches are.
    assert (
        main(
            [
                "--config=reference",
                "--devices=4",
                "--steps=20",
                "--batch_size=64",
                f"--manifest={write_manifest(tmp_path, 64)}",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "memory check shapes: worst pair 32x64, worst triplet 48x64" in out
    # The manifest's corpora, without training examples: drawn infinitely often, each named.
    assert "passes per corpus over 540,000 steps x 64 examples" in out
    assert out.rstrip().endswith(
        "warning: 2 corpus(es) drawn more than 20 times per example: p (inf), t (inf); to "
        "draw them less, lower their weights in the data config (weights proportional to the "
        "corpora's examples give every corpus the same passes) or train fewer steps "
        "(docs/pipeline.md, 'Passes per corpus')"
    )


def test_cli_states_the_passes_of_the_whole_run(capsys):
    assert main(["--config=reference", "--devices=4", "--steps=2", "--batch_size=1024", "--train_steps=540000"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split()[1:]
        for line in out.split("(draws of each example, on average):\n")[1].splitlines()
        if line.startswith("  ")
    }
    assert rows["msmarco"] == ["9.11%", "499,184", "100.93"] and rows["searchqa"] == ["5.31%", "117,220", "250.57"]
    assert rows["reddit"] == ["12.10%", "726,484,430", "0.09"] and len(rows) == 28  # the header and 27 corpora
    warning = out.split("warning: ")[1]
    assert warning.startswith("17 corpus(es) drawn more than 20 times per example: searchqa (251), msmarco (101), ")


def _brute_force_rungs(needed, k, top):
    """The least padded rows over every choice of at most k rungs from the needed counts (top included)."""
    import itertools

    values = sorted(v for v in needed if v < top)
    best = None
    for n in range(0, k):
        for combo in itertools.combinations(values, n):
            rungs = sorted(combo) + [top]
            cost = sum(w * (next(r for r in rungs if r >= v) - v) for v, w in needed.items())
            best = cost if best is None else min(best, cost)
    return best


def test_fit_rungs_finds_the_least_padding():
    rng = np.random.default_rng(3)
    for _ in range(30):
        top = int(rng.integers(20, 40))
        needed = {int(v): int(rng.integers(1, 50)) for v in rng.integers(1, top + 1, int(rng.integers(1, 9)))}
        for k in (1, 2, 3, 4):
            rungs, costs = fit_rungs(needed, k, top)
            assert rungs[-1] == top and len(rungs) <= k and rungs == sorted(set(rungs))
            cost = sum(w * (next(r for r in rungs if r >= v) - v) for v, w in needed.items())
            assert cost == costs[-1] == _brute_force_rungs(needed, k, top), (needed, k, rungs)
    # A rung's cost counts the rows it emits: chunk rounding to a multiple of 4 above 8 rows.
    rungs, _ = fit_rungs({9: 10, 12: 1}, 2, 12, grow=lambda r: r if r <= 8 else -(-r // 4) * 4)
    assert rungs == [12]  # 9 grows to 12 anyway: a second rung saves nothing


def test_padding_splits_into_gaps_uneven_cores_and_the_ladder():
    for cfg in (SMALL, SMALL.replace(pack_even_cores=False), SMALL.replace(packing=False)):
        sim = simulate(PROFILES, cfg, 8, steps=100, seed=2)
        parts = sim.padding_parts()
        assert sum(parts.values()) == sim.slot_tokens - sim.real_tokens and min(parts.values()) >= 0
        assert sum(p[0] for p in sim.parts.values()) == 100 and sum(p[1] for p in sim.parts.values()) == sim.real_tokens
        if not cfg.packing:
            assert parts["uneven"] == parts["ladder"] == 0 and parts["gaps"] > 0
    # Dealing the texts evenly over the devices: a fraction of the uneven rows, the same gaps or fewer.
    today = simulate(PROFILES, SMALL.replace(pack_even_cores=False), 8, steps=100, seed=2).padding_parts()
    even = simulate(PROFILES, SMALL, 8, steps=100, seed=2).padding_parts()
    assert even["uneven"] < today["uneven"] / 5 and even["gaps"] <= today["gaps"] * 1.01


def test_fitted_rungs_pad_less_with_the_same_programs_and_cover_the_worst_batch():
    cfg = SMALL.replace(pack_min_row_length=128, pack_row_steps=4)
    geometric = simulate(PROFILES, cfg, 8, steps=300, seed=1)
    fitted_cfg = cfg.replace(pack_programs=geometric.programs)
    ladder = row_ladder(fitted_cfg, PROFILES, 8)
    assert ladder == row_ladder(fitted_cfg, PROFILES, 8) == fit_ladder(PROFILES, fitted_cfg, 8, geometric.programs)
    assert sum(len(r) for r in ladder.rungs.values()) <= geometric.programs
    assert {g: r[-1] for g, r in ladder.rungs.items()} == {(2, 128): 64, (3, 128): 96}  # every text a row
    fitted = simulate(PROFILES, fitted_cfg, 8, steps=300, seed=1)
    assert fitted.ladder == ladder and fitted.programs <= geometric.programs
    assert fitted.padding_parts()["ladder"] < geometric.padding_parts()["ladder"] / 2
    assert worst_shapes(fitted_cfg, 8, ladder) == worst_shapes(cfg, 8)  # the same worst programs
    assert row_ladder(cfg, None, 8) == RowLadder(4)  # pack_programs=0: the geometric ladder
    with pytest.raises(ValueError, match="at least 2 programs"):
        fit_ladder(PROFILES, fitted_cfg, 8, 1)


def test_reference_run_pads_under_six_percent_with_sixteen_programs():
    """The issue-28 goal: token slots per real token <= 1.06 with at most 16 programs (the geometric
    ladder of 4 steps with one device's slice each: 1.14)."""
    cfg = get_preset("reference")
    sim = simulate(PROFILES, cfg, 8, steps=400)
    assert cfg.pack_programs == 16 and sim.programs <= 16 and sim.padding <= 1.03
    before = simulate(PROFILES, cfg.replace(pack_programs=0, pack_even_cores=False), 8, steps=400)
    assert before.padding > 1.12
