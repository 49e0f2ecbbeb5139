"""Throughput of the Beam job against the bare fast tokenizer, on the same generated pairs, same run.

    python bench/bench_pipeline.py [--pairs=200000] [--repeats=1] [-- extra beam_main.py flags]

Generates a gzip'd JSON-lines pair corpus (seeded), then measures
  tokenizer: `tokenizer(texts, truncation=True, max_length=128)` in batches of 1000 over all texts
  job:       the whole `beam_main.py` run in this process (launcher checks, tokenizer load, pipeline
             on the local runner with its defaults: FnApiRunner, 2 workers, multi_processing;
             reading, parsing, tokenizing, splitting, writing gzip'd TFRecords, manifest)
and prints pairs/s of each and the ratio job / tokenizer (target >= 0.7).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORDS = ("time year people way day man thing woman life child world school state family student group "
         "country problem hand part place case week company system program question work government number "
         "night point home water room mother area money story fact month lot right study book eye job word "
         "business issue side kind head house service friend father power hour game line end member law car "
         "city community name president team minute idea kid body information back parent face others level "
         "office door health person art war history party result change morning reason research girl guy "
         "moment air teacher force education quickly slowly carefully happily beautiful large small new old "
         "good great important different local social national strong political public sure free true whole "
         "run walk eat read write speak build grow learn teach think know find give tell ask seem feel try "
         "leave call keep begin help show hear play move live believe hold bring happen include continue").split()


def make_pairs(n: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    def sentence():
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 25))).capitalize() + "."
    return [[sentence(), sentence()] for _ in range(n)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=200_000)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args, extra = ap.parse_known_args(argv)

    from pipeline import job
    from pipeline.tokenizing import DEMO_TOKENIZER, load_hf_tokenizer

    tmp = tempfile.mkdtemp(prefix="bench_pipeline_")
    try:
        pairs = make_pairs(args.pairs)
        corpus_dir = os.path.join(tmp, "corpora")
        os.makedirs(corpus_dir)
        with gzip.open(os.path.join(corpus_dir, "bench_pairs.jsonl.gz"), "wt", encoding="utf-8") as f:
            for p in pairs:
                f.write(json.dumps(p) + "\n")
        config = os.path.join(tmp, "data_config.json")
        with open(config, "w") as f:
            json.dump({"corpora": [{"name": "bench_pairs", "files": ["bench_pairs.jsonl.gz"], "shape": "pair",
                                    "weight": 1, "expected_lines": len(pairs)}]}, f)
        texts = [t for p in pairs for t in p]

        tok = load_hf_tokenizer(DEMO_TOKENIZER)
        tok(texts[:1000], truncation=True, max_length=128)  # warm-up
        t0 = time.perf_counter()
        n_ids = 0
        for i in range(0, len(texts), 1000):
            n_ids += len(tok(texts[i:i + 1000], truncation=True, max_length=128)["input_ids"])
        t_tok = time.perf_counter() - t0
        assert n_ids == len(texts)

        out = os.path.join(tmp, "out")
        t0 = time.perf_counter()
        rc = job.run(["--data_config", config, "--input_root", corpus_dir, "--output_dir", out, *extra])
        t_job = time.perf_counter() - t0
        assert rc == 0, rc
        with open(os.path.join(out, "manifest.json")) as f:
            m = json.load(f)
        c = m["corpora"][0]
        assert c["train_examples"] + c["validation_examples"] == len(pairs), c

        tok_rate, job_rate = len(pairs) / t_tok, len(pairs) / t_job
        print(f"pairs: {len(pairs)}  extra flags: {' '.join(extra) or '(none)'}")
        print(f"bare tokenizer: {t_tok:.2f} s  {tok_rate:,.0f} pairs/s")
        print(f"beam job:       {t_job:.2f} s  {job_rate:,.0f} pairs/s")
        print(f"ratio job/tokenizer: {job_rate / tok_rate:.2f}  (target >= 0.7)")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
