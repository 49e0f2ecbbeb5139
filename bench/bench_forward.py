"""The encoder's forward pass alone at equal shapes: our jit SentenceEncoder against
sentence-transformers' torch model (transformers' BERT, its default SDPA attention), same weights
(all-MiniLM-L6-v2, bundled), same random token ids, no padding, float32, torch limited to --threads.
Separates per-token speed from batching and padding (bench_encode / bench_mine measure those).

For each shape it also times the encoder's dense matmuls alone (query/key/value, attention output,
the two feed-forward ones; every layer, the same token count): no attention, softmax, layer norm or
GELU. On our side they run as the forward runs them: ONE jitted program, the batch split over the
devices as in the forward, the weights replicated, chained layer after layer (an
optimization_barrier after each product, so that XLA neither fuses nor reassociates them away).
That is a floor on any encoder's time built on XLA's matrix multiply with this sharding, so torch's
whole forward over it bounds the speed ratio that any change to our non-matmul code could reach on
this machine. torch's matmuls run as its forward runs them, one eager call after another. For
comparison it also prints the floor as it was first measured (each of the 24 products a separate
jit call on one device, each waited for), which counts dispatch and idle cores against XLA.

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
    ap.add_argument(
        "--cpu_devices",
        type=int,
        default=0,
        help="our CPU devices, the batch split over them (0: one per core, mine_main.py's default)",
    )
    args = ap.parse_args()

    from trainer.mesh import batch_sharding, create_mesh, replicated, split_cpu_into_devices

    split_cpu_into_devices(args.cpu_devices)
    import jax
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from pipeline.model_source import demo_model_dir
    from trainer.model.hf_loading import load_pretrained

    torch.set_num_threads(args.threads)
    pre = load_pretrained(demo_model_dir())
    st = SentenceTransformer(demo_model_dir(), device="cpu")
    mesh = create_mesh()
    apply = jax.jit(
        lambda p, i, m: pre.model.apply(p, i, m),
        in_shardings=(replicated(mesh), batch_sharding(mesh), batch_sharding(mesh)),
    )
    rng = np.random.default_rng(0)
    print(
        f"all-MiniLM-L6-v2, float32, torch threads {args.threads}, cpu count {os.cpu_count()}, our devices "
        f"{len(jax.devices())}, "
        f"load average {os.getloadavg()[0]:.1f}; {args.repeats} calls of each side after one warm-up, ours and "
        "theirs alternating (the machine is shared: a disturbance hits both sides of a pair); times are the "
        "fastest call, the ratio the median of the pairs' ratios"
    )
    for shape in args.shapes.split(","):
        b, length = map(int, shape.split("x"))
        ids = rng.integers(1000, 20000, size=(b, length)).astype(np.int32)
        ids[:, 0], ids[:, -1] = 101, 102
        mask = np.ones_like(ids)
        ours_emb = apply(pre.params, ids, mask).block_until_ready()
        feats = {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "attention_mask": torch.tensor(mask),
            "token_type_ids": torch.zeros((b, length), dtype=torch.long),
        }
        with torch.inference_mode():
            theirs_emb = st(dict(feats))["sentence_embedding"]
            ours, theirs, ratio = _paired_seconds(
                lambda ids=ids, mask=mask: apply(pre.params, ids, mask).block_until_ready(),
                lambda feats=feats: st(dict(feats)),
                args.repeats,
            )
        diff = float(np.abs(np.asarray(ours_emb) - theirs_emb.numpy()).max())
        xla_mm, torch_mm = _dense_chain(pre.model.config, b, length, mesh, args.repeats)
        separate = _separate_matmuls(pre.model.config, b * length, args.repeats)
        att_flops, xla_att, torch_att = _attention_products(pre.model.config, b, length, mesh, args.repeats)
        print(
            f"[{b} x {length}] ours {ours * 1e3:7.1f} ms ({b * length / ours:8.0f} tokens/s), sentence-transformers "
            f"{theirs * 1e3:7.1f} ms ({b * length / theirs:8.0f} tokens/s); speed ratio ours / theirs "
            f"{ratio:.2f}x (median of pairs; {theirs / ours:.2f}x of the fastest calls); max abs diff {diff:.1e}"
        )
        flops = _dense_flops(pre.model.config, b * length)
        print(
            f"[{b} x {length}] dense matmuls alone ({flops / 1e9:.1f} GFLOP), one jitted program sharded as the "
            f"forward: XLA {xla_mm * 1e3:7.1f} ms ({flops / xla_mm / 1e9:5.1f} GFLOP/s; {xla_mm / ours:.0%} of our "
            f"forward), torch {torch_mm * 1e3:7.1f} ms ({flops / torch_mm / 1e9:5.1f} GFLOP/s); ceiling of the "
            f"ratio (torch forward / XLA matmuls alone): {theirs / xla_mm:.2f}x"
        )
        print(
            f"[{b} x {length}] the same as 24 separate jit calls on one device, each waited for: "
            f"{separate * 1e3:7.1f} ms ({flops / separate / 1e9:5.1f} GFLOP/s; {separate / ours:.0%} of our "
            f"forward); the ceiling it gave: {theirs / separate:.2f}x"
        )
        print(
            f"[{b} x {length}] the attention's batched products alone (scores and context, every layer, "
            f"{att_flops / 1e9:.1f} GFLOP, in the forward's query blocks): XLA {xla_att * 1e3:7.1f} ms "
            f"({att_flops / xla_att / 1e9:5.1f} GFLOP/s; {xla_att / ours:.0%} of our forward); torch's whole "
            f"attention (scaled_dot_product_attention, softmax included) {torch_att * 1e3:7.1f} ms"
        )
    return 0


def _attention_products(config, b: int, length: int, mesh, repeats: int) -> tuple[float, float, float]:
    """(FLOPs, XLA seconds, torch seconds) of the attention's two batched products per forward: scores
    q k^T and context p v, per head ([L / blocks, d] x [d, L] and [L / blocks, L] x [L, d]), in the
    query blocks our CPU forward uses, chained layer after layer as in _dense_chain, with the forward's
    sharding; against torch's whole attention as its BERT runs it (scaled_dot_product_attention: the
    same products, and the softmax, in one fused kernel)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from trainer.mesh import batch_sharding
    from trainer.model.modeling import query_blocks

    n = config.num_attention_heads
    d = config.hidden_size // n
    blocks = query_blocks((b, n, length, d))
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((b, n, length, d)).astype(np.float32) / np.sqrt(d) for _ in range(3))

    def chain(q, k, v):
        for _ in range(config.num_hidden_layers):
            qs = jnp.split(q, blocks, axis=2)
            s = [jax.lax.optimization_barrier(jnp.einsum("bnqd,bnkd->bnqk", qi, k)) for qi in qs]
            q = jnp.concatenate(
                [jax.lax.optimization_barrier(jnp.einsum("bnqk,bnkd->bnqd", si, v)) for si in s], axis=2
            )
        return q

    fused = jax.jit(chain, in_shardings=(batch_sharding(mesh),) * 3, out_shardings=batch_sharding(mesh))
    args = [jax.device_put(x, batch_sharding(mesh)) for x in (q, k, v)]
    xla = _best_seconds(lambda: fused(*args).block_until_ready(), repeats)
    pq, pk, pv = (torch.from_numpy(x) for x in (q, k, v))

    def torch_chain():  # transformers' BERT attention as sentence-transformers runs it: one SDPA call
        y = pq
        for _ in range(config.num_hidden_layers):
            y = torch.nn.functional.scaled_dot_product_attention(y, pk, pv)
        return y

    with torch.inference_mode():
        pt = _best_seconds(torch_chain, repeats)
    return 4.0 * b * n * length * length * d * config.num_hidden_layers, xla, pt


def _dense_shapes(config, tokens: int) -> list[tuple[int, int, int]]:
    h, i = config.hidden_size, config.intermediate_size
    return [(tokens, h, 3 * h), (tokens, h, h), (tokens, h, i), (tokens, i, h)] * config.num_hidden_layers


def _dense_flops(config, tokens: int) -> float:
    return sum(2.0 * m * k * n for m, k, n in _dense_shapes(config, tokens))


def _best_seconds(fn, repeats: int) -> float:
    """The fastest of `repeats` calls of fn after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _paired_seconds(ours, theirs, repeats: int) -> tuple[float, float, float]:
    """(fastest call of ours, fastest of theirs, median over pairs of theirs/ours): the two alternate, one
    warm-up each, so that a slow spell of a shared machine slows both calls of a pair, not one side's
    block of calls (best-of blocks moved the ratio by 0.5x between two runs minutes apart)."""
    import statistics

    ours(), theirs()
    a, b = [], []
    for _ in range(repeats):
        for fn, out in ((ours, a), (theirs, b)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return min(a), min(b), statistics.median(y / x for x, y in zip(a, b))


def _layer_weights(config, seed: int = 1) -> list:
    """Per layer (query/key/value, attention output, feed-forward in, out) weights, scaled by
    1/sqrt(fan-in) so that the chained products stay in range."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h, i = config.hidden_size, config.intermediate_size
    return [
        [(rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32) for k, n in ((h, 3 * h), (h, h), (h, i), (i, h))]
        for _ in range(config.num_hidden_layers)
    ]


def _dense_chain(config, b: int, length: int, mesh, repeats: int) -> tuple[float, float]:
    """Seconds per forward's worth of dense matmuls, chained as the layers chain them: (XLA as one
    jitted program with the forward's sharding, torch as eager calls), each the fastest of `repeats`."""
    import jax
    import numpy as np
    import torch

    from trainer.mesh import batch_sharding, replicated

    h = config.hidden_size
    weights = _layer_weights(config)
    x = np.random.default_rng(2).standard_normal((b, length, h)).astype(np.float32)

    def chain(x, weights):
        for w_qkv, w_out, w_in, w_ff in weights:
            qkv = jax.lax.optimization_barrier(x @ w_qkv)
            o = jax.lax.optimization_barrier(qkv[..., :h] @ w_out)
            f = jax.lax.optimization_barrier(o @ w_in)
            x = jax.lax.optimization_barrier(f @ w_ff)
        return x

    fused = jax.jit(chain, in_shardings=(batch_sharding(mesh), replicated(mesh)), out_shardings=batch_sharding(mesh))
    x_dev = jax.device_put(x, batch_sharding(mesh))
    w_dev = jax.device_put(weights, replicated(mesh))
    xla = _best_seconds(lambda: fused(x_dev, w_dev).block_until_ready(), repeats)

    pt_x, pt_w = torch.from_numpy(x), [[torch.from_numpy(w) for w in layer] for layer in weights]

    def torch_chain():
        y = pt_x
        for w_qkv, w_out, w_in, w_ff in pt_w:
            y = torch.matmul(torch.matmul(torch.matmul(y, w_qkv)[..., :h], w_out), w_in) @ w_ff
        return y

    with torch.inference_mode():
        pt = _best_seconds(torch_chain, repeats)
    return xla, pt


def _separate_matmuls(config, tokens: int, repeats: int) -> float:
    """The first floor: each product a separate jit call on the default device, waited for."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(1)
    operands = {
        (m, k, n): (
            jnp.asarray(rng.standard_normal((m, k), np.float32)),
            jnp.asarray(rng.standard_normal((k, n), np.float32)),
        )
        for m, k, n in set(_dense_shapes(config, tokens))
    }
    matmul = jax.jit(jnp.matmul)

    def sweep():
        for s in _dense_shapes(config, tokens):
            matmul(*operands[s]).block_until_ready()

    return _best_seconds(sweep, repeats)


if __name__ == "__main__":
    sys.exit(main())
