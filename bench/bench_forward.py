"""The encoder's forward pass alone at equal shapes: our jit SentenceEncoder against
sentence-transformers' torch model (transformers' BERT, its default SDPA attention), same weights
(all-MiniLM-L6-v2, bundled), same random token ids, no padding, float32, torch limited to --threads.
Separates per-token speed from batching and padding (bench_encode / bench_mine measure those).

  .venv/bin/python bench/bench_forward.py [--shapes=64x32,16x128] [--repeats=20] [--threads=2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="64x32,16x128", help="batch x length, comma-separated")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import jax
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from pipeline.model_source import demo_model_dir
    from trainer.hf_loading import load_pretrained

    torch.set_num_threads(args.threads)
    pre = load_pretrained(demo_model_dir())
    st = SentenceTransformer(demo_model_dir(), device="cpu")
    apply = jax.jit(lambda p, i, m: pre.model.apply(p, i, m))
    rng = np.random.default_rng(0)
    print(f"all-MiniLM-L6-v2, float32, torch threads {args.threads}, cpu count {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}; mean of {args.repeats} calls after one warm-up")
    for shape in args.shapes.split(","):
        b, length = map(int, shape.split("x"))
        ids = rng.integers(1000, 20000, size=(b, length)).astype(np.int32)
        ids[:, 0], ids[:, -1] = 101, 102
        mask = np.ones_like(ids)
        apply(pre.params, ids, mask).block_until_ready()
        t = time.perf_counter()
        for _ in range(args.repeats):
            ours_emb = apply(pre.params, ids, mask).block_until_ready()
        ours = (time.perf_counter() - t) / args.repeats
        feats = {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask),
                 "token_type_ids": torch.zeros((b, length), dtype=torch.long)}
        with torch.inference_mode():
            st(dict(feats))
            t = time.perf_counter()
            for _ in range(args.repeats):
                theirs_emb = st(dict(feats))["sentence_embedding"]
        theirs = (time.perf_counter() - t) / args.repeats
        diff = float(np.abs(np.asarray(ours_emb) - theirs_emb.numpy()).max())
        print(f"[{b} x {length}] ours {ours * 1e3:7.1f} ms ({b * length / ours:8.0f} tokens/s), sentence-transformers "
              f"{theirs * 1e3:7.1f} ms ({b * length / theirs:8.0f} tokens/s); speed ratio ours / theirs "
              f"{theirs / ours:.2f}x; max abs diff {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
