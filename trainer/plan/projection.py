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
Then it projects the run: the shape mix of a simulated schedule, each step's executed FLOPs (model
FLOPs plus what the plan recomputes) at an assumed share of the slice's peak (--efficiency; the
"projected MFU" follows from that assumption, it is not measured), as pairs/s and days for
`train_steps`; and the same run done the seed's way (every text padded to max_seq_length, no
packing). Figures are the compiler's and a projection, not measured TPU time. Exit status 0 only
when every compiled shape fits.

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

def shape_step_flops(enc: Any, shape: Any, n_shards: int, cfg: TrainConfig) -> tuple[float, float]:
    """(model, executed) FLOPs of one step of `shape` over all devices."""
    columns = 3 if shape.kind == "triplet" else 2
    rows = shape.rows * n_shards * (1 if shape.packed else columns)
    return flops_lib.step_flops(enc, rows, shape.length, chunked=shape.chunks > 1, remat=cfg.remat)


def project(sim: Any, enc: Any, cfg: TrainConfig, n_shards: int, peak_tflops: float, efficiency: float) -> dict:
    """Days and pairs/s of cfg.train_steps steps with the simulated shape mix, executed FLOPs at
    `efficiency` of the slice's peak; the seed's way (every text padded to max_seq_length) beside it."""
    from trainer.plan.flops import step_flops

    peak = peak_tflops * 1e12 * n_shards
    model = executed = seed = 0.0
    for shape, count in sim.counts.items():
        m, e = shape_step_flops(enc, shape, n_shards, cfg)
        model += m * count
        executed += e * count
        columns = 3 if shape.kind == "triplet" else 2
        seed += step_flops(enc, columns * cfg.batch_size, cfg.max_seq_length)[0] * count
    per_step = {k: v / sim.steps for k, v in (("model", model), ("executed", executed), ("seed", seed))}
    step_s = per_step["executed"] / (efficiency * peak)
    seed_s = per_step["seed"] / (efficiency * peak)
    return {
        "efficiency": efficiency, "train_steps": cfg.train_steps,
        "model_tflops_per_step": per_step["model"] / 1e12, "executed_tflops_per_step": per_step["executed"] / 1e12,
        "step_s": step_s, "pairs_per_s": cfg.batch_size / step_s, "days": step_s * cfg.train_steps / 86400,
        # Not a measurement: the assumed efficiency scaled by model / executed FLOPs.
        "projected_mfu": efficiency * per_step["model"] / per_step["executed"],
        "seed_way_step_s": seed_s, "seed_way_days": seed_s * cfg.train_steps / 86400,
        "compute_saved": per_step["seed"] / per_step["executed"],
        "programs": sim.programs, "padding": sim.padding,
    }


# ------------------------------------------------------------------------------------- CLI

def _gib(n: float) -> str:
    return f"{n / GIB:5.2f}"


def format_report(r: ShapeReport, s: tpu.Slice | None) -> str:
    verdict = "fits" if r.fits else "DOES NOT FIT"
    line = (f"{r.case:>9} {r.shape.label:<28} args {_gib(r.argument_bytes)}  temps {_gib(r.temp_bytes)}  "
            f"total {_gib(r.total_bytes)} / {_gib(r.usable_bytes)} GiB  {verdict:<12}  compile {r.compile_s:4.0f} s")
    if r.flops is not None:
        line += f"  {r.flops / 1e12:6.2f} TFLOP/device"
        if s is not None:
            line += f"  roofline {1e3 * flops_lib.roofline_s(r.flops, r.bytes_accessed, s.peak_tflops, s.hbm_gbps):6.1f} ms"
        if r.shape.chunks > 1:  # XLA's cost analysis counts a while loop's body once
            line += " (one chunk of the scans)"
    return line


def slice_mesh(slice_: tpu.Slice) -> Any:
    """A `data` mesh over the slice's devices as the compiler sees them (hosts in order), for compiling."""
    tpu.prepare_offline_compile(slice_.accelerator_type)
    from jax.sharding import Mesh
    import numpy as np

    from trainer.mesh import DATA_AXIS

    devices = tpu.topology_devices(slice_)
    devices.sort(key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (DATA_AXIS,))


def plan(cfg: TrainConfig, slice_: tpu.Slice, shapes: Sequence[str] = ("worst", "typical"), sim_steps: int = 10_000,
         profiles: list | None = None, efficiency: float = 0.4, jobs: int = 1, memory_budget_gib: float = 0.0,
         log=print) -> dict:
    """Compile and project; returns the JSON report (with "fits"). `memory_budget_gib` > 0 lowers the
    budget below the compiler's usable HBM (to leave headroom)."""
    from trainer.data.shapes import memory_check_shapes
    from trainer.plan.program_count import simulate, typical_shapes

    mesh = slice_mesh(slice_)
    n = mesh.devices.size
    usable = tpu.usable_hbm_bytes(mesh.devices.flat[0])
    enc, model = build_model(cfg, read_model_config(cfg.model))
    log(f"{slice_.name}: {n} devices on {slice_.hosts} host(s), {usable / GIB:.2f} GiB usable HBM per device "
        f"(compiler), {slice_.peak_tflops:g} TFLOP/s bf16 peak per device; model {cfg.model} "
        f"({enc.num_hidden_layers} x {enc.hidden_size}); global batch {cfg.batch_size}; memory plan: "
        f"chunk_tokens={cfg.chunk_tokens} grad_cache_chunk={cfg.grad_cache_chunk} "
        f"shard_optimizer={cfg.shard_optimizer} remat={cfg.remat} adam_mu_dtype={cfg.adam_mu_dtype}")
    sim = simulate(profiles if profiles is not None else corpus_profiles(None, None, cfg.model), cfg, n,
                   steps=sim_steps)
    todo = memory_check_shapes(cfg, n) if "worst" in shapes else []
    if "typical" in shapes:
        todo += [("typical", s) for s in typical_shapes(sim) if s not in {t for _, t in todo}]
    if memory_budget_gib:
        usable = min(usable, int(memory_budget_gib * GIB))
    reports = compile_shapes(model, cfg, mesh, todo, usable, jobs=jobs)
    for r in reports:
        log(format_report(r, slice_))
    proj = project(sim, enc, cfg, n, slice_.peak_tflops, efficiency)
    log(f"programs: {proj['programs']} distinct batch shapes over {sim.steps} simulated steps; "
        f"token slots / real tokens {proj['padding']:.3f}")
    log(f"projection at an assumed {efficiency * 100:g}% of peak on the executed FLOPs (projected MFU "
        f"{proj['projected_mfu']:.1%}, from that assumption): "
        f"{proj['executed_tflops_per_step']:.1f} TFLOP/step, {proj['step_s'] * 1e3:.0f} ms/step, "
        f"{proj['pairs_per_s']:,.0f} pairs/s, {proj['days']:.2f} days for {cfg.train_steps:,} steps")
    log(f"the seed's way (every text padded to {cfg.max_seq_length}, no packing): "
        f"{proj['seed_way_step_s'] * 1e3:.0f} ms/step, {proj['seed_way_days']:.2f} days; "
        f"compute saved {proj['compute_saved']:.2f}x")
    log("(compiler figures and a projection, not measured TPU time)")
    return {"topology": slice_.name, "devices": n, "usable_bytes": usable, "model": cfg.model,
            "config": cfg.to_json(), "shapes": [r.to_json() for r in reports], "projection": proj,
            "fits": all(r.fits for r in reports)}
