"""Throughput of the Beam job against the bare fast tokenizer, on the same generated pairs, same run.

    python bench/bench_pipeline.py [--pairs=200000] [--repeats=2] [--modes=default,in_memory,...]
                                   [extra beam_main.py flags]

Generates a gzip'd JSON-lines pair corpus (seeded), then measures, alternating, `--repeats` times:
  tokenizer: `tokenizer(texts, truncation=True, max_length=128)` in batches of 1000 over all texts
             (the transformers fast tokenizer; it runs on both cores by itself): the reference
  backend:   the Rust `encode_batch_fast` call the job makes, same batches (its tokenizing floor)
  job:       the whole `beam_main.py` run in this process (launcher checks, tokenizer load, pipeline
             start, reading, parsing, tokenizing, splitting, writing gzip'd TFRecords, manifest), on
             the local runner with its defaults ("default") or with --direct_running_mode=<mode>
and prints the best time of each (the machine is shared: the best run is the least disturbed one),
pairs/s, and the ratio job / tokenizer (target >= 0.7).

The job runs three times per mode, alternating: with the cleaning stages off (--no_deduplicate),
with deduplication alone (the default), and with both (plus --decontaminate against a generated text
file of --eval_texts sentences from the same vocabulary, of which 1 in 1000 is a text of the corpus);
the ratios to "off" are the stages' cost (goal >= 0.8), printed for the best run of each and as the median
of each repeat's own ratio (a shared machine's slow spells hit one repeat's runs alike). The corpus gets
1% planted duplicates.
`--cleaning_rates` instead measures the figures of docs/pipeline.md's projection on the DoFns alone.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORDS = (
    "time year people way day man thing woman life child world school state family student group "
    "country problem hand part place case week company system program question work government number "
    "night point home water room mother area money story fact month lot right study book eye job word "
    "business issue side kind head house service friend father power hour game line end member law car "
    "city community name president team minute idea kid body information back parent face others level "
    "office door health person art war history party result change morning reason research girl guy "
    "moment air teacher force education quickly slowly carefully happily beautiful large small new old "
    "good great important different local social national strong political public sure free true whole "
    "run walk eat read write speak build grow learn teach think know find give tell ask seem feel try "
    "leave call keep begin help show hear play move live believe hold bring happen include continue"
).split()


def make_pairs(n: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)

    def sentence():
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 25))).capitalize() + "."

    return [[sentence(), sentence()] for _ in range(n)]


def cleaning_rates(pairs, eval_texts: list[str], tokenizer_json: str) -> None:
    """The figures of docs/pipeline.md's projection, measured on the processing DoFn itself (no Beam
    pipeline): per tuple, its CPU time with the cleaning stages off and on, the keys it sends to the
    key join, and the bytes it puts into each shuffle (Beam's FastPrimitivesCoder, the coder these
    tuples get), and the join DoFns' CPU time per entry."""
    from apache_beam.coders.coders import FastPrimitivesCoder

    from pipeline import dedup, processing
    from pipeline.decontaminate import EvalKeys, JoinKeys
    from pipeline.lines import LineBatch

    lines = [json.dumps(p).encode() for p in pairs]
    coder = FastPrimitivesCoder()
    spec = {"deduplicate": True, "decontaminate": True, "symmetric": {"c": False}, "tuple_buckets": 1, "key_buckets": 1}
    results = {}
    for name, cleaning in (("off", None), ("on", spec)):
        fn = processing.ProcessLineBatch({"c": ("pair", None)}, tokenizer_json, 128, 0.01, None, cleaning)
        fn.setup()
        t0 = time.process_time()
        outs = [
            o
            for i in range(0, len(lines), 512)
            for o in fn.process(LineBatch("c", "/data/corpora/c.jsonl.gz", i + 1, lines[i : i + 512], ()))
        ]
        results[name] = (time.process_time() - t0, outs)
    n = len(lines)
    tuples = [o.value for o in results["on"][1] if o.tag == processing.TUPLES]
    keys = [o.value for o in results["on"][1] if o.tag == processing.KEYS]
    n_keys = sum(len(v[1][0]) // 8 for v in keys)
    tuple_bytes = sum(len(coder.encode(v)) for v in tuples)
    key_bytes = sum(len(coder.encode(v)) for v in keys)
    print(
        f"processing DoFn alone: off {results['off'][0] / n * 1e6:.1f} us/tuple, on {results['on'][0] / n * 1e6:.1f} "
        f"us/tuple (+{(results['on'][0] - results['off'][0]) / n * 1e6:.1f})"
    )
    records = sum(len(r) for v in tuples for r in v[1][6])
    texts = sum(len(v[1][7].encode()) for v in tuples)  # one string per packed element
    print(
        f"shuffle per tuple: tuple entry {tuple_bytes / n:.0f} B (record {records / n:.0f} B, normalised texts "
        f"{texts / n:.0f} B); {n_keys / n:.2f} text keys, {key_bytes / n:.0f} B"
    )
    words = [len(t.split()) for p in pairs for t in p]
    print(
        f"words per text: mean {sum(words) / len(words):.1f}; texts of 13+ words: "
        f"{sum(w >= 13 for w in words) / len(words):.0%}"
    )
    t0 = time.process_time()
    batches = [[("e", t) for t in eval_texts[i : i + 1024]] for i in range(0, len(eval_texts), 1024)]
    ev = [v for b in batches for v in EvalKeys(1).process(b)]
    t1 = time.process_time()
    cands = list(JoinKeys(1).process((0, {"train": [v for _, v in keys], "eval": [v for _, v in ev]})))
    t2 = time.process_time()
    decided = list(
        dedup.Decide(True, 128, processing.output_tag, processing.STATS).process(
            (0, {"copies": [v for _, v in tuples], "hits": [v for _, v in cands]})
        )
    )
    t3 = time.process_time()
    print(
        f"join DoFns: EvalKeys {(t1 - t0) / len(eval_texts) * 1e6:.1f} us/eval text, JoinKeys "
        f"{(t2 - t1) / max(1, n_keys) * 1e6:.2f} us/training key ({len(cands)} candidates), Decide "
        f"{(t3 - t2) / n * 1e6:.1f} us/tuple ({len(decided)} outputs)"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--modes", default="default", help="comma-separated: default, in_memory, multi_threading, multi_processing"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--eval_texts", type=int, default=20_000, help="texts of the generated evaluation set")
    ap.add_argument(
        "--cleaning_rates",
        action="store_true",
        help="only measure the cleaning stages' per-tuple CPU and shuffle bytes on the DoFns (no job runs)",
    )
    args, extra = ap.parse_known_args(argv)

    from pipeline import job
    from pipeline.tokenizing import DEMO_TOKENIZER, BatchTokenizer, load_hf_tokenizer

    tmp = tempfile.mkdtemp(prefix="bench_pipeline_")
    try:
        pairs = make_pairs(args.pairs)
        pairs[::100] = [[a.upper(), b] for a, b in pairs[1::100]][: len(pairs[::100])]  # 1% duplicates (case variants)
        eval_path = os.path.join(tmp, "eval_texts.txt")
        with open(eval_path, "w", encoding="utf-8") as f:
            evals = [t for p in make_pairs(args.eval_texts // 2, seed=1) for t in p]
            evals[::1000] = [p[1] for p in pairs[5::1000]][: len(evals[::1000])]  # 0.1% of them in the corpus
            f.writelines(t + "\n" for t in evals)
        corpus_dir = os.path.join(tmp, "corpora")
        os.makedirs(corpus_dir)
        with gzip.open(os.path.join(corpus_dir, "bench_pairs.jsonl.gz"), "wt", encoding="utf-8") as f:
            for p in pairs:
                f.write(json.dumps(p) + "\n")
        config = os.path.join(tmp, "data_config.json")
        with open(config, "w") as f:
            json.dump(
                {
                    "corpora": [
                        {
                            "name": "bench_pairs",
                            "files": ["bench_pairs.jsonl.gz"],
                            "record_format": "pair",
                            "weight": 1,
                            "expected_lines": len(pairs),
                        }
                    ]
                },
                f,
            )
        texts = [t for p in pairs for t in p]

        tok = load_hf_tokenizer(DEMO_TOKENIZER)
        if args.cleaning_rates:
            from pipeline.tokenizing import save_for_workers

            cleaning_rates(pairs, evals, save_for_workers(tok, tmp))
            return
        tok(texts[:1000], truncation=True, max_length=128)  # warm-up

        def cpu_seconds():
            t = os.times()  # this process and its finished children (the multi_processing workers)
            return t.user + t.system + t.children_user + t.children_system

        def time_tokenizer():
            t0, c0 = time.perf_counter(), cpu_seconds()
            n_ids = 0
            for i in range(0, len(texts), 1000):
                n_ids += len(tok(texts[i : i + 1000], truncation=True, max_length=128)["input_ids"])
            assert n_ids == len(texts)
            return time.perf_counter() - t0, cpu_seconds() - c0

        backend = BatchTokenizer(tok.backend_tokenizer.to_str(), 128)

        def time_backend():
            """The Rust call the job itself makes (no offsets, no Python BatchEncoding): the job's
            tokenizing floor, a stricter reference than `tokenizer(texts)`."""
            t0, c0 = time.perf_counter(), cpu_seconds()
            n_ids = 0
            for i in range(0, len(texts), 1000):
                n_ids += len(backend.encode(texts[i : i + 1000])[0])
            assert n_ids == len(texts)
            return time.perf_counter() - t0, cpu_seconds() - c0

        def time_job(mode):
            mode, cleaning = mode.rsplit("/", 1)
            out = os.path.join(tmp, "out")
            flags = [] if mode == "default" else [f"--direct_running_mode={mode}"]
            flags += {"off": ["--no_deduplicate"], "dedup": [], "on": [f"--decontaminate={eval_path}"]}[cleaning]
            t0, c0 = time.perf_counter(), cpu_seconds()
            rc = job.run(
                [
                    "--data_config",
                    config,
                    "--input_root",
                    corpus_dir,
                    "--output_dir",
                    out,
                    "--overwrite",
                    *flags,
                    *extra,
                ]
            )
            elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            assert rc == 0, rc
            with open(os.path.join(out, "manifest.json")) as f:
                c = json.load(f)["corpora"][0]
            removed = c["duplicates_removed"] + c["decontaminated"]["total"]
            assert c["train_examples"] + c["validation_examples"] + removed == len(pairs), (mode, c)
            assert (removed > 0) == (cleaning != "off"), (mode, c)
            return elapsed, cpu

        modes = [f"{m}/{cleaning}" for m in args.modes.split(",") if m for cleaning in ("off", "dedup", "on")]
        best = {
            "tokenizer": (float("inf"), 0.0),
            "backend": (float("inf"), 0.0),
            **{m: (float("inf"), 0.0) for m in modes},
        }
        runs = []  # per repeat, {name: (wall, cpu)}: the cleaning ratios are also read pairwise, within a repeat
        for r in range(args.repeats):
            run = {"tokenizer": time_tokenizer(), "backend": time_backend(), **{m: time_job(m) for m in modes}}
            runs.append(run)
            best = {k: min(best[k], run[k]) for k in best}
            print(f"after repeat {r + 1}: " + ", ".join(f"{k} {v[0]:.1f} s" for k, v in run.items()), flush=True)

        n = len(pairs)
        tok_wall, tok_cpu = best["tokenizer"]
        print(
            f"pairs: {n}  repeats: {args.repeats} (best wall time of each)  extra flags: {' '.join(extra) or '(none)'}"
        )
        print(f"bare tokenizer: {tok_wall:.2f} s  {n / tok_wall:,.0f} pairs/s  {n / tok_cpu:,.0f} pairs per CPU-second")
        be_wall, be_cpu = best["backend"]
        print(
            f"backend encode_batch_fast (what the job calls): {be_wall:.2f} s  {n / be_wall:,.0f} pairs/s  "
            f"{n / be_cpu:,.0f} pairs per CPU-second"
        )
        for m in modes:
            wall, cpu = best[m]
            print(
                f"beam job ({m}): {wall:.2f} s  {n / wall:,.0f} pairs/s  {n / cpu:,.0f} pairs per CPU-second  "
                f"ratio job/tokenizer: {tok_wall / wall:.2f} wall, {tok_cpu / cpu:.2f} CPU  (target >= 0.7); "
                f"job/backend: {be_wall / wall:.2f} wall, {be_cpu / cpu:.2f} CPU"
            )
            base, cleaning = m.rsplit("/", 1)
            if cleaning != "off":
                off_wall, off_cpu = best[base + "/off"]
                what = "both stages" if cleaning == "on" else "deduplication alone"
                # The same ratio within each repeat (the runs minutes apart, not the luckiest of each).
                pairs = [(x[base + "/off"], x[m]) for x in runs]
                wall_r = statistics.median(o[0] / c[0] for o, c in pairs)
                cpu_r = statistics.median(o[1] / c[1] for o, c in pairs)
                print(
                    f"  {what} / off ({base}): {off_wall / wall:.2f} wall, {off_cpu / cpu:.2f} CPU of the best runs; "
                    f"median of the repeats' own ratios {wall_r:.2f} wall, {cpu_r:.2f} CPU "
                    "(throughput ratio; goal >= 0.8)"
                )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
