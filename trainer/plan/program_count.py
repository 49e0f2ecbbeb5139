"""How many programs a run compiles, and the padding its batch shapes cost, before it runs.

XLA compiles one program per batch shape (the rules: trainer/data/shapes.py, which the run itself
follows; the row counts: `pack_row_steps` per doubling, or `pack_programs` fitted to the lengths,
trainer/data/row_fit.py). Fewer programs pad more rows; a TPU run, whose compiles take minutes, wants
the trade measured. This module replays the corpus schedule over the length profiles
(trainer/plan/length_profiles.py) through the packer's own placement (texts dealt evenly over the
devices with `pack_even_cores`) and counts the shapes and where the padding goes (gaps inside rows,
uneven rows across devices, the ladder).

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

from trainer.data.corpus_schedule import CorpusPasses, corpus_passes, passes_report
from trainer.data.packing import RowLadder
from trainer.data.row_fit import FIT_STEPS, CorpusProfile, fit_ladder, row_ladder, simulate_needs
from trainer.data.shapes import Chunking, Shape, memory_check_shapes, need_shape

# The 2021 Flax script padded each column of a batch to its longest text rounded up to this.
FLAX_2021_MULTIPLE = 64


@dataclasses.dataclass
class Simulation:
    """Shape counts and token totals of `steps` simulated steps (totals over all devices).

    `parts` per shape: [steps, real tokens, sum of squared text lengths, rows holding texts (all
    devices), rows of the fullest device x devices]; slots - real tokens splits into the gaps inside
    rows, the uneven rows across devices and the ladder's rounding (`padding_parts`). `baselines`:
    per 2021 way of padding, texts -> their padded length counts ("seed": every text at
    max_seq_length; "flax2021": each column at its longest text rounded up to FLAX_2021_MULTIPLE)."""

    counts: dict[Shape, int]
    steps: int
    real_tokens: int  # tokens of the texts themselves
    slot_tokens: int  # tokens the encoder runs on: texts plus padding
    seed_tokens: int  # the original recipe's: every text padded to max_seq_length
    batch_size: int
    n_shards: int
    max_seq_length: int
    parts: dict[Shape, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    baselines: dict[str, dict[int, int]] = dataclasses.field(default_factory=dict)
    ladder: RowLadder | None = None  # the row counts the shapes were rounded to

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

    def padding_parts(self, shape: Shape | None = None) -> dict[str, int]:
        """Padding token slots (of `shape`, or all), by cause; they sum to slots - real tokens.
        gaps: the free ends of the rows holding texts (padded batches: all of their padding);
        uneven: the rows a device pads to the fullest device's count; ladder: the rows the ladder
        (and the memory plan's chunk rounding) adds above that."""
        out = {"gaps": 0, "uneven": 0, "ladder": 0}
        for s in [shape] if shape is not None else self.counts:
            steps, real, _, used, full = self.parts[s]
            slots = steps * s.tokens_per_device * self.n_shards
            if not s.packed:
                out["gaps"] += slots - real
                continue
            out["gaps"] += used * s.length - real
            out["uneven"] += (full - used) * s.length
            out["ladder"] += slots - full * s.length
        return out


def simulate(
    profiles: Sequence[CorpusProfile],
    cfg,
    n_shards: int,
    steps: int = 10_000,
    seed: int = 0,
    exact_packer: bool = False,
    ladder: RowLadder | None = None,
) -> Simulation:
    """Replays `steps` steps of cfg's corpus schedule (cfg.seed) with lengths drawn from `profiles`
    (seed) and counts the batch shapes, with `ladder` (default: the run's, `row_ladder`).
    `exact_packer`: place with packing.place_texts itself instead of the equal, faster `bin_count`
    (for checking it)."""
    fitting = ladder is None and cfg.packing and cfg.pack_programs and seed == 0 and not exact_packer
    needs, batches = simulate_needs(
        profiles, cfg, n_shards, max(steps, FIT_STEPS) if fitting else steps, seed, exact_packer
    )
    if ladder is None:  # the run's; its fit replays the first FIT_STEPS of these same steps
        ladder = (
            fit_ladder(profiles, cfg, n_shards, cfg.pack_programs, needs=needs)
            if fitting
            else row_ladder(cfg, profiles, n_shards)
        )
    needs, batches = needs[:steps], batches[:steps]
    chunking = Chunking.from_config(cfg, n_shards)
    counts: collections.Counter = collections.Counter()
    parts: dict[Shape, np.ndarray] = {}
    baselines: dict[str, collections.Counter] = {"seed": collections.Counter(), "flax2021": collections.Counter()}
    slot = 0
    for need, lengths in zip(needs, batches):
        shape = need_shape(need, cfg, n_shards, chunking, ladder)
        counts[shape] += 1
        slot += shape.tokens_per_device * n_shards
        p = parts.setdefault(shape, np.zeros(5, np.int64))
        p += (1, need.real, need.real_sq, need.used, need.rows * n_shards)
        baselines["seed"][cfg.max_seq_length] += lengths.size
        for column in lengths:
            longest = -(-int(column.max(initial=1)) // FLAX_2021_MULTIPLE) * FLAX_2021_MULTIPLE
            baselines["flax2021"][min(longest, cfg.max_seq_length)] += column.size
    return Simulation(
        dict(counts),
        int(steps),
        sum(n.real for n in needs),
        slot,
        sum(x.size for x in batches) * cfg.max_seq_length,
        cfg.batch_size,
        n_shards,
        cfg.max_seq_length,
        {k: tuple(int(x) for x in v) for k, v in parts.items()},
        {k: dict(v) for k, v in baselines.items()},
        ladder,
    )


def typical_shapes(sim: Simulation) -> list[Shape]:
    """The most frequent shape of each kind (pair first)."""
    best: dict[str, Shape] = {}
    for shape, n in sorted(sim.counts.items(), key=lambda kv: (-kv[1], kv[0])):
        best.setdefault(shape.kind, shape)
    return [best[k] for k in ("pair", "triplet") if k in best]


def summary_lines(sim: Simulation) -> list[str]:
    lines = [
        f"{sim.steps} steps of batch {sim.batch_size} over {sim.n_shards} devices: "
        f"{sim.programs} programs (distinct batch shapes)"
    ]
    for shape, n in sorted(sim.counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(
            f"  {shape.label:<32} {n:>7} steps  {n / max(sim.steps, 1):6.1%}  {shape.tokens_per_device} tokens/device"
        )
    lines.append(
        f"padding: {sim.padding:.3f} token slots per real token (seed way, every text padded to "
        f"{sim.max_seq_length}: {sim.seed_padding:.2f}x); compute saved vs seed way: "
        f"{sim.compute_saved:.2f}x"
    )
    parts = sim.padding_parts()
    lines.append(
        "padding slots per real token by cause: "
        + ", ".join(f"{k} {v / max(sim.real_tokens, 1):.3f}" for k, v in parts.items())
    )
    if sim.ladder is not None and sim.ladder.rungs:
        lines.append(f"row counts fitted to the lengths: {sim.ladder.describe()}")
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
    p.add_argument(
        "--manifest",
        default=None,
        help="the Beam job's output dir or manifest.json: measured lengths instead of the stated table",
    )
    p.add_argument(
        "--data_config",
        default=None,
        help="corpora for the stated table (without --manifest; default: data_config.json)",
    )
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
    print(
        f"{len(profiles)} corpora ({source}); packing={cfg.packing} pack_min_row_length="
        f"{cfg.pack_min_row_length} pack_row_steps={cfg.pack_row_steps} pack_programs={cfg.pack_programs} "
        f"pack_even_cores={cfg.pack_even_cores} chunk_tokens={cfg.chunk_tokens} "
        f"grad_cache_chunk={cfg.grad_cache_chunk} mixed_batch_share={cfg.mixed_batch_share}"
    )
    print("\n".join(summary_lines(sim)))
    print(
        "memory check shapes: "
        + ", ".join(f"{case} {s.label}" for case, s in memory_check_shapes(cfg, args.devices, sim.ladder))
    )
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

        corpora = [
            (c.name, c.weight, c.expected_lines) for c in load_data_config(data_config or shipped_data_config()).corpora
        ]
    return corpus_passes(corpora, cfg.train_steps, cfg.batch_size)


if __name__ == "__main__":
    sys.exit(main())
