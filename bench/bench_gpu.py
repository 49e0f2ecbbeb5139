"""Accelerator benchmark: our train step against sentence-transformers training on one GPU.

Runs without TensorFlow (JAX, PyTorch, sentence-transformers only) and needs no network: models get
random weights from their configurations (speed does not depend on the values), batches are
synthetic token ids with realistic lengths (log-normal, median --median_len tokens, cut at
--max_len). Both sides get the same batches (same seed). Our side is configured as the trainer is
(TrainConfig defaults: buckets, pack_min_row_length, pack_row_steps) and builds its batches as the
trainer does: each batch padded to the smallest bucket that fits it, then packed into rows of whole
texts (trainer.data.shapes.batch_packer: the row ladder, grown to a multiple of the memory plan's
gradient-caching chunks), or left padded with --packing=0. ST pads each column to its longest text
(recent versions' gradient caching trims each mini-batch to its own longest text).

Timing, ours: every timed batch is built and packed before the timed region (the trainer packs on its
input pipeline's prefetch thread, overlapping the step, so packing is not on the step's critical
path); its host-to-device copy (mesh.shard_batch) stays inside the timed loop, as in the train loop.
XLA compiles one program per batch shape, so before timing we collect the distinct shapes of the timed
batches (trainer.data.shapes.Shape: kind, rows x row length, chunks) and run one warm-up step on a
batch of each shape: every timed step then runs a compiled program. A compile during the timed steps
(counted from the step's jit cache and JAX's backend-compile events) is reported as
`compiles_during_timing` and should be 0. ST (eager PyTorch, nothing to compile) warms up on 2 extra
batches; both sides time the same --steps batches.

Work per encoder call with gradient caching (cached cases): sentence-transformers'
CachedMultipleNegativesRankingLoss(mini_batch_size=m) embeds m texts of ONE column per forward call,
padded to the mini-batch's longest text, so its largest call in a batch holds m x L_st tokens (L_st:
the batch's longest text; the mini-batch holding it). The limit that matters is activation memory,
i.e. tokens per call, so:
  packed (default): ours gets chunk_tokens = m x min(L_st over the timed batches) (--chunk_tokens
      overrides; per device = global on one GPU): no chunk of ours holds more tokens than ST's largest
      call. A packed row holds texts of both columns and no padding, so a chunk holds more texts
      (~2B/chunks) than m; a batch under the budget takes the plain step (as the trainer's memory
      plan does, no extra forward pass).
  padded (--packing=0): ours gets grad_cache_chunk = m: the same m texts of one column per call (ours
      padded to the batch's bucket, >= ST's mini-batch length).
Printed per case: texts and tokens per encoder call of both sides (ST's measured from its forward
calls with gradients).

Cases (each side of each case runs in its own subprocess, so that JAX's and PyTorch's allocators
never share the GPU and the peak-memory figures are clean):
  minilm: all-MiniLM-L6-v2-sized BERT (6 x 384), global batch 1024; plain step on both sides
          (ST: MultipleNegativesRankingLoss), or gradient caching if --minilm_chunk is set.
  large:  roberta-large-sized (24 x 1024), global batch 1024 with gradient caching on both sides
          (ST: CachedMultipleNegativesRankingLoss(mini_batch_size=--grad_cache_chunk); ours: as above).
Precision: ours computes in bfloat16 with float32 parameters, optimizer state, similarity and loss;
PyTorch runs forward and backward under torch.autocast(bfloat16) with float32 parameters.
Both: pair batches, symmetric loss (query_to_doc + doc_to_query, per_direction), scale 20, AdamW
with clipping at 1.0, dropout on. Ours runs on one device (a one-device mesh), like ST.

Printed per case: pairs/s of both, ratio, MFU, peak GPU memory, the shapes ours compiled and the
compiles during timing. MFU = model FLOPs / (time x peak), model FLOPs from trainer/plan/flops.py
(step_flops): per step 6 x (non-embedding parameters) x (tokens) + 12 x layers x hidden x sum over
rows of length^2 (attention scores and values, forward + backward), counted over what runs: our packed
rows (or padded texts) at their full length, ST's forward calls with gradients at their padded shape.
The extra forward pass of gradient caching and remat recomputation are not counted (standard MFU).
Peak: --peak_tflops, else 989 for H100/H200 (dense bf16), 312 for A100.

  python bench/bench_gpu.py                     # both cases, several minutes on one H100/H200
  python bench/bench_gpu.py --cases=large --steps=3 --grad_cache_chunk=256
  python bench/bench_gpu.py --smoke             # tiny model on CPU: checks the script end to end
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

_BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(_BENCH), _BENCH]  # the repository (trainer/) and bench/ (gpu_cases, ...)

import numpy as np  # noqa: E402
from gpu_cases import CASES, COLUMNS, WARMUP_BATCHES, longest_text, synthetic_batches  # noqa: E402
from gpu_reference import run_theirs  # noqa: E402

from trainer.plan.flops import step_flops  # noqa: E402  (no JAX)

# --------------------------------------------------------------------------------------------- ours


def padded_batch(b: dict, buckets) -> dict:
    """The input pipeline's padded batch: every column padded to the smallest bucket that fits."""
    from trainer.data.padding import bucket_length

    L = bucket_length(longest_text(b), buckets)
    d = {}
    for k, col in enumerate(COLUMNS):
        ids, ln = b[col]
        d[f"{col}_ids"] = ids[:, :L]
        d[f"{col}_mask"] = (np.arange(L)[None, :] < ln[:, None]).astype(np.int32)
        d[f"{col}_fp"] = np.arange(len(ln), dtype=np.int32) + k * len(ln)
    return d


def batch_shape(d: dict, plan, n_shards: int):
    """The program shape of a (packed or padded) batch, as trainer/data/shapes.py labels it."""
    from trainer.data.shapes import Shape

    kind = "triplet" if "negative_fp" in d else "pair"
    if "packed_ids" in d:
        _, rows, length = np.shape(d["packed_ids"])
        return Shape(kind, True, rows, length, plan.packed_chunks(rows, length))
    batch, length = np.shape(d["anchor_ids"])
    chunk = plan.padded_chunk(2 if kind == "pair" else 3, length)
    return Shape(kind, False, batch // n_shards, length, batch // chunk if chunk else 1)


def per_call(shape, batch: int, n_shards: int) -> tuple[int, float, float]:
    """(encoder calls, texts per call, tokens per call) of one step of `shape` (each call counted once,
    though gradient caching runs it twice). Packed: a chunk is rows of every column; padded: a chunk
    is texts of one column."""
    if shape.packed:
        return shape.chunks, shape.columns * batch / shape.chunks, shape.rows * n_shards * shape.length / shape.chunks
    texts = batch / shape.chunks
    return shape.columns * shape.chunks, texts, texts * shape.length


def run_ours(args, case) -> dict:
    import jax
    import jax.numpy as jnp

    from trainer.config import TrainConfig
    from trainer.data.padding import effective_buckets
    from trainer.data.shapes import Chunking, batch_packer
    from trainer.mesh import create_mesh, data_shards, shard_batch
    from trainer.model.hf_loading import init_random
    from trainer.model.modeling import EncoderConfig
    from trainer.train.train_step import create_train_state, make_train_step

    mt, h, nl, nh, inter, vocab, maxpos, pad = CASES[case["model"]]
    enc = EncoderConfig(
        model_type=mt,
        vocab_size=vocab,
        hidden_size=h,
        num_hidden_layers=nl,
        num_attention_heads=nh,
        intermediate_size=inter,
        max_position_embeddings=maxpos,
        type_vocab_size=1 if mt == "roberta" else 2,
        pad_token_id=pad,
    )
    B, m = case["batch"], case["chunk"]
    raw = synthetic_batches(args.steps + WARMUP_BATCHES, B, args.median_len, args.max_len, vocab, pad)[WARMUP_BATCHES:]
    # Per-call work matched to ST's mini-batch of m texts (module docstring): a token budget when packed.
    chunk_tokens = 0
    if m and (args.packing or case.get("chunk_tokens")):
        chunk_tokens = case.get("chunk_tokens") or m * min(longest_text(b) for b in raw)
    dtype = "float32" if args.smoke else "bfloat16"
    cfg = TrainConfig(
        batch_size=B,
        dtype=dtype,
        max_seq_length=args.max_len,
        packing=bool(args.packing),
        grad_cache_chunk=0 if chunk_tokens else m,
        chunk_tokens=chunk_tokens,
        remat=args.remat,
        learning_rate=2e-5,
        warmup_steps=10,
        train_steps=100_000,
    )
    pre = init_random(enc, seed=0, dtype=jnp.bfloat16 if dtype == "bfloat16" else jnp.float32, remat=cfg.remat)
    mesh = create_mesh(jax.devices()[:1])  # one device, like ST
    n_shards = data_shards(mesh)
    plan = Chunking.from_config(cfg, n_shards)
    buckets = effective_buckets(cfg.bucket_lengths, cfg.max_seq_length)
    pack = batch_packer(cfg, n_shards, n_shards, pad) if cfg.packing else (lambda d: d)

    # Host side, before timing (the trainer builds and packs batches on its prefetch thread).
    batches = [pack(padded_batch(b, buckets)) for b in raw]
    shapes = [batch_shape(d, plan, n_shards) for d in batches]
    compiled = sorted(set(shapes))
    calls = [per_call(s, B, n_shards) for s in shapes]
    flops = sum(step_flops(enc, s.rows * n_shards if s.packed else s.columns * B, s.length)[0] for s in shapes)

    state = create_train_state(pre.params["params"], cfg, mesh)
    step = make_train_step(pre.model, cfg, mesh)
    t0 = time.perf_counter()
    for s in compiled:  # compile every timed shape: one warm-up step on a batch of each (the state advances)
        state, metrics = step(state, shard_batch(batches[shapes.index(s)], mesh))
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0

    compiles = {"timing": False, "n": 0}

    def on_event(event: str, _secs: float, **_kw) -> None:
        if compiles["timing"] and event == "/jax/core/compile/backend_compile_duration":
            compiles["n"] += 1

    jax.monitoring.register_event_duration_secs_listener(on_event)
    cache_size = getattr(step, "_cache_size", lambda: 0)
    cached_programs = cache_size()
    compiles["timing"] = True
    t0 = time.perf_counter()
    for d in batches:
        state, metrics = step(state, shard_batch(d, mesh))
    jax.block_until_ready(metrics)
    dt = time.perf_counter() - t0
    compiles["timing"] = False
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "side": "ours",
        "pairs_per_s": args.steps * B / dt,
        "step_s": dt / args.steps,
        "compile_s": compile_s,
        "loss": float(metrics["loss"]),
        "finite": bool(metrics["finite"]),
        "flops_per_s": flops / dt,
        "peak_mem_gb": stats.get("peak_bytes_in_use", 0) / 2**30,
        "device": str(jax.devices()[0].device_kind),
        "compiled_shapes": [s.label for s in compiled],
        "timed_shapes": [s.label for s in shapes],
        "compiles_during_timing": max(compiles["n"], cache_size() - cached_programs),
        "grad_cache_chunk": cfg.grad_cache_chunk,
        "chunk_tokens": cfg.chunk_tokens,
        "calls_per_step": float(np.mean([c[0] for c in calls])),
        "texts_per_call": float(np.mean([c[1] for c in calls])),
        "tokens_per_call": float(np.mean([c[2] for c in calls])),
        "max_tokens_per_call": float(max(c[2] for c in calls)),
    }


# --------------------------------------------------------------------------------------------- driver


def peak_tflops(device_name: str, flag: float | None) -> float | None:
    if flag:
        return flag
    name = device_name.upper()
    if "H100" in name or "H200" in name or "GH200" in name:
        return 989.0
    if "A100" in name:
        return 312.0
    return None


def fmt(r: dict) -> str:
    if "pairs_per_s" not in r:
        return r.get("error", "skipped")
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
    return f"{r['pairs_per_s']:.1f} pairs/s, MFU {mfu}, peak {r['peak_mem_gb']:.1f} GB"


def fmt_calls(r: dict) -> str:
    if "texts_per_call" not in r:
        return "-"
    return f"~{r['texts_per_call']:.0f} ({r['calls_per_step']:.4g} calls/step, <={r['max_tokens_per_call']:.0f} tokens)"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="minilm,large")
    ap.add_argument("--batch_size", type=int, default=1024)
    ap.add_argument(
        "--steps",
        type=int,
        default=5,
        help="timed steps per side (after the warm-up: ours one step per distinct batch shape, ST 2)",
    )
    ap.add_argument("--median_len", type=int, default=24)
    ap.add_argument("--max_len", type=int, default=128)
    ap.add_argument(
        "--grad_cache_chunk",
        type=int,
        default=256,
        help="ST's mini_batch_size m, large case; ours gets the matching per-call budget (docstring)",
    )
    ap.add_argument("--minilm_chunk", type=int, default=0, help="0: plain step for the MiniLM case")
    ap.add_argument(
        "--chunk_tokens",
        type=int,
        default=0,
        help="ours, cached cases: tokens per encoder pass (per device = global on one GPU); "
        "0: m x the shortest L_st of the timed batches (packed) / grad_cache_chunk=m (padded)",
    )
    ap.add_argument(
        "--remat",
        default="none",
        choices=("none", "dots", "full"),
        help="ours: recompute parts of each encoder block in the backward pass",
    )
    ap.add_argument("--packing", type=int, default=1, help="ours: 1 packs texts into rows (the trainer's default)")
    ap.add_argument("--peak_tflops", type=float, default=None)
    ap.add_argument("--sides", default="ours,theirs")
    ap.add_argument("--smoke", action="store_true", help="tiny model, batch 16, CPU, float32")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--case_json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        case = json.loads(args.case_json)
        res = run_ours(args, case) if args.worker == "ours" else run_theirs(args, case)
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    if args.smoke:
        cases = [
            {"name": "tiny", "model": "tiny", "batch": 16, "chunk": 0},
            {"name": "tiny-cached", "model": "tiny", "batch": 16, "chunk": 8, "chunk_tokens": args.chunk_tokens},
        ]
        args.max_len, args.median_len = min(args.max_len, 32), min(args.median_len, 10)
    else:
        cases = []
        for name in args.cases.split(","):
            chunk = args.minilm_chunk if name == "minilm" else args.grad_cache_chunk
            cases.append(
                {
                    "name": name,
                    "model": name,
                    "batch": args.batch_size,
                    "chunk": chunk,
                    "chunk_tokens": args.chunk_tokens if chunk else 0,
                }
            )
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
    if args.smoke:
        env["JAX_PLATFORMS"] = "cpu"
    passthrough = [
        f"--steps={args.steps}",
        f"--median_len={args.median_len}",
        f"--max_len={args.max_len}",
        f"--remat={args.remat}",
        f"--packing={args.packing}",
    ] + ["--smoke"] * args.smoke
    rows = []
    t_start = time.perf_counter()
    for case in cases:
        res = {}
        for side in args.sides.split(","):
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                f"--worker={side}",
                f"--case_json={json.dumps(case)}",
                *passthrough,
            ]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                tail = (proc.stderr or proc.stdout)[-1500:]
                oom = "out of memory" in tail.lower() or "RESOURCE_EXHAUSTED" in tail
                res[side] = {"side": side, "error": "out of memory" if oom else f"failed (rc {proc.returncode})"}
                print(f"[{case['name']}/{side}] {res[side]['error']}:\n{tail}", file=sys.stderr)
            else:
                res[side] = json.loads(line[len("RESULT ") :])
        rows.append((case, res))
        ours, theirs = res.get("ours", {}), res.get("theirs", {})
        peak = peak_tflops(ours.get("device") or theirs.get("device") or "", args.peak_tflops)
        for r in (ours, theirs):
            if "pairs_per_s" in r:
                r["mfu"] = r["flops_per_s"] / (peak * 1e12) if peak else None
        ratio = (
            ours["pairs_per_s"] / theirs["pairs_per_s"] if "pairs_per_s" in ours and "pairs_per_s" in theirs else None
        )
        summary = {
            "case": case["name"],
            "batch": case["batch"],
            "grad_cache_chunk": case["chunk"],
            "chunk_tokens": ours.get("chunk_tokens"),
            "ours": ours,
            "theirs": theirs,
            "ratio": ratio,
        }
        print("SUMMARY " + json.dumps(summary), flush=True)

        head = f"{case['name']:>12} batch {case['batch']} chunk {case['chunk'] or '-'}"
        print(
            f"{head}: ours {fmt(ours)} | sentence-transformers {fmt(theirs)}"
            + (f" | ratio {ratio:.2f}x" if ratio else ""),
            flush=True,
        )
        if "compiled_shapes" in ours:
            print(
                f"{'':>12} ours compiled {len(ours['compiled_shapes'])} shape(s) before timing: "
                f"{', '.join(ours['compiled_shapes'])}; {ours['compiles_during_timing']} compiles during timing; "
                f"chunk_tokens {ours['chunk_tokens'] or '-'}, grad_cache_chunk {ours['grad_cache_chunk'] or '-'}",
                flush=True,
            )
        print(f"{'':>12} texts per encoder call: ours {fmt_calls(ours)}, ST {fmt_calls(theirs)}", flush=True)
    print(f"total {time.perf_counter() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
