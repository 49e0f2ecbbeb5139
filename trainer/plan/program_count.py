"""How many programs a run compiles, and the padding its batch shapes cost, before it runs.

XLA compiles one program per batch shape (the rules: trainer/data/shapes.py, which the run itself
follows). Fewer row-ladder steps compile fewer programs but pad more rows; a TPU run, whose compiles
take minutes, wants the trade measured. This module replays the corpus schedule over the length
profiles (trainer/plan/length_profiles.py) through the packer's own placement and counts.

  python -m trainer.plan.program_count --config=reference --devices=8 --steps=10000 [--manifest=out/data]
      [--pack_min_row_length=128 --pack_row_steps=2 ...any TrainConfig flag]

It also prints how many times the whole run (--train_steps x --batch_size) draws each corpus's examples
(trainer/data/corpus_schedule.py corpus_passes), warning above 20.

Nothing is compiled and no device is needed.
"""
from __future__ import annotations

import collections
import dataclasses
import sys
from typing import Sequence

import numpy as np

from trainer.data.padding import effective_buckets
from trainer.data.corpus_schedule import MIXED, CorpusPasses, CorpusSchedule, corpus_passes, passes_report
from trainer.plan.length_profiles import CorpusProfile, sample_lengths
from trainer.data.shapes import Chunking, Shape, batch_shape, memory_check_shapes

# Distinguishes the length draws from the corpus schedule's stream (trainer/data/corpus_schedule.py).
_STREAM_TAG = 0x1E4C7


@dataclasses.dataclass
class Simulation:
    """Shape counts and token totals of `steps` simulated steps (totals over all devices)."""

    counts: dict[Shape, int]
    steps: int
    real_tokens: int  # tokens of the texts themselves
    slot_tokens: int  # tokens the encoder runs on: texts plus padding
    seed_tokens: int  # the original recipe's: every text padded to max_seq_length
    batch_size: int
    n_shards: int
    max_seq_length: int

    @property
    def programs(self) -> int:
        return len(self.counts)

    @property
    def padding(self) -> float:
        return self.slot_tokens / max(self.real_tokens, 1)

    @property
    def seed_padding(self) -> float:
        return self.seed_tokens / max(self.real_tokens, 1)

    @property
    def compute_saved(self) -> float:
        return self.seed_tokens / max(self.slot_tokens, 1)


def step_lengths(profiles: Sequence[CorpusProfile], schedule: CorpusSchedule, step: int, batch_size: int,
                 max_seq_length: int, seed: int = 0) -> np.ndarray:
    """Token counts [C, batch_size] of batch `step`: its corpus's profile (a mixed batch: each slot's
    corpus, anchor and positive only, as the input pipeline builds it), drawn from (seed, step)."""
    rng = np.random.default_rng([_STREAM_TAG, seed & 0xFFFFFFFFFFFFFFFF, int(step)])
    ci = schedule.corpus_at(step)
    if ci != MIXED:
        return sample_lengths(profiles[ci], batch_size, rng, max_seq_length)
    choices = schedule.mixed_choices(step, batch_size)
    out = np.empty((2, batch_size), np.int64)
    for c in np.unique(choices).tolist():
        where = np.flatnonzero(choices == c)
        out[:, where] = sample_lengths(profiles[c], where.size, rng, max_seq_length)[:2]
    return out


def simulate(profiles: Sequence[CorpusProfile], cfg, n_shards: int, steps: int = 10_000, seed: int = 0,
             exact_packer: bool = False) -> Simulation:
    """Replays `steps` steps of cfg's corpus schedule (cfg.seed) with lengths drawn from `profiles`
    (seed) and counts the batch shapes. `exact_packer`: place with packing.place_texts itself instead
    of the equal, faster `bin_count` (for checking it)."""
    if not profiles:
        raise ValueError("no corpus profiles to simulate")
    schedule = CorpusSchedule([p.weight for p in profiles], cfg.seed, cfg.mixed_batch_share)
    chunking = Chunking.from_config(cfg, n_shards)
    buckets = effective_buckets(cfg.bucket_lengths, cfg.max_seq_length)
    counts: collections.Counter = collections.Counter()
    real = slot = seed_tokens = 0
    for step in range(int(steps)):
        lengths = step_lengths(profiles, schedule, step, cfg.batch_size, cfg.max_seq_length, seed)
        shape = batch_shape(lengths, cfg, n_shards, chunking, buckets, exact_packer)
        counts[shape] += 1
        real += int(lengths.sum())
        slot += shape.tokens_per_device * n_shards
        seed_tokens += lengths.size * cfg.max_seq_length
    return Simulation(dict(counts), int(steps), real, slot, seed_tokens, cfg.batch_size, n_shards,
                      cfg.max_seq_length)


def typical_shapes(sim: Simulation) -> list[Shape]:
    """The most frequent shape of each kind (pair first)."""
    best: dict[str, Shape] = {}
    for shape, n in sorted(sim.counts.items(), key=lambda kv: (-kv[1], kv[0])):
        best.setdefault(shape.kind, shape)
    return [best[k] for k in ("pair", "triplet") if k in best]


def summary_lines(sim: Simulation) -> list[str]:
    lines = [f"{sim.steps} steps of batch {sim.batch_size} over {sim.n_shards} devices: "
             f"{sim.programs} programs (distinct batch shapes)"]
    for shape, n in sorted(sim.counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {shape.label:<32} {n:>7} steps  {n / max(sim.steps, 1):6.1%}  "
                     f"{shape.tokens_per_device} tokens/device")
    lines.append(f"padding: {sim.padding:.2f}x the real tokens (seed way, every text padded to "
                 f"{sim.max_seq_length}: {sim.seed_padding:.2f}x); compute saved vs seed way: "
                 f"{sim.compute_saved:.2f}x")
    return lines


def main(argv: list[str] | None = None) -> int:
    import time

    from pipeline.manifest import load_manifest
    from trainer import flags
    from trainer.data.shapes import with_effective_length
    from trainer.plan.length_profiles import corpus_profiles

    p = flags.build_parser(None, __doc__)
    p.set_defaults(config="reference")
    p.add_argument("--devices", type=int, default=8, help="data shards (devices) the batch splits over")
    p.add_argument("--steps", type=int, default=10_000, help="steps to simulate")
    p.add_argument("--manifest", default=None,
                   help="the Beam job's output dir or manifest.json: measured lengths instead of the stated table")
    p.add_argument("--data_config", default=None,
                   help="corpora for the stated table (without --manifest; default: data_config.json)")
    p.add_argument("--sim_seed", type=int, default=0, help="seed of the simulated token lengths")
    p.add_argument("--exact_packer", action="store_true", help="place with packing.place_texts itself (slower)")
    args = p.parse_args(argv)
    cfg = flags.config_from_args(args)
    manifest = load_manifest(args.manifest) if args.manifest else None
    cfg = with_effective_length(cfg, manifest)
    profiles = corpus_profiles(manifest, args.data_config, cfg.model)
    source = f"measured lengths of {args.manifest}" if manifest else "stated length table"
    start = time.perf_counter()
    sim = simulate(profiles, cfg, args.devices, args.steps, args.sim_seed, args.exact_packer)
    took = time.perf_counter() - start
    print(f"{len(profiles)} corpora ({source}); packing={cfg.packing} pack_min_row_length="
          f"{cfg.pack_min_row_length} pack_row_steps={cfg.pack_row_steps} chunk_tokens={cfg.chunk_tokens} "
          f"grad_cache_chunk={cfg.grad_cache_chunk} mixed_batch_share={cfg.mixed_batch_share}")
    print("\n".join(summary_lines(sim)))
    print("memory check shapes: " + ", ".join(f"{case} {s.label}" for case, s in memory_check_shapes(cfg, args.devices)))
    print(f"simulated in {took:.1f} s")
    lines, warning = passes_report(run_passes(cfg, manifest, args.data_config), cfg.train_steps, cfg.batch_size)
    print("\n".join(lines) + (f"\nwarning: {warning}" if warning else ""))
    return 0


def run_passes(cfg, manifest, data_config: str | None) -> list[CorpusPasses]:
    """Passes per corpus of the whole run (cfg.train_steps, not the simulated steps): over the manifest's
    training examples, else the data config's expected_lines (default: the shipped data_config.json)."""
    if manifest is not None:
        corpora = [(c.name, c.weight, c.train_examples) for c in manifest.corpora]
    else:
        from pipeline.data_config import load_data_config
        from trainer.plan.length_profiles import shipped_data_config

        corpora = [(c.name, c.weight, c.expected_lines)
                   for c in load_data_config(data_config or shipped_data_config()).corpora]
    return corpus_passes(corpora, cfg.train_steps, cfg.batch_size)


if __name__ == "__main__":
    sys.exit(main())
