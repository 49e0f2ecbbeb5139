"""The encoder's forward pass alone at equal shapes: our jit SentenceEncoder against
sentence-transformers' torch model (transformers' BERT, its default SDPA attention), same weights
(all-MiniLM-L6-v2, bundled), same random token ids, no padding, float32, torch limited to --threads.
Separates per-token speed from batching and padding (bench_encode / bench_mine measure those).

For each shape it also times the encoder's dense matmuls alone, on both sides, as separate calls
(query/key/value, attention output, the two feed-forward ones; every layer, the same token count):
no attention, softmax, layer norm or GELU. That is a floor on any encoder's time built on that
side's matrix multiply, so torch's whole forward over XLA's matmuls alone bounds the speed ratio
that any change to our non-matmul code could reach on this machine.

  .venv/bin/python bench/bench_forward.py [--shapes=64x32,16x128] [--repeats=20] [--threads=2] [--cpu_devices=0]
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
    ap.add_argument("--cpu_devices", type=int, default=0,
                    help="our CPU devices, the batch split over them (0: one per core, mine_main.py's default)")
    args = ap.parse_args()

    from trainer.mesh import batch_sharding, create_mesh, replicated, split_cpu_into_devices

    split_cpu_into_devices(args.cpu_devices)
    import jax
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from pipeline.model_source import demo_model_dir
    from trainer.hf_loading import load_pretrained

    torch.set_num_threads(args.threads)
    pre = load_pretrained(demo_model_dir())
    st = SentenceTransformer(demo_model_dir(), device="cpu")
    mesh = create_mesh()
    apply = jax.jit(lambda p, i, m: pre.model.apply(p, i, m),
                    in_shardings=(replicated(mesh), batch_sharding(mesh), batch_sharding(mesh)))
    rng = np.random.default_rng(0)
    print(f"all-MiniLM-L6-v2, float32, torch threads {args.threads}, cpu count {os.cpu_count()}, our devices "
          f"{len(jax.devices())}, "
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
        xla_mm, torch_mm = _dense_matmuls(pre.model.config, b * length, args.repeats)
        print(f"[{b} x {length}] ours {ours * 1e3:7.1f} ms ({b * length / ours:8.0f} tokens/s), sentence-transformers "
              f"{theirs * 1e3:7.1f} ms ({b * length / theirs:8.0f} tokens/s); speed ratio ours / theirs "
              f"{theirs / ours:.2f}x; max abs diff {diff:.1e}")
        flops = _dense_flops(pre.model.config, b * length)
        print(f"[{b} x {length}] dense matmuls alone ({flops / 1e9:.1f} GFLOP): XLA {xla_mm * 1e3:7.1f} ms "
              f"({flops / xla_mm / 1e9:5.1f} GFLOP/s; our forward spends {xla_mm / ours:.0%} of its time there), torch "
              f"{torch_mm * 1e3:7.1f} ms ({flops / torch_mm / 1e9:5.1f} GFLOP/s); ceiling of the ratio with XLA's "
              f"matmul (torch forward / XLA matmuls alone): {theirs / xla_mm:.2f}x")
    return 0


def _dense_shapes(config, tokens: int) -> list[tuple[int, int, int]]:
    h, i = config.hidden_size, config.intermediate_size
    return [(tokens, h, 3 * h), (tokens, h, h), (tokens, h, i), (tokens, i, h)] * config.num_hidden_layers


def _dense_flops(config, tokens: int) -> float:
    return sum(2.0 * m * k * n for m, k, n in _dense_shapes(config, tokens))


def _dense_matmuls(config, tokens: int, repeats: int) -> tuple[float, float]:
    """Seconds per forward's worth of dense matmuls: (XLA, torch), each the mean of `repeats` sweeps."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    rng = np.random.default_rng(1)
    operands = {}
    for m, k, n in set(_dense_shapes(config, tokens)):
        operands[(m, k, n)] = (rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32))
    matmul = jax.jit(jnp.matmul)
    xla = {s: (jnp.asarray(a), jnp.asarray(w)) for s, (a, w) in operands.items()}
    pt = {s: (torch.from_numpy(a), torch.from_numpy(w)) for s, (a, w) in operands.items()}
    for a, w in xla.values():
        matmul(a, w).block_until_ready()

    def sweep_xla():
        for s in _dense_shapes(config, tokens):
            matmul(*xla[s]).block_until_ready()

    def sweep_torch():
        for s in _dense_shapes(config, tokens):
            torch.matmul(*pt[s])

    times = []
    for sweep in (sweep_xla, sweep_torch):
        sweep()
        t = time.perf_counter()
        for _ in range(repeats):
            sweep()
        times.append((time.perf_counter() - t) / repeats)
    return times[0], times[1]


if __name__ == "__main__":
    sys.exit(main())
