"""Input pipeline throughput: training pairs per second out of trainer.data.batches.BatchStream.

Generates (once, cached) ~100k synthetic records in the Beam job's layout with realistic text
lengths (log-normal token counts, median ~20, capped at 128, as in the pair corpora), then measures
in one run:
  reference: the raw read rate of the same files (tf.data TFRecordDataset, gunzip only, records/s)
  pipeline:  pairs/s out of BatchStream at per-host batch 64 and 1024 (shuffle buffer 10,000,
             in-batch de-duplication on), after a warm-up batch
and prints each rate, its ratio to the 20,000 pairs/s target and to the raw read rate.

    .venv/bin/python bench/bench_input.py [--records 100000] [--data_dir /tmp/bench_input_data]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TARGET = 20_000  # pairs/s (issue 4)

# name, shape, share of records, weight, files
LAYOUT = [
    ("b_pairs", "pair", 0.6, 5.0, 4),
    ("b_triplets", "triplet", 0.2, 2.0, 2),
    ("b_sets", "set", 0.1, 1.0, 1),
    ("b_queries", "query_with_negatives", 0.1, 1.0, 1),
]


def _lengths(rng, n):
    return np.clip(np.round(rng.lognormal(np.log(20), 0.6, size=n)), 4, 128).astype(int)


def generate(out_dir: str, records: int, seed: int = 0) -> None:
    from pipeline.tensorflow_import import import_tensorflow

    tf = import_tensorflow()

    from pipeline import record_schema as rs

    done = os.path.join(out_dir, "manifest.json")
    if os.path.exists(done):
        with open(done) as f:
            if json.load(f).get("bench_records") == records:
                return
    rng = np.random.default_rng(seed)
    entries = []
    counter = 0
    for name, shape, share, weight, n_files in LAYOUT:
        n = int(records * share)
        os.makedirs(os.path.join(out_dir, name), exist_ok=True)
        rels = [f"{name}/train-{i:05d}-of-{n_files:05d}{rs.FILE_SUFFIX}" for i in range(n_files)]
        writers = [tf.io.TFRecordWriter(os.path.join(out_dir, r), options=rs.COMPRESSION) for r in rels]
        for j in range(n):
            if shape == "pair":
                roles = [rs.ROLE_ANCHOR, rs.ROLE_POSITIVE]
            elif shape == "triplet":
                roles = [rs.ROLE_ANCHOR, rs.ROLE_POSITIVE, rs.ROLE_NEGATIVE]
            elif shape == "set":
                roles = [rs.ROLE_MEMBER] * int(rng.integers(2, 6))
            else:
                roles = (
                    [rs.ROLE_ANCHOR]
                    + [rs.ROLE_POSITIVE] * int(rng.integers(1, 3))
                    + [rs.ROLE_NEGATIVE] * int(rng.integers(1, 4))
                )
            ids = []
            for length in _lengths(rng, len(roles)):
                body = rng.integers(1000, 30000, size=length - 2).tolist()
                ids.append([101] + body + [102])
            fps = list(range(counter, counter + len(roles)))  # all texts distinct
            counter += len(roles)
            writers[j % n_files].write(rs.encode_record(ids, roles, fps))
        for w in writers:
            w.close()
        entries.append(
            {
                "name": name,
                "record_format": shape,
                "weight": weight,
                "symmetric": shape == "pair",
                "train_examples": n,
                "validation_examples": 0,
                "train_files": rels,
                "validation_files": [],
            }
        )
    manifest = {
        "schema_version": rs.SCHEMA_VERSION,
        "created": "bench",
        "max_seq_length": 128,
        "compression": rs.COMPRESSION,
        "tokenizer": {"name": "synthetic", "vocab_size": 30522, "pad_token_id": 0},
        "corpora": entries,
        "totals": {},
        "bench_records": records,
    }
    with open(done, "w") as f:
        json.dump(manifest, f)


def _cpu() -> float:
    """CPU seconds of this process, all threads: a load-robust cost measure on a shared machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def raw_read_rate(data_dir: str) -> tuple[float, float, int]:
    from pipeline.tensorflow_import import import_tensorflow

    tf = import_tensorflow()

    with open(os.path.join(data_dir, "manifest.json")) as f:
        manifest = json.load(f)
    files = [os.path.join(data_dir, r) for c in manifest["corpora"] for r in c["train_files"]]
    t, c = time.perf_counter(), _cpu()
    n = 0
    for _ in tf.data.TFRecordDataset(files, compression_type="GZIP", buffer_size=1 << 20).batch(1024).prefetch(2):
        n += int(_.shape[0])
    return n / (time.perf_counter() - t), n / (_cpu() - c), n


def pipeline_rate(data_dir: str, batch: int, pairs: int) -> tuple[float, float, dict]:
    from trainer.config import TrainConfig
    from trainer.data.batches import BatchStream

    cfg = TrainConfig(batch_size=batch, shuffle_buffer=10_000, seed=0)
    pipe = BatchStream(data_dir, cfg)
    # Open every corpus stream and fill its shuffle buffer before timing (one-off start-up cost).
    pipe.warm_up()
    next(pipe)
    steps = max(5, pairs // batch)
    t, c = time.perf_counter(), _cpu()
    for _ in range(steps):
        next(pipe)
    rate, cpu_rate = steps * batch / (time.perf_counter() - t), steps * batch / (_cpu() - c)
    state = pipe.state()
    pipe.close()
    return rate, cpu_rate, state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--data_dir", default="/tmp/bench_input_data")
    ap.add_argument("--pairs", type=int, default=100_000, help="pairs timed per batch size")
    ap.add_argument("--batch_sizes", default="64,1024")
    args = ap.parse_args()

    t = time.perf_counter()
    generate(args.data_dir, args.records)
    print(f"data: {args.records} records in {args.data_dir} ({time.perf_counter() - t:.1f}s to prepare)")
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (others share them: the "
        f"per-CPU-second rates are the load-robust figures)"
    )
    raw, raw_cpu, n = raw_read_rate(args.data_dir)
    print(
        f"reference  raw TFRecord read (gunzip + framing only): {raw:8.0f} records/s, "
        f"{raw_cpu:8.0f} records per CPU-second ({n} records)"
    )
    for b in (int(x) for x in args.batch_sizes.split(",")):
        rate, cpu_rate, state = pipeline_rate(args.data_dir, b, args.pairs)
        print(
            f"pipeline   batch {b:5d}: {rate:8.0f} pairs/s = {rate / TARGET:5.2f}x the {TARGET} target, "
            f"{rate / raw:5.2f}x the raw read rate; {cpu_rate:8.0f} pairs per CPU-second "
            f"= {cpu_rate / raw_cpu:4.2f}x raw  (duplicates skipped: {state['duplicates_skipped']})"
        )


if __name__ == "__main__":
    main()
