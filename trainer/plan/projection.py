"""The compile-only planner: will a run fit its TPU slice, how many programs will it compile, how long
will it take? Answered by XLA's TPU compiler on any machine, before renting a core.

  python -m trainer.plan.planner --topology=v3-8 --config=reference [any train_main.py flag]   # or: set-plan
  (the command line: trainer/plan/planner.py; this module is its library)

For the batch shapes the input pipeline can emit under this configuration (trainer/data/shapes.py:
the worst case, every text at max_seq_length; where the memory plan chunks that one, the largest shape
that runs unchunked; and the most frequent case, of pair and triplet batches; max_seq_length capped at
the --manifest's cut, as training caps it) it compiles the real train step (trainer/train/train_step.py,
with the memory plan of the flags; trainer/train/aot.py) for the slice's devices and prints, per shape and per device:
arguments, temporaries and total GiB against the compiler's usable HBM, fits or not, compile seconds,
the compiler's FLOPs and roofline time.
Then it projects the run (`project`): the shape mix of a simulated schedule, each program's executed
FLOPs (the compiler's, remat included, for every compiled program: --shapes=mix compiles them all;
else model FLOPs plus what the plan recomputes) at an assumed share of the slice's peak
(--efficiency; the "projected MFU" follows from that assumption, it is not measured), as pairs/s and
days for `train_steps`, split into useful FLOPs, padding by cause and recomputation; and the same run
done the 2021 ways (every text padded to max_seq_length; each column to its longest text rounded up
to 64). Figures are the compiler's and a projection, not measured TPU time. Exit status 0 only when
every compiled shape fits.

Model configurations come from a config.json: a --model path that exists is read; roberta-large's and
roberta-base's ship in trainer/plan/model_configs/ for those hub names, the demo model's with its package;
other names need the model directory (or the hub).
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from trainer.config import TrainConfig
from trainer.plan import flops as flops_lib
from trainer.plan import tpu
from trainer.plan.length_profiles import corpus_profiles
from trainer.train.aot import GIB, ShapeReport, compile_shapes

MODEL_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_configs")


# ------------------------------------------------------------------------------------- the model


def read_model_config(model: str) -> dict:
    """The Hugging Face config.json of `model`: a config file or a directory's (a path that exists wins), a
    shipped one for a hub name by its last part (roberta-large, roberta-base: offline), else the demo
    model's, a gs:// directory's or (network) the hub's."""
    from pipeline.model_source import is_hub_name
    from trainer.model.hf_loading import read_hf_config, resolve_model_dir

    if os.path.isfile(model):
        with open(model, encoding="utf-8") as f:
            return json.load(f)
    shipped = os.path.join(MODEL_CONFIGS, model.rstrip("/").split("/")[-1] + ".json")
    # Only a name that can be nothing but a hub id: /ckpts/roberta-large is that checkpoint, not roberta-large.
    if is_hub_name(model) and not os.path.exists(model) and os.path.isfile(shipped):
        with open(shipped, encoding="utf-8") as f:
            return json.load(f)
    return read_hf_config(resolve_model_dir(model))


def build_model(cfg: TrainConfig, hf_config: dict):
    from trainer.model.modeling import EncoderConfig, SentenceEncoder
    from trainer.train.train_step import compute_dtype

    enc = EncoderConfig.from_hf_dict(hf_config)
    return enc, SentenceEncoder(enc, dtype=compute_dtype(cfg.dtype), remat=cfg.remat)


# ------------------------------------------------------------------------------------- projection


def shape_step_flops(
    enc: Any, shape: Any, n_shards: int, cfg: TrainConfig, remat: str | None = None
) -> tuple[float, float]:
    """(model, executed) FLOPs of one step of `shape` over all devices, under `remat` (default cfg.remat;
    "auto" needs the program's own mode: memory.RematPlan.for_shape)."""
    columns = 3 if shape.kind == "triplet" else 2
    rows = shape.rows * n_shards * (1 if shape.packed else columns)
    remat = remat or cfg.remat
    if remat == "auto":
        raise ValueError("remat=auto: pass the program's own mode (memory.RematPlan.for_shape)")
    return flops_lib.step_flops(enc, rows, shape.length, chunked=shape.chunks > 1, remat=remat)


PARTS = ("useful", "gaps", "attention across texts", "uneven cores", "ladder", "recompute")


def project(
    sim: Any,
    enc: Any,
    cfg: TrainConfig,
    n_shards: int,
    peak_tflops: float,
    efficiency: float,
    compiled: dict | None = None,
    remat_of: Any = None,
) -> dict:
    """Days and pairs/s of cfg.train_steps steps with the simulated shape mix, on executed FLOPs at
    `efficiency` of the slice's peak, split into what they are spent on.

    Executed FLOPs per program: `compiled` (shape -> the compiler's FLOPs per device, remat and all)
    where given, else the analytic count (model FLOPs plus the plan's recomputation:
    flops.step_flops); chunked programs always take the analytic one, as XLA's cost analysis counts a
    loop body once. The parts (FLOPs over the simulated steps; they sum to the executed FLOPs):
    useful: model FLOPs of the real tokens (each text's attention over itself alone); gaps: the dense
    FLOPs of the free ends of rows (padded batches: of all their padding); attention across texts:
    the attention a packed row computes between its texts (masked out); uneven cores, ladder: the
    rows a device pads to the fullest device's count and those the ladder adds (Simulation.padding_parts);
    recompute: executed - model FLOPs of all slots (XLA's or the plan's rematerialisation, gradient
    caching's second forward, and the compiler's own count of norms, softmax, loss, optimizer).
    Beside them: the 2021 ways of padding (`Simulation.baselines`, analytic model FLOPs at the same
    efficiency): "seed" every text at max_seq_length, "flax2021" each column at its longest text
    rounded up to 64.
    `remat_of(shape)`: each program's remat mode (default cfg.remat). "over_3pct": the programs whose
    executed FLOPs exceed their model FLOPs by more than 3%, with the excess in days."""
    compiled = compiled or {}
    remat_of = remat_of or (lambda shape: cfg.remat)
    peak = peak_tflops * 1e12 * n_shards
    dense_tok, attn_sq = (3.0 * x for x in flops_lib.forward_flops(enc, 1, 1))  # per token, per length^2

    def row(length: int) -> float:  # model FLOPs of one row (padded: one text) of `length` slots
        return dense_tok * length + attn_sq * length * length

    parts = dict.fromkeys(PARTS, 0.0)
    executed = model = compiled_steps = 0.0
    over = []
    for shape, count in sim.counts.items():
        steps, real, real_sq, used, full = sim.parts[shape]
        columns = 3 if shape.kind == "triplet" else 2
        slot_rows = count * n_shards * shape.rows * (1 if shape.packed else columns)
        m = slot_rows * row(shape.length)
        if shape in compiled and shape.chunks == 1:
            e = compiled[shape] * n_shards * count
            compiled_steps += count
        else:
            e = shape_step_flops(enc, shape, n_shards, cfg, remat_of(shape))[1] * count
        executed, model = executed + e, model + m
        if e > 1.03 * m:
            over.append((shape, e, m, shape in compiled and shape.chunks == 1))
        parts["useful"] += dense_tok * real + attn_sq * real_sq
        if not shape.packed:
            parts["gaps"] += dense_tok * (slot_rows * shape.length - real)
            parts["attention across texts"] += attn_sq * (slot_rows * shape.length**2 - real_sq)
        else:
            parts["gaps"] += dense_tok * (used * shape.length - real)
            parts["attention across texts"] += attn_sq * (used * shape.length**2 - real_sq)
            parts["uneven cores"] += (full - used) * row(shape.length)
            parts["ladder"] += (slot_rows - full) * row(shape.length)
        parts["recompute"] += e - m

    def days(flops: float) -> float:
        return flops / sim.steps / (efficiency * peak) * cfg.train_steps / 86400

    baselines = {
        name: days(sum(n * row(length) for length, n in texts.items())) for name, texts in sim.baselines.items()
    }
    step_s = executed / sim.steps / (efficiency * peak)
    return {
        "efficiency": efficiency,
        "train_steps": cfg.train_steps,
        "model_tflops_per_step": model / sim.steps / 1e12,
        "executed_tflops_per_step": executed / sim.steps / 1e12,
        "step_s": step_s,
        "pairs_per_s": cfg.batch_size / step_s,
        "days": days(executed),
        "useful_share": parts["useful"] / executed,
        "slots_per_real_token": sim.padding,
        "parts_days": {k: days(v) for k, v in parts.items()},
        # Not a measurement: the assumed efficiency times the useful share.
        "projected_mfu": efficiency * parts["useful"] / executed,
        "compiled_step_share": compiled_steps / sim.steps,
        "seed_way_days": baselines["seed"],
        "flax2021_days": baselines["flax2021"],
        "compute_saved": baselines["seed"] / days(executed),
        "programs": sim.programs,
        "padding": sim.padding,
        "over_3pct": [
            {
                "shape": shape.label,
                "remat": remat_of(shape),
                "excess": e / m - 1,
                "days": days(e - m),
                "step_share": sim.counts[shape] / sim.steps,
                "counted_by": "compiler" if by_compiler else "analytic",
            }
            for shape, e, m, by_compiler in sorted(over, key=lambda x: -(x[1] - x[2]))
        ],
    }


def projection_lines(proj: dict, cfg: TrainConfig, sim: Any) -> list[str]:
    """The projection as the planner prints it."""
    eff = proj["efficiency"] * 100
    parts = ", ".join(f"{k} {v:.2f}" for k, v in proj["parts_days"].items())
    return [
        f"programs: {proj['programs']} distinct batch shapes over {sim.steps} simulated steps; "
        f"token slots per real token {proj['slots_per_real_token']:.3f}",
        f"projection at an assumed {eff:g}% of peak on the executed FLOPs ({proj['compiled_step_share']:.1%} of "
        f"steps counted by the compiler, the rest analytic): {proj['executed_tflops_per_step']:.1f} TFLOP/step, "
        f"{proj['step_s'] * 1e3:.0f} ms/step, {proj['pairs_per_s']:,.0f} pairs/s, {proj['days']:.2f} days for "
        f"{cfg.train_steps:,} steps; useful share (model FLOPs of the real tokens / executed) "
        f"{proj['useful_share']:.1%}, projected MFU {proj['projected_mfu']:.1%} (from that assumption)",
        f"  the days by what they buy: {parts}",
        f"the 2021 ways, model FLOPs at {eff:g}%: every text padded to {cfg.max_seq_length} (the seed's way) "
        f"{proj['seed_way_days']:.2f} days; each column padded to its longest text rounded up to 64 (the 2021 "
        f"Flax script) {proj['flax2021_days']:.2f} days; compute saved vs the seed's way {proj['compute_saved']:.2f}x",
    ] + [
        f"  over 3% above model FLOPs: {o['shape']} (remat {o['remat']}, {o['step_share']:.1%} of steps): "
        f"{o['excess']:+.1%} ({o['counted_by']}), {o['days']:.2f} days"
        for o in proj["over_3pct"]
    ]


# ------------------------------------------------------------------------------------- CLI


def _gib(n: float) -> str:
    return f"{n / GIB:5.2f}"


def format_report(r: ShapeReport, s: tpu.Slice | None, model_flops: float | None = None) -> str:
    """One program's line; `model_flops`: its model FLOPs per device, printed beside the compiler's."""
    verdict = "fits" if r.fits else "DOES NOT FIT"
    line = (
        f"{r.case:>9} {r.shape.label:<28} remat {r.remat:<4}  args {_gib(r.argument_bytes)}  "
        f"temps {_gib(r.temp_bytes)}  total {_gib(r.total_bytes)} / {_gib(r.usable_bytes)} GiB  {verdict:<12}  "
        f"compile {r.compile_s:4.0f} s"
    )
    if r.flops is not None:
        line += f"  {r.flops / 1e12:6.2f} TFLOP/device"
        if model_flops:
            line += f" (model {model_flops / 1e12:.2f}, {r.flops / model_flops - 1:+.1%})"
        if s is not None:
            line += (
                f"  roofline {1e3 * flops_lib.roofline_s(r.flops, r.bytes_accessed, s.peak_tflops, s.hbm_gbps):6.1f} ms"
            )
        if r.shape.chunks > 1:  # XLA's cost analysis counts a while loop's body once
            line += " (one chunk of the scans)"
    return line


def remat_plan_of(model: Any, cfg: TrainConfig, mesh: Any, usable: int) -> Any:
    """The run's memory.RematPlan on `mesh` against `usable` bytes per device (as compile_shapes makes it)."""
    from trainer.train.aot import abstract_state, jax_shardings
    from trainer.train.memory import remat_plan

    state = abstract_state(model, cfg, mesh)
    return remat_plan(cfg, model.config, state, jax_shardings(state), usable)


def slice_mesh(slice_: tpu.Slice) -> Any:
    """A `data` mesh over the slice's devices as the compiler sees them (hosts in order), for compiling."""
    tpu.prepare_offline_compile(slice_.accelerator_type)
    import numpy as np
    from jax.sharding import Mesh

    from trainer.mesh import DATA_AXIS

    devices = tpu.topology_devices(slice_)
    devices.sort(key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (DATA_AXIS,))


def plan(
    cfg: TrainConfig,
    slice_: tpu.Slice,
    shapes: Sequence[str] = ("worst", "typical"),
    sim_steps: int = 10_000,
    profiles: list | None = None,
    efficiency: float = 0.4,
    jobs: int = 1,
    memory_budget_gib: float = 0.0,
    log=print,
    cache: str | None = None,
    compile_missing: bool = True,
) -> dict:
    """Compile and project; returns the JSON report (with "fits"). `memory_budget_gib` > 0 lowers the
    budget below the compiler's usable HBM (to leave headroom). `cache`, `compile_missing`: as
    compile_shapes takes them (programs left out are projected analytically)."""
    from trainer.data.shapes import memory_check_shapes
    from trainer.plan.program_count import simulate, typical_shapes

    mesh = slice_mesh(slice_)
    n = mesh.devices.size
    usable = tpu.usable_hbm_bytes(mesh.devices.flat[0])
    enc, model = build_model(cfg, read_model_config(cfg.model))
    log(
        f"{slice_.name}: {n} devices on {slice_.hosts} host(s), {usable / GIB:.2f} GiB usable HBM per device "
        f"(compiler), {slice_.peak_tflops:g} TFLOP/s bf16 peak per device; model {cfg.model} "
        f"({enc.num_hidden_layers} x {enc.hidden_size}); global batch {cfg.batch_size}; memory plan: "
        f"chunk_tokens={cfg.chunk_tokens} grad_cache_chunk={cfg.grad_cache_chunk} "
        f"shard_optimizer={cfg.shard_optimizer} remat={cfg.remat} adam_mu_dtype={cfg.adam_mu_dtype}"
    )
    sim = simulate(
        profiles if profiles is not None else corpus_profiles(None, None, cfg.model), cfg, n, steps=sim_steps
    )
    if sim.ladder.rungs:
        log(f"packed row counts fitted to the lengths (--pack_programs={cfg.pack_programs}): {sim.ladder.describe()}")
    todo = memory_check_shapes(cfg, n, sim.ladder) if "worst" in shapes else []
    if "typical" in shapes:
        todo += [("typical", s) for s in typical_shapes(sim) if s not in {t for _, t in todo}]
    if "mix" in shapes:  # every program the run compiles, the most FLOPs first (where XLA may rematerialise)
        todo += [
            ("mix", s)
            for s in sorted(sim.counts, key=lambda s: (-s.tokens_per_device, s))
            if s not in {t for _, t in todo}
        ]
    if memory_budget_gib:
        usable = min(usable, int(memory_budget_gib * GIB))
    reports = compile_shapes(
        model,
        cfg,
        mesh,
        todo,
        usable,
        jobs=jobs,
        cache=cache,
        compile_missing=compile_missing,
        on_report=lambda r: log("  compiled: " + format_report(r, None).strip()),
    )
    left_out = [s.label for _, s in todo if s not in {r.shape for r in reports}]
    if left_out:
        log(f"not compiled (not in the cache): {', '.join(left_out)}")
    for r in reports:
        log(format_report(r, slice_, shape_step_flops(enc, r.shape, n, cfg, r.remat)[0] / n))
    remat = remat_plan_of(model, cfg, mesh, usable)
    remat_of = remat.for_shape
    if cfg.remat == "auto":
        chosen = ", ".join(
            f"{s.label}: {remat_of(s)} {remat.shape_estimate(s) / GIB:.2f}"
            for s in sorted({*sim.counts, *(t for _, t in todo)}, key=lambda s: -s.tokens_per_device)
        )
        log(f"remat per program (--remat=auto; estimated GiB per device, of {usable / GIB:.2f}): {chosen}")
    proj = project(
        sim,
        enc,
        cfg,
        n,
        slice_.peak_tflops,
        efficiency,
        {r.shape: r.flops for r in reports if r.flops is not None and r.error is None},
        remat_of,
    )
    for line in projection_lines(proj, cfg, sim):
        log(line)
    log("(compiler figures and a projection, not measured TPU time)")
    return {
        "topology": slice_.name,
        "devices": n,
        "usable_bytes": usable,
        "model": cfg.model,
        "config": cfg.to_json(),
        "shapes": [r.to_json() for r in reports],
        "projection": proj,
        "worst_total_bytes": max((r.total_bytes for r in reports), default=None),
        "row_ladder": {f"{c}x{n}": list(r) for (c, n), r in sim.ladder.rungs.items()},
        "fits": all(r.fits for r in reports),
    }
