"""The job's pairs per CPU-second on a Parquet corpus against the same pairs as gzip'd JSON lines, same run.

    python bench/bench_parquet.py [--pairs=100000] [--repeats=2]

Generates the pairs (bench_pipeline.make_pairs, seeded), writes them as pairs.jsonl.gz and as a Parquet
file of two string columns (row groups of 10,000; read through Beam's Parquet IO and a field mapping),
and runs the whole job (`pipeline.job.run`, in this process, local runner defaults, the demo tokenizer)
on each, alternating, `--repeats` times. CPU seconds are this process's (time.process_time: every
thread, the tokenizer's included). Prints pairs per CPU-second of each (best run) and the ratio
Parquet / JSON lines.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_pipeline import make_pairs  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import job

    pairs = make_pairs(args.pairs)
    with tempfile.TemporaryDirectory() as tmp:
        with gzip.open(os.path.join(tmp, "pairs.jsonl.gz"), "wt") as f:
            f.writelines(json.dumps(p) + "\n" for p in pairs)
        pq.write_table(
            pa.table({"anchor": [a for a, _ in pairs], "positive": [b for _, b in pairs]}),
            os.path.join(tmp, "pairs.parquet"),
            row_group_size=10_000,
        )
        configs = {
            "json_lines": {"name": "c", "files": ["pairs.jsonl.gz"], "record_format": "pair", "weight": 1},
            "parquet": {
                "name": "c",
                "files": ["pairs.parquet"],
                "record_format": "pair",
                "weight": 1,
                "fields": {"anchor": "anchor", "positive": "positive"},
            },
        }
        best = {}
        for r in range(args.repeats):
            for kind, corpus in configs.items():
                cfg = os.path.join(tmp, f"{kind}.json")
                with open(cfg, "w") as f:
                    json.dump({"corpora": [corpus]}, f)
                t0, w0 = time.process_time(), time.perf_counter()
                rc = job.run(
                    [f"--data_config={cfg}", f"--input_root={tmp}", f"--output_dir={tmp}/out-{kind}", "--overwrite"]
                )
                cpu, wall = time.process_time() - t0, time.perf_counter() - w0
                assert rc == 0
                best[kind] = min(best.get(kind, (1e9, 0)), (cpu, wall))
                print(f"run {r} {kind:10s} cpu {cpu:6.1f} s  wall {wall:6.1f} s", flush=True)
    for kind, (cpu, wall) in best.items():
        print(f"{kind:10s} {args.pairs / cpu:8.0f} pairs per CPU-second ({args.pairs / wall:7.0f} pairs/s wall)")
    ratio = best["json_lines"][0] / best["parquet"][0]
    print(f"Parquet / JSON lines, pairs per CPU-second: {ratio:.2f}x")


if __name__ == "__main__":
    main()
