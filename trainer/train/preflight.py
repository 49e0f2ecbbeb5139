"""Start-up check: compile the largest batch shapes for the devices the run has, and stop before
step 1 with a message that names the shape, the GiB and the flag that fixes it, instead of dying on
the first long-text batch hours in.

The shapes are those of trainer/data/shapes.py `memory_check_shapes`: the pair and the triplet batch
whose every text has max_seq_length tokens (the effective one: capped at the data's cut) and, where the
memory plan chunks that one, the largest shape of the kind that runs unchunked (it can need more memory
than the chunked worst case). Only the kinds the data has are checked. The budget is the
device's own memory limit (`memory_stats()["bytes_limit"]`, GPU and TPU), or cfg.memory_budget_gib;
a CPU has no limit to check against unless that flag sets one. With the persistent compilation cache
on (cfg.compilation_cache), the training step later finds these programs compiled.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from pipeline.user_errors import UserError
from trainer.config import TrainConfig
from trainer.data.shapes import memory_check_shapes
from trainer.mesh import data_shards
from trainer.train.aot import GIB, ShapeReport, compile_shapes
from trainer.train.memory import memory_budget

log = logging.getLogger("trainer")


class PreflightError(UserError):
    """A memory-check batch shape does not fit the device memory; the message says what to change."""


def _suggestion(r: ShapeReport, cfg: TrainConfig) -> str:
    """The flag that fixes it: chunks small enough for the room the state leaves, else ZeRO-1."""
    room = r.usable_bytes - (r.argument_bytes + r.output_bytes - r.alias_bytes)
    fixes = []
    if not cfg.shard_optimizer:
        fixes.append("--shard_optimizer=true (AdamW moments sharded over the devices)")
    if room > 0 and r.temp_bytes > 0 and not cfg.grad_cache_chunk:
        # Activations grow about linearly with the tokens of one pass; keep a tenth in reserve.
        tokens = int(r.shape.tokens_per_device * 0.9 * room / r.temp_bytes)
        tokens = max(cfg.max_seq_length, tokens // cfg.max_seq_length * cfg.max_seq_length)
        if tokens < r.shape.tokens_per_device:
            fixes.append(f"--chunk_tokens={tokens} (gradient caching on shapes over {tokens} tokens per device)")
    if cfg.remat == "none":
        fixes.append("--remat=auto (recompute in the programs that need it)")
    if not fixes:
        fixes.append("a smaller --batch_size or --max_seq_length, or more devices")
    return "; or ".join(fixes)


def check_reports(reports: Iterable[ShapeReport], cfg: TrainConfig) -> None:
    bad = [r for r in reports if not r.fits]
    if not bad:
        return
    r = bad[0]
    what = (
        f"the worst-case {r.shape.label} batch (every text at {cfg.max_seq_length} tokens)"
        if r.case == "worst"
        else f"the largest unchunked {r.shape.label} batch (the most tokens per device under "
        f"--chunk_tokens={cfg.chunk_tokens}, run without gradient caching)"
    )
    raise PreflightError(
        f"preflight: {what} needs "
        f"{r.total_bytes / GIB:.2f} GiB per device (state and batch {(r.argument_bytes) / GIB:.2f}, temporaries "
        f"{r.temp_bytes / GIB:.2f}) but the budget is {r.usable_bytes / GIB:.2f} GiB. Fix: {_suggestion(r, cfg)}. "
        f"Plan offline with: python -m trainer.plan.planner --topology=... --config=... [flags]"
    )


def preflight_shapes(
    cfg: TrainConfig, n_shards: int, kinds: Iterable[str], ladder: Any = None
) -> list[tuple[str, Any]]:
    """(case, shape) of the memory check for each kind the data has, for aot.compile_shapes, under the
    run's row `ladder` (trainer/data/row_fit.py row_ladder; default: pack_row_steps')."""
    kinds = set(kinds)
    return [(case, s) for case, s in memory_check_shapes(cfg, n_shards, ladder) if s.kind in kinds]


def run_preflight(
    model: Any, cfg: TrainConfig, mesh: Any, state: Any, kinds: Iterable[str], ladder: Any = None
) -> list[ShapeReport]:
    """Compile the memory-check shapes of `kinds` ("pair", "triplet") on `mesh`; raise PreflightError
    if one does not fit. `cfg` carries the effective max_seq_length (shapes.with_effective_length).
    Returns the reports ([] when no budget is known)."""
    budget = memory_budget(cfg, mesh.devices.flat[0])
    if budget is None:
        log.info(
            "preflight: %s devices report no memory limit; skipped (set --memory_budget_gib to check)",
            mesh.devices.flat[0].platform,
        )
        return []
    reports = compile_shapes(model, cfg, mesh, preflight_shapes(cfg, data_shards(mesh), kinds, ladder), budget, state)
    for r in reports:
        log.info(
            "preflight: %s: %.2f GiB of %.2f GiB per device (compiled in %.0f s)",
            r.shape.label,
            r.total_bytes / GIB,
            budget / GIB,
            r.compile_s,
        )
    check_reports(reports, cfg)
    return reports
