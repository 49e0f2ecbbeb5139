"""Row counts fitted to the data's lengths (`--pack_programs`): what the run packs with and the planner plans.

A packed batch's rows per device are rounded up to a rung of a RowLadder (trainer/data/packing.py).
With `pack_programs` > 0 the rungs are fitted to the run's length profiles: the corpus schedule is
replayed over them (`simulate_needs`, FIT_STEPS steps, seed 0), each batch's rows needed counted with
the packer's own placement (trainer/data/shapes.py `batch_need`), and `fit_ladder` picks the rungs
that pad the fewest token slots (dynamic programming over the rows-needed histogram). The profiles:
per corpus, log-normal token counts per column, from the manifest's measured p50 / p95
(`manifest_profiles`) or the planner's stated table (trainer/plan/length_profiles.py). A pure
function of the profiles and the config: every host and the planner get the same rungs. Numpy only.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Sequence

import numpy as np

from pipeline.manifest import Manifest
from pipeline.record_schema import TRIPLET_FORMATS
from trainer.data.corpus_schedule import MIXED, CorpusSchedule
from trainer.data.packing import RowLadder
from trainer.data.padding import effective_buckets
from trainer.data.shapes import Chunking, Need, batch_need

# Steps of the simulation that fits a run's row counts (`fit_ladder`): the trainer and the planner
# replay the same ones (seed 0), so both get the same rungs. ~4 s for the reference's 27 corpora
# on a quiet 2-core machine.
FIT_STEPS = 2000
# Distinguishes the length draws from the corpus schedule's stream (trainer/data/corpus_schedule.py).
_STREAM_TAG = 0x1E4C7
_Z95 = 1.645  # standard-normal 95th percentile


@dataclasses.dataclass(frozen=True)
class ColumnProfile:
    """Token counts of one column: log-normal with this median and sigma (of the log), plus the
    tokens of the prompt prepended to each of its texts (the sum cut at max_seq_length)."""

    median: float
    sigma: float
    prompt_tokens: int = 0


@dataclasses.dataclass(frozen=True)
class CorpusProfile:
    name: str
    record_format: str  # the corpus's record_format in data_config.json
    weight: float
    columns: tuple[ColumnProfile, ...]  # anchor, positive[, negative]

    @property
    def triplet(self) -> bool:
        return len(self.columns) == 3


def n_columns(record_format: str) -> int:
    return 3 if record_format in TRIPLET_FORMATS else 2


def manifest_profiles(manifest: Manifest) -> list[CorpusProfile]:
    """Profiles from the Beam job's measured token lengths: median = p50, sigma from p95 / p50.

    The manifest counts all texts of a corpus together, so every column gets the same profile; its
    lengths are after the cut at max_seq_length, which only matters above the cut, and of the texts
    as tokenized, prompts included (no prompt tokens are added here). Corpora without texts are
    skipped (the trainer has nothing to draw from them either)."""
    out = []
    for c in manifest.corpora:
        tl = c.token_lengths
        if not tl.get("texts"):
            continue
        p50 = max(float(tl["p50"]), 1.0)
        sigma = max(math.log(max(float(tl["p95"]), p50) / p50) / _Z95, 0.05)
        out.append(
            CorpusProfile(c.name, c.record_format, c.weight, (ColumnProfile(p50, sigma),) * n_columns(c.record_format))
        )
    return out


def sample_lengths(profile: CorpusProfile, n: int, rng: np.random.Generator, max_seq_length: int) -> np.ndarray:
    """Token counts int64 [C, n] of n records: log-normal draws, rounded, plus each column's prompt
    tokens, clipped to [3, max_seq_length] (3: a special token on each side of at least one word piece)."""
    median = np.array([c.median for c in profile.columns], np.float64)[:, None]
    sigma = np.array([c.sigma for c in profile.columns], np.float64)[:, None]
    prompt = np.array([c.prompt_tokens for c in profile.columns], np.float64)[:, None]
    draws = np.exp(np.log(median) + sigma * rng.standard_normal((len(profile.columns), int(n))))
    return np.clip(np.rint(draws) + prompt, min(3, max_seq_length), max_seq_length).astype(np.int64)


def step_lengths(
    profiles: Sequence[CorpusProfile],
    schedule: CorpusSchedule,
    step: int,
    batch_size: int,
    max_seq_length: int,
    seed: int = 0,
) -> np.ndarray:
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


def simulate_needs(
    profiles: Sequence[CorpusProfile],
    cfg,
    n_shards: int,
    steps: int = 10_000,
    seed: int = 0,
    exact_packer: bool = False,
) -> tuple[list[Need], list[np.ndarray]]:
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


def fit_ladder(
    profiles: Sequence[CorpusProfile],
    cfg,
    n_shards: int,
    programs: int,
    steps: int = FIT_STEPS,
    needs: Sequence[Need] | None = None,
) -> RowLadder:
    """A RowLadder of `programs` row counts in all, fitted to `steps` simulated batches (seed 0): per
    (kind, row length) the rungs `fit_rungs` gives, and the rungs shared out over the groups to pad the
    fewest token slots; each group's last rung is what its fullest possible batch needs (every text
    at the row length: one per row), so the fitted rungs cover every batch. A pure function of the
    profiles (the manifest or the stated table) and cfg: every host and the planner get the same.
    `needs`: simulate_needs(profiles, cfg, n_shards, >= steps, seed=0)'s, when already at hand."""
    needs = (
        needs[:steps]
        if needs is not None and len(needs) >= steps
        else simulate_needs(profiles, cfg, n_shards, steps, seed=0)[0]
    )
    chunking = Chunking.from_config(cfg, n_shards)
    groups: dict[tuple[int, int], collections.Counter] = collections.defaultdict(collections.Counter)
    for n in needs:
        if n.packed:
            groups[(n.columns, n.length)][n.rows] += 1
    if programs < len(groups):
        raise ValueError(
            f"--pack_programs={programs}: the data needs at least {len(groups)} programs "
            f"(one per batch kind and row length)"
        )
    per_device = cfg.batch_size // n_shards
    fits = {}
    for (c, length), needed in sorted(groups.items()):
        top = max(c * per_device, max(needed))
        _, costs = fit_rungs(dict(needed), programs, top, lambda r, length=length: chunking.packed_rows(r, length))
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
        found, _ = fit_rungs(
            dict(groups[(c, length)]), k, top, lambda r, length=length: chunking.packed_rows(r, length)
        )
        rungs[(c, length)] = tuple(sorted({chunking.packed_rows(r, length) for r in found}))
    return RowLadder(cfg.pack_row_steps, rungs)


def row_ladder(cfg, profiles: Sequence[CorpusProfile] | None, n_shards: int) -> RowLadder:
    """The run's row ladder: `pack_row_steps` per doubling, or (`pack_programs` > 0) fitted to the
    profiles by `fit_ladder`. The trainer (trainer/train/train_loop.py, for shapes.batch_packer and
    the preflight) and the planner (trainer/plan/program_count.py) both take it from here."""
    if not cfg.packing or not cfg.pack_programs:
        return RowLadder(cfg.pack_row_steps)
    if not profiles:
        raise ValueError("--pack_programs fits the row counts to the data's lengths: no corpus profiles")
    return fit_ladder(profiles, cfg, n_shards, cfg.pack_programs)
