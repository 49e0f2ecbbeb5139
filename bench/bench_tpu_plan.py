"""TPU plans by the compiler: topology x model x memory plan -> per-core GiB, fits, compile seconds,
roofline step time and projected days, beside the same run done the seed's way (every text padded to
max_seq_length, no packing) over the same length profiles; the ratio is the compute packing saves.

Compiler figures (libtpu on this CPU machine, `trainer/plan/projection.py`) and a projection at a stated
share of peak on the executed FLOPs (the compiler's for each compiled program: `--shapes=worst,mix`
compiles them all), with the useful share, slots per real token and both 2021 baselines; not measured
TPU time. roberta-large takes 3-6 minutes per shape on 2 cores; the default grid takes about an hour.

  python bench/bench_tpu_plan.py                                   # the grid of BENCHMARKS.md
  python bench/bench_tpu_plan.py --rows=v3-8:roberta-large:reference --shapes=worst,typical
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer.config import DEMO_MODEL, get_preset  # noqa: E402
from trainer.plan import (
    projection,  # noqa: E402
    tpu,  # noqa: E402
)
from trainer.plan.flops import roofline_s  # noqa: E402
from trainer.train import aot  # noqa: E402

MODELS = {"minilm": DEMO_MODEL, "roberta-base": "FacebookAI/roberta-base", "roberta-large": "FacebookAI/roberta-large"}
# Memory plans on top of the reference preset (bfloat16, batch 1024, 128 tokens, 540k steps).
PLANS = {
    "reference": {},  # ZeRO-1 + chunks over 32,768 tokens per core + one row length, 12 fitted row counts
    "geometric": {"pack_programs": 0, "pack_even_cores": False},  # before issue 28: 4 row steps, per-core slices
    "zero1-only": {"chunk_tokens": 0},
    "no-plan": {
        "chunk_tokens": 0,
        "shard_optimizer": False,
        "pack_min_row_length": 64,
        "pack_row_steps": 16,
        "pack_programs": 0,
    },
}
GRID = [
    "v3-8:minilm:reference",
    "v3-8:roberta-base:reference",
    "v3-8:roberta-large:reference",
    "v3-8:roberta-large:zero1-only",
    "v3-8:roberta-large:no-plan",
    "v4-8:roberta-large:reference",
    "v5litepod-8:roberta-large:reference",
    "v3-32:roberta-large:reference",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(GRID), help="topology:model:plan,...")
    ap.add_argument(
        "--shapes",
        default="worst",
        help="worst, typical and/or mix (every program: the projection on the compiler's FLOPs of each)",
    )
    ap.add_argument("--sim_steps", type=int, default=10_000)
    ap.add_argument("--efficiency", type=float, default=0.4, help="assumed share of peak for the projected days")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default=None, help="append one JSON line per row here")
    ap.add_argument("--cache", default=None, help="compiled programs' figures to reuse and add to (JSON lines)")
    args = ap.parse_args()
    print(
        "| topology | model | plan | shape | args GiB | temps GiB | total GiB / usable | fits | compile s "
        f"| roofline ms | days @{args.efficiency * 100:g}% | useful share | slots / real token | programs "
        "| seed way days | 2021 Flax days | saved |"
    )
    print("|---|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in args.rows.split(","):
        topology, model, plan_name = row.split(":")
        cfg = get_preset("reference").replace(model=MODELS[model], **PLANS[plan_name])
        s = tpu.get_slice(topology)
        t0 = time.perf_counter()
        report = projection.plan(
            cfg,
            s,
            [x for x in args.shapes.split(",") if x],
            args.sim_steps,
            efficiency=args.efficiency,
            jobs=args.jobs,
            cache=args.cache,
            log=lambda line: print("  " + line, file=sys.stderr, flush=True),
        )
        p = report["projection"]
        for r in report["shapes"]:
            roof = (
                ""
                if r["flops"] is None
                else f"{1e3 * roofline_s(r['flops'], r['bytes_accessed'], s.peak_tflops, s.hbm_gbps):.0f}"
            )
            roof += "*" if "chunks" in r["shape"] else ""  # the compiler counts a loop body once
            print(
                f"| {topology} | {model} | {plan_name} | {r['case']} {r['shape']} | "
                f"{r['argument_bytes'] / aot.GIB:.2f} | {r['temp_bytes'] / aot.GIB:.2f} | "
                f"{r['total_bytes'] / aot.GIB:.2f} / {r['usable_bytes'] / aot.GIB:.2f} | "
                f"{'yes' if r['fits'] else '**no**'} | {r['compile_s']:.0f} | {roof} | {p['days']:.2f} | "
                f"{p['useful_share']:.1%} | {p['slots_per_real_token']:.3f} | {p['programs']} | "
                f"{p['seed_way_days']:.2f} | {p['flax2021_days']:.2f} | {p['compute_saved']:.2f}x |",
                flush=True,
            )
        print("  days by part: " + ", ".join(f"{k} {v:.2f}" for k, v in p["parts_days"].items()), file=sys.stderr)
        if args.json:
            with open(args.json, "a", encoding="utf-8") as f:
                f.write(json.dumps({"row": row, "seconds": time.perf_counter() - t0, **report}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
