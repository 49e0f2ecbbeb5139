"""A restart with and without JAX's persistent compilation cache (train_main.py --compilation_cache).

A preempted run restarts with the same command; without the cache it compiles every program again
(the train step per batch shape, the evaluation's encoders). Per mode: a fresh workdir, a first run
stopped at step --stop (as a preemption would), then the timed restart to --steps. Printed: the
restart's wall time in each mode and their ratio (off / on), measured in the same run.

  python bench/bench_compile_cache.py --data_dir=out/data       # after beam_main.py (demo.sh runs it)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(data_dir: str, workdir: str, cache: str, steps: int, stop: int | None, extra: list[str]) -> float:
    cmd = [
        sys.executable,
        os.path.join(ROOT, "train_main.py"),
        "--config=demo",
        f"--data_dir={data_dir}",
        f"--workdir={workdir}",
        f"--train_steps={steps}",
        f"--compilation_cache={cache}",
        "--no_progress",
        "--eval_max_examples=64",
        "--eval_every=0",
        "--checkpoint_every=1000",
        *extra,
    ]
    if stop:
        cmd.append(f"--stop_at_step={stop}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", default=os.path.join(ROOT, "out", "data"))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--stop", type=int, default=4)
    args, extra = ap.parse_known_args()
    times = {}
    for mode in ("off", "workdir"):
        workdir = tempfile.mkdtemp(prefix=f"cache-{mode}-")
        try:
            first = _train(args.data_dir, workdir, mode, args.steps, args.stop, extra)
            restart = _train(args.data_dir, workdir, mode, args.steps, None, extra)
            entries = 0
            cache_dir = os.path.join(workdir, "compilation_cache")
            if os.path.isdir(cache_dir):
                entries = len(os.listdir(cache_dir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        times[mode] = restart
        print(
            f"cache {mode:>7}: first run (to step {args.stop}) {first:6.1f} s, restart (to step {args.steps}) "
            f"{restart:6.1f} s; cache entries {entries}",
            flush=True,
        )
    print(f"restart without cache / with cache: {times['off'] / times['workdir']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
