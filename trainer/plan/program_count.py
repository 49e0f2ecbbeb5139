"""How many programs a run compiles, and the padding its batch shapes cost, before it runs.

XLA compiles one program per batch shape. With packing (trainer/data/packing.py) a shape is (kind, rows per
device, row length, chunks): the row length from the buckets, the rows from the row ladder
(`pack_row_steps` steps per doubling, or `pack_programs` row counts fitted to the lengths: `fit_ladder`),
grown by the memory plan to a multiple of their gradient-caching chunks (trainer/plan/memory_plan.py).
Fewer programs pad more rows; a TPU run, whose compiles take minutes, wants the trade measured. This
module replays the corpus schedule over the length profiles (trainer/plan/length_profiles.py) through
the packer's own placement (texts dealt evenly over the devices with `pack_even_cores`) and counts
the shapes and where the padding goes (gaps inside rows, uneven rows across devices, the ladder).

  python -m trainer.plan.program_count --config=reference --devices=8 --steps=10000 [--manifest=out/data]
      [--pack_min_row_length=128 --pack_row_steps=2 ...any TrainConfig flag]

Nothing is compiled and no device is needed (memory_plan imports jax but runs none of it).
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import sys
from typing import Sequence

import numpy as np

from trainer.data.batching import bucket_length, effective_buckets
from trainer.data.corpus_schedule import MIXED, CorpusSchedule
from trainer.plan.length_profiles import CorpusProfile, sample_lengths
from trainer.plan.memory_plan import ChunkPlan
from trainer.data.packing import RowLadder, deal_texts, place_texts, row_bucket

# Steps of the simulation that fits a run's row counts (`fit_ladder`): the trainer and the planner
# replay the same ones (seed 0), so both get the same rungs. ~4 s for the reference's 27 corpora
# on a quiet 2-core machine.
FIT_STEPS = 2000
# The 2021 Flax script padded each column of a batch to its longest text rounded up to this.
FLAX_2021_MULTIPLE = 64

# Distinguishes the length draws from the corpus schedule's stream (trainer/data/corpus_schedule.py).
_STREAM_TAG = 0x1E4C7


@dataclasses.dataclass(frozen=True, order=True)
class Shape:
    """One compiled program's batch shape.

    packed: `rows` rows per device of `length` tokens; padded: `rows` texts per device and column,
    padded to the bucket `length`. `chunks`: gradient-caching chunks (1 = the plain step)."""

    kind: str  # "pair" | "triplet"
    packed: bool
    rows: int
    length: int
    chunks: int = 1

    @property
    def columns(self) -> int:
        return 3 if self.kind == "triplet" else 2

    @property
    def tokens_per_device(self) -> int:
        return self.rows * self.length if self.packed else self.columns * self.rows * self.length

    @property
    def label(self) -> str:
        dims = f"{self.rows}x{self.length}" if self.packed else f"padded {self.columns}x{self.rows}x{self.length}"
        return f"{self.kind} {dims}" + (f" ({self.chunks} chunks)" if self.chunks > 1 else "")


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
        for s in ([shape] if shape is not None else self.counts):
            steps, real, _, used, full = self.parts[s]
            slots = steps * s.tokens_per_device * self.n_shards
            if not s.packed:
                out["gaps"] += slots - real
                continue
            out["gaps"] += used * s.length - real
            out["uneven"] += (full - used) * s.length
            out["ladder"] += slots - full * s.length
        return out


def bin_count(lengths: np.ndarray, capacity: int) -> int:
    """The bin count of packing.best_fit_decreasing(lengths, capacity), from the length histogram.

    Only the count shapes a program, and best fit treats open bins of equal free space alike, so it is
    enough to track how many bins have each free space. Equal items go in as a group: an item fills
    the open bin of least free space s >= n, which then has s - n left; if that is still >= n the next
    item goes there too, so each such bin takes s // n items in a row. Exact (tests/test_program_count.py
    compares them) and 3-20x faster than the item-by-item loop: a 10,000-step reference simulation
    takes ~12 s instead of ~45 s (2 CPU cores)."""
    hist = np.bincount(np.asarray(lengths, np.int64).ravel(), minlength=capacity + 1)
    if hist.size > capacity + 1 and hist[capacity + 1:].any():
        raise ValueError(f"a text is longer than the row length {capacity}")
    free = [0] * (capacity + 1)  # free space -> open bins
    spaces: list[int] = []  # free spaces with open bins, ascending
    bins = 0

    def add(space: int, m: int) -> None:
        if m:
            if not free[space]:
                bisect.insort(spaces, space)
            free[space] += m

    for n in np.flatnonzero(hist[1:capacity + 1])[::-1].tolist():  # longest first; empty texts take no bin
        n += 1
        k = int(hist[n])
        i = bisect.bisect_left(spaces, n)
        while k and i < len(spaces):
            s = spaces[i]
            q = s // n  # items one bin of free space s takes in a row
            if k >= free[s] * q:  # every such bin filled
                m = free[s]
                k -= m * q
                free[s] = 0
                del spaces[i]
                add(s - q * n, m)  # < n: never revisited for this n
            else:
                full, r = divmod(k, q)
                free[s] -= full + (1 if r else 0)
                if not free[s]:
                    del spaces[i]
                add(s - q * n, full)
                if r:
                    add(s - r * n, 1)
                k = 0
            i = bisect.bisect_left(spaces, n)
        if k:  # new bins, each taking capacity // n items
            q = capacity // n
            full, r = divmod(k, q)
            bins += full + (1 if r else 0)
            add(capacity - q * n, full)
            if r:
                add(capacity - r * n, 1)
    return max(bins, 1)


@dataclasses.dataclass(frozen=True)
class Need:
    """What one batch needs before the ladder: its kind, row length and, per device, the rows of the
    fullest device (`rows`) and of all devices together (`used`); real tokens and squared lengths."""

    kind: str
    packed: bool
    length: int
    rows: int
    used: int
    real: int
    real_sq: int

    @property
    def columns(self) -> int:
        return 3 if self.kind == "triplet" else 2


def batch_need(lengths: np.ndarray, cfg, n_shards: int, buckets: Sequence[int], exact_packer: bool = False) -> Need:
    """The Need of one batch of token counts [C, B] under cfg's packing (as pack_batch places it:
    `bin_count` gives best_fit_decreasing's bin counts from the histogram; `exact_packer` runs it)."""
    kind = "triplet" if lengths.shape[0] == 3 else "pair"
    real, real_sq = int(lengths.sum()), int((lengths.astype(np.int64) ** 2).sum())
    if not cfg.packing:
        return Need(kind, False, bucket_length(int(lengths.max(initial=0)), buckets), 0, 0, real, real_sq)
    if exact_packer:
        _, _, placements, _, row_len = place_texts(lengths, n_shards, buckets, cfg.pack_min_row_length, 1,
                                                   even=cfg.pack_even_cores)
        bins = [p[2] for p in placements]
    else:
        row_len = bucket_length(min(max(int(lengths.max(initial=0)), cfg.pack_min_row_length), buckets[-1]),
                                buckets)
        _, shard_lengths = deal_texts(lengths, n_shards, cfg.pack_even_cores)
        bins = [bin_count(x, row_len) for x in shard_lengths]
    return Need(kind, True, row_len, max(bins), sum(bins), real, real_sq)


def need_shape(need: Need, cfg, n_shards: int, plan: ChunkPlan, ladder: RowLadder) -> Shape:
    """The program shape a Need compiles to under `ladder` and the memory plan."""
    if need.packed:
        rows = plan.packed_rows(ladder.round(need.rows, need.columns, need.length), need.length)
        return Shape(need.kind, True, rows, need.length, plan.packed_chunks(rows, need.length))
    chunk = plan.padded_chunk(need.columns, need.length)
    return Shape(need.kind, False, cfg.batch_size // n_shards, need.length, cfg.batch_size // chunk if chunk else 1)


def _shape(lengths: np.ndarray, cfg, n_shards: int, plan: ChunkPlan, buckets: Sequence[int],
           exact_packer: bool = False, ladder: RowLadder | None = None) -> Shape:
    """The program shape of one batch of token counts [C, B]."""
    ladder = ladder or RowLadder(cfg.pack_row_steps)
    return need_shape(batch_need(lengths, cfg, n_shards, buckets, exact_packer), cfg, n_shards, plan, ladder)


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


def simulate_needs(profiles: Sequence[CorpusProfile], cfg, n_shards: int, steps: int = 10_000, seed: int = 0,
                   exact_packer: bool = False) -> tuple[list[Need], list[np.ndarray]]:
    """Replays `steps` steps of cfg's corpus schedule (cfg.seed) with lengths drawn from `profiles`
    (seed): each batch's Need, and its token counts [C, B]."""
    if not profiles:
        raise ValueError("no corpus profiles to simulate")
    schedule = CorpusSchedule([p.weight for p in profiles], cfg.seed, cfg.mixed_batch_share)
    buckets = effective_buckets(cfg.bucket_lengths, cfg.max_seq_length)
    needs, batches = [], []
    for step in range(int(steps)):
        lengths = step_lengths(profiles, schedule, step, cfg.batch_size, cfg.max_seq_length, seed)
        needs.append(batch_need(lengths, cfg, n_shards, buckets, exact_packer))
        batches.append(lengths)
    return needs, batches


def simulate(profiles: Sequence[CorpusProfile], cfg, n_shards: int, steps: int = 10_000, seed: int = 0,
             exact_packer: bool = False, ladder: RowLadder | None = None) -> Simulation:
    """Replays `steps` steps of cfg's corpus schedule (cfg.seed) with lengths drawn from `profiles`
    (seed) and counts the batch shapes, with `ladder` (default: the run's, `row_ladder`).
    `exact_packer`: place with packing.place_texts itself instead of the equal, faster `bin_count`
    (for checking it)."""
    fitting = ladder is None and cfg.packing and cfg.pack_programs and seed == 0 and not exact_packer
    needs, batches = simulate_needs(profiles, cfg, n_shards, max(steps, FIT_STEPS) if fitting else steps, seed,
                                    exact_packer)
    if ladder is None:  # the run's; its fit replays the first FIT_STEPS of these same steps
        ladder = fit_ladder(profiles, cfg, n_shards, cfg.pack_programs, needs=needs) if fitting else \
            row_ladder(cfg, profiles, n_shards)
    needs, batches = needs[:steps], batches[:steps]
    plan = ChunkPlan.from_config(cfg, n_shards)
    counts: collections.Counter = collections.Counter()
    parts: dict[Shape, np.ndarray] = {}
    baselines: dict[str, collections.Counter] = {"seed": collections.Counter(), "flax2021": collections.Counter()}
    slot = 0
    for need, lengths in zip(needs, batches):
        shape = need_shape(need, cfg, n_shards, plan, ladder)
        counts[shape] += 1
        slot += shape.tokens_per_device * n_shards
        p = parts.setdefault(shape, np.zeros(5, np.int64))
        p += (1, need.real, need.real_sq, need.used, need.rows * n_shards)
        baselines["seed"][cfg.max_seq_length] += lengths.size
        for column in lengths:
            longest = -(-int(column.max(initial=1)) // FLAX_2021_MULTIPLE) * FLAX_2021_MULTIPLE
            baselines["flax2021"][min(longest, cfg.max_seq_length)] += column.size
    return Simulation(dict(counts), int(steps), sum(n.real for n in needs), slot,
                      sum(x.size for x in batches) * cfg.max_seq_length, cfg.batch_size, n_shards,
                      cfg.max_seq_length, {k: tuple(int(x) for x in v) for k, v in parts.items()},
                      {k: dict(v) for k, v in baselines.items()}, ladder)


def fit_rungs(needed: dict[int, int], programs: int, top: int, grow=lambda r: r) -> tuple[list[int], list[float]]:
    """Row counts for one (kind, row length): the rungs that pad the fewest rows over `needed` (rows
    needed -> batches), with `top` (what the fullest batch needs) the last. Returns the best rung
    lists' costs for 1..`programs` rungs and the rungs for `programs`: dynamic programming over the
    sorted distinct counts (a rung sits at a needed count: moving it down to the next one pads less).
    `grow(r)`: the rows a rung of r emits (the memory plan's chunk rounding), which the cost counts."""
    values = sorted(v for v in needed if v < top) + [top]
    w = np.array([needed.get(v, 0) for v in values], np.float64)
    v = np.array(values, np.float64)
    r = np.array([grow(x) for x in values], np.float64)
    m = len(values)
    W = np.concatenate([[0.0], np.cumsum(w)])
    WV = np.concatenate([[0.0], np.cumsum(w * v)])
    # cost[i, j]: values i..j (inclusive) all rounded up to rung j.
    i = np.arange(m)[:, None]
    j = np.arange(m)[None, :]
    cost = np.where(i <= j, r[None, :] * (W[j + 1] - W[i]) - (WV[j + 1] - WV[i]), np.inf)
    best = cost[0].copy()  # best[j]: values 0..j under at most k rungs, the last at j
    back, costs = [], [best[-1]]
    for _ in range(1, max(1, programs)):
        # A last rung at j over values i..j (i >= 1), the rest as before; or no further rung (-1).
        trial = best[:-1, None] + cost[1:, :]
        arg = np.argmin(trial, axis=0) if m > 1 else np.zeros(m, np.int64)
        new = trial[arg, np.arange(m)] if m > 1 else np.full(m, np.inf)
        take = new < best
        back.append(np.where(take, arg + 1, -1))
        best = np.where(take, new, best)
        costs.append(best[-1])
    rungs, j, k = [], m - 1, len(back)
    while True:
        if k == 0:
            rungs.append(values[j])
            break
        start = int(back[k - 1][j])
        if start >= 0:
            rungs.append(values[j])
            j = start - 1
        k -= 1
    return sorted(rungs), costs


def fit_ladder(profiles: Sequence[CorpusProfile], cfg, n_shards: int, programs: int,
               steps: int = FIT_STEPS, needs: Sequence[Need] | None = None) -> RowLadder:
    """A RowLadder of `programs` row counts in all, fitted to `steps` simulated batches (seed 0): per
    (kind, row length) the rungs `fit_rungs` gives, and the rungs shared out over the groups to pad the
    fewest token slots; each group's last rung is what its fullest possible batch needs (every text
    at the row length: one per row), so the fitted rungs cover every batch. A pure function of the
    profiles (the manifest or the stated table) and cfg: every host and the planner get the same.
    `needs`: simulate_needs(profiles, cfg, n_shards, >= steps, seed=0)'s, when already at hand."""
    needs = needs[:steps] if needs is not None and len(needs) >= steps else \
        simulate_needs(profiles, cfg, n_shards, steps, seed=0)[0]
    plan = ChunkPlan.from_config(cfg, n_shards)
    groups: dict[tuple[int, int], collections.Counter] = collections.defaultdict(collections.Counter)
    for n in needs:
        if n.packed:
            groups[(n.columns, n.length)][n.rows] += 1
    if programs < len(groups):
        raise ValueError(f"--pack_programs={programs}: the data needs at least {len(groups)} programs "
                         f"(one per batch kind and row length)")
    per_device = cfg.batch_size // n_shards
    fits = {}
    for (c, length), needed in sorted(groups.items()):
        top = max(c * per_device, max(needed))
        _, costs = fit_rungs(dict(needed), programs, top, lambda r, length=length: plan.packed_rows(r, length))
        fits[(c, length)] = [x * length for x in costs]  # token slots
    # Share the programs out over the groups: the split that pads the fewest slots (each group >= 1).
    split: dict[int, tuple[float, dict]] = {0: (0.0, {})}  # programs used -> (slots, rungs per group)
    for g, costs in fits.items():
        grown: dict[int, tuple[float, dict]] = {}
        for used, (c, share) in split.items():
            for k in range(1, min(len(costs), programs - used) + 1):
                if c + costs[k - 1] < grown.get(used + k, (np.inf,))[0]:
                    grown[used + k] = (c + costs[k - 1], {**share, g: k})
        split = grown
    share = min(split.values(), key=lambda x: x[0])[1]
    rungs = {}
    for (c, length), k in share.items():
        top = max(c * per_device, max(groups[(c, length)]))
        found, _ = fit_rungs(dict(groups[(c, length)]), k, top, lambda r, length=length: plan.packed_rows(r, length))
        rungs[(c, length)] = tuple(sorted({plan.packed_rows(r, length) for r in found}))
    return RowLadder(cfg.pack_row_steps, rungs)


def row_ladder(cfg, profiles: Sequence[CorpusProfile] | None, n_shards: int) -> RowLadder:
    """The run's row ladder: `pack_row_steps` per doubling, or (`pack_programs` > 0) fitted to the
    profiles by `fit_ladder`. The trainer (trainer/plan/memory_plan.py batch_packer) and the planner
    both take it from here."""
    if not cfg.packing or not cfg.pack_programs:
        return RowLadder(cfg.pack_row_steps)
    if not profiles:
        raise ValueError("--pack_programs fits the row counts to the data's lengths: no corpus profiles")
    return fit_ladder(profiles, cfg, n_shards, cfg.pack_programs)


def worst_shapes(cfg, n_shards: int, ladder: RowLadder | None = None) -> list[Shape]:
    """The pair and the triplet batch whose every text has max_seq_length tokens: the most rows, through
    the same placement, ladder (default: `pack_row_steps`') and chunk rounding. The largest programs
    when nothing is chunked."""
    plan = ChunkPlan.from_config(cfg, n_shards)
    buckets = effective_buckets(cfg.bucket_lengths, cfg.max_seq_length)
    return [_shape(np.full((c, cfg.batch_size), cfg.max_seq_length, np.int64), cfg, n_shards, plan, buckets,
                   exact_packer=True, ladder=ladder) for c in (2, 3)]


def largest_unchunked_shape(cfg, n_shards: int, kind: str, ladder: RowLadder | None = None) -> Shape | None:
    """The shape of `kind` with the most tokens per device that the memory plan runs plain (no gradient
    caching); None when every shape is chunked (grad_cache_chunk). Per-shape chunking splits the worst
    shape into chunks of at most chunk_tokens, so a smaller shape just under chunk_tokens, run whole, can
    need more memory (v3-8, roberta-large: a 256x128 triplet plain 14.99 GiB, the 384x128 worst in 2 chunks
    12.65). Packed: for each row length, the largest ladder row count within chunk_tokens and within what a
    batch can fill (every text in a row of its own); padded: the longest bucket within chunk_tokens."""
    plan = ChunkPlan.from_config(cfg, n_shards)
    if plan.fixed_texts:
        return None
    columns = 3 if kind == "triplet" else 2
    per_device = cfg.batch_size // n_shards
    buckets = effective_buckets(cfg.bucket_lengths, cfg.max_seq_length)
    if not cfg.packing:
        plain = [Shape(kind, False, per_device, n) for n in buckets if not plan.padded_chunk(columns, n)]
    else:
        ladder = ladder or RowLadder(cfg.pack_row_steps)
        shortest = bucket_length(min(cfg.pack_min_row_length, buckets[-1]), buckets)
        plain = []
        for length in (n for n in buckets if n >= shortest):
            most_rows = ladder.round(columns * per_device, columns, length)
            rows = min(most_rows, plan.max_tokens // length) if plan.max_tokens else most_rows
            while rows and ladder.round(rows, columns, length) != rows:  # down to a count the ladder emits
                rows -= 1
            if rows:
                plain.append(Shape(kind, True, rows, length))
    return max(plain, key=lambda s: (s.tokens_per_device, s.length), default=None)


def memory_check_shapes(cfg, n_shards: int, ladder: RowLadder | None = None) -> list[tuple[str, Shape]]:
    """What a memory check must compile: ("worst", shape) of each kind and, where the plan chunks that one,
    ("unchunked", the largest shape of the kind that runs plain), under `ladder` (the run's)."""
    out = []
    for worst in worst_shapes(cfg, n_shards, ladder):
        out.append(("worst", worst))
        plain = largest_unchunked_shape(cfg, n_shards, worst.kind, ladder)
        if plain is not None and plain != worst:
            out.append(("unchunked", plain))
    return out


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
    lines.append(f"padding: {sim.padding:.3f} token slots per real token (seed way, every text padded to "
                 f"{sim.max_seq_length}: {sim.seed_padding:.2f}x); compute saved vs seed way: "
                 f"{sim.compute_saved:.2f}x")
    parts = sim.padding_parts()
    lines.append("padding slots per real token by cause: " + ", ".join(
        f"{k} {v / max(sim.real_tokens, 1):.3f}" for k, v in parts.items()))
    if sim.ladder is not None and sim.ladder.rungs:
        lines.append(f"row counts fitted to the lengths: {sim.ladder.describe()}")
    return lines


def main(argv: list[str] | None = None) -> int:
    import time

    from pipeline.manifest import load_manifest
    from trainer import flags
    from trainer.plan.length_profiles import corpus_profiles, with_effective_length

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
          f"{cfg.pack_min_row_length} pack_row_steps={cfg.pack_row_steps} pack_programs={cfg.pack_programs} "
          f"pack_even_cores={cfg.pack_even_cores} chunk_tokens={cfg.chunk_tokens} "
          f"grad_cache_chunk={cfg.grad_cache_chunk} mixed_batch_share={cfg.mixed_batch_share}")
    print("\n".join(summary_lines(sim)))
    print("memory check shapes: " + ", ".join(f"{case} {s.label}" for case, s in
                                              memory_check_shapes(cfg, args.devices, sim.ladder)))
    print(f"simulated in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
