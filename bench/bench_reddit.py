"""Comments per CPU-second through RedditPairs (pipeline/reddit.py) against reading + JSON-decoding the
same lines alone, same file, same run; and the projected Dataflow vCPU-hours for Reddit 2015-2018.

    python bench/bench_reddit.py [--comments=200000] [--repeats=2] [--format=zst]

Generates a month-like sample (seeded): Pushshift-shaped comment records (~20 fields, ~600 bytes a
line), threads of heavy-tailed sizes, bodies of log-normal length, 6% [deleted] and 3% [removed],
written as one .zst file (the recent dumps' format; --format=gz|bz2|xz|jsonl for the others). Then,
alternating, `--repeats` times:
  read+decode: the file through the same opener RedditPairs uses (Beam FileSystems, our decompressor),
               `json.loads` of every line: the floor of any reader of these files
  RedditPairs: the whole transform on the local runner (FnApiRunner, in_memory, in this process):
               read, parse, filter, group by thread, pair, batch; its events counted with
               Count.PerElement and its pair lines counted, as the job consumes them
  whole job:   `beam_main.py` on the file with a reddit_comments data config (pairing, tokenizing with
               the demo tokenizer, splitting, writing TFRecords, the manifest), in this process
CPU time is this process's user + system time (the in-memory runner runs here). The best run of each
is kept. The projection divides PolyAI's comment count for 2015-2018 (reddit/README.md of
conversational-datasets: 3,680,746,776 comments) by the rate measured here.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import lzma
import math
import os
import random
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# PolyAI's figure for the comments of 2015-2018 (fh-bigquery:reddit_comments, tables 2015_01..2018_12).
COMMENTS_2015_2018 = 3_680_746_776

WORDS = (
    "the a to and of you it that is in i this for was but on have not with my be they are just like "
    "so what if do can would people all me your about think don't get more one or at it's there "
    "good really know from time when them how because no make out up yeah lol game thing post why "
    "right well much even also than guy some need actually going want see better work way still"
).split()


def make_records(n: int, seed: int = 0) -> list[bytes]:
    """n Pushshift-shaped comment lines in threads; month-like proportions."""
    rng = random.Random(seed)
    lines = []
    thread = 0
    while len(lines) < n:
        thread += 1
        size = min(n - len(lines), max(1, int(rng.paretovariate(1.1))), 20000)
        ids = []
        t = 1420070400 + rng.randrange(31 * 86400)
        for k in range(size):
            t += int(rng.expovariate(1 / 600))
            cid = f"c{thread:x}k{k:x}"
            if not ids or rng.random() < 0.3:
                parent = f"t3_p{thread:x}"
            else:
                parent = "t1_" + ids[max(0, len(ids) - 1 - int(rng.expovariate(0.3)))]
            u = rng.random()
            if u < 0.06:
                body = "[deleted]"
            elif u < 0.09:
                body = "[removed]"
            else:
                length = min(5000, max(1, int(rng.lognormvariate(4.5, 1.0))))
                body = ""
                while len(body) < length:
                    body += rng.choice(WORDS) + " "
                body = body[:length].strip() or "ok"
            rec = {
                "author": f"user{rng.randrange(50000)}",
                "author_flair_css_class": None,
                "author_flair_text": None,
                "body": body,
                "controversiality": 0,
                "created_utc": str(t),
                "distinguished": None,
                "edited": False,
                "gilded": 0,
                "id": cid,
                "link_id": f"t3_p{thread:x}",
                "parent_id": parent,
                "retrieved_on": t + 86400 * 30,
                "score": rng.randrange(-5, 200),
                "stickied": False,
                "subreddit": f"sub{thread % 997}",
                "subreddit_id": f"t5_{thread % 997:x}",
                "ups": rng.randrange(0, 200),
            }
            lines.append((t, json.dumps(rec).encode()))
            ids.append(cid)
    # A month's file is in time order: threads start through the month and live for hours.
    return [line for _, line in sorted(lines)]


def write(path: str, data: bytes, fmt: str) -> None:
    if fmt == "zst":
        import zstandard

        params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27)
        with open(path, "wb") as f, zstandard.ZstdCompressor(compression_params=params).stream_writer(f) as w:
            w.write(data)
        return
    compress = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress, "jsonl": lambda b: b}[fmt]
    with open(path, "wb") as f:
        f.write(compress(data))


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(fn):
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu, result


def read_and_decode(path: str) -> int:
    from pipeline.lines import iter_line_batches
    from pipeline.reddit import open_comment_file

    n = 0
    for batch in iter_line_batches("reddit", path, 4096, 1 << 20, opener=open_comment_file):
        for line in batch.lines:
            json.loads(line.decode("utf-8"))
            n += 1
    return n


def reddit_pairs(path: str, out_dir: str) -> dict:
    import apache_beam as beam

    from pipeline.options import pipeline_options
    from pipeline.reddit import RedditOptions, RedditPairs

    with beam.Pipeline(options=pipeline_options([])) as p:
        out = p | RedditPairs("reddit", [path], RedditOptions(), batch_lines=512)
        counts = out.events | beam.combiners.Count.PerElement()
        lines = out.batches | beam.Map(lambda b: ("batch_lines", len(b.lines))) | beam.CombinePerKey(sum)
        (
            (counts, lines)
            | beam.Flatten()
            | beam.combiners.ToList()
            | beam.Map(lambda kv: json.dumps(dict(kv)))
            | beam.io.WriteToText(os.path.join(out_dir, "counts"), shard_name_template="")
        )
    with open(os.path.join(out_dir, "counts")) as f:
        return json.loads(f.read())


def whole_job(path: str, out_dir: str) -> dict:
    from pipeline import job
    from pipeline.manifest import read_manifest

    config = os.path.join(out_dir, "data_config.json")
    with open(config, "w") as f:
        json.dump(
            {
                "corpora": [
                    {
                        "name": "reddit",
                        "files": [path],
                        "record_format": "pair",
                        "input_format": "reddit_comments",
                        "weight": 1,
                    }
                ]
            },
            f,
        )
    assert job.run([f"--data_config={config}", f"--output_dir={os.path.join(out_dir, 'data')}"]) == 0
    (c,) = read_manifest(os.path.join(out_dir, "data"))["corpora"]
    return c


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comments", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--format", default="zst", choices=["zst", "gz", "bz2", "xz", "jsonl"])
    args = ap.parse_args(argv)

    from pipeline.reddit import check_reddit_counts

    tmp = tempfile.mkdtemp(prefix="bench_reddit_")
    try:
        lines = make_records(args.comments)
        data = b"\n".join(lines) + b"\n"
        path = os.path.join(tmp, f"RC_2015-01.{args.format}")
        write(path, data, args.format)
        print(
            f"{len(lines):,} comments, {len(data) / len(lines):.0f} bytes a line, "
            f"{os.path.getsize(path) / 1e6:.1f} MB as .{args.format}"
        )
        best = {"read+decode": None, "RedditPairs": None, "whole job": None}
        counts = None
        for r in range(args.repeats):
            wall, cpu, n = measure(lambda: read_and_decode(path))
            assert n == len(lines)
            best["read+decode"] = min(best["read+decode"] or (wall, cpu), (wall, cpu), key=lambda x: x[1])
            out_dir = os.path.join(tmp, f"out{r}")
            os.makedirs(out_dir)
            wall, cpu, counts = measure(lambda out_dir=out_dir: reddit_pairs(path, out_dir))
            best["RedditPairs"] = min(best["RedditPairs"] or (wall, cpu), (wall, cpu), key=lambda x: x[1])
            job_dir = os.path.join(tmp, f"job{r}")
            os.makedirs(job_dir)
            wall, cpu, entry = measure(lambda job_dir=job_dir: whole_job(path, job_dir))
            assert entry["lines_read"] == entry["source"]["counts"]["pairs_written"] == counts["pairs_written"]
            best["whole job"] = min(best["whole job"] or (wall, cpu), (wall, cpu), key=lambda x: x[1])
        assert check_reddit_counts(counts) == [] and counts["lines_read"] == len(lines)
        assert counts["batch_lines"] == counts["pairs_written"]
        print("counts:", json.dumps(dict(sorted(counts.items()))))
        rates = {}
        print(f"{'':14} {'wall':>8} {'CPU':>8} {'comments/CPU-s':>15}")
        for name, (wall, cpu) in best.items():
            rates[name] = len(lines) / cpu
            print(f"{name:14} {wall:7.2f}s {cpu:7.2f}s {rates[name]:15,.0f}")
        ratio = rates["RedditPairs"] / rates["read+decode"]
        print(f"ratio RedditPairs / read+decode (per CPU-second): {ratio:.2f}")
        hours = COMMENTS_2015_2018 / rates["RedditPairs"] / 3600
        print(
            f"projection: {COMMENTS_2015_2018:,} comments (2015-2018, PolyAI's count) / "
            f"{rates['RedditPairs']:,.0f} per CPU-s = {hours:,.0f} vCPU-hours "
            f"({1e9 / rates['RedditPairs'] / 3600:,.0f} per billion comments); "
            f"pairs per comment here {counts['pairs_written'] / len(lines):.3f}"
        )
        job_hours = COMMENTS_2015_2018 / rates["whole job"] / 3600
        print(
            f"whole job / RedditPairs (per CPU-second): {rates['whole job'] / rates['RedditPairs']:.2f}; "
            f"projection through the whole job: {job_hours:,.0f} vCPU-hours "
            f"({1e9 / rates['whole job'] / 3600:,.0f} per billion comments)"
        )
        if not math.isfinite(ratio):
            raise SystemExit("bad measurement")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
