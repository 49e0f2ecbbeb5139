"""Accelerator benchmark: our train step against sentence-transformers training on one GPU.

Runs without TensorFlow (JAX, PyTorch, sentence-transformers only) and needs no network: models get
random weights from their configurations (speed does not depend on the values), batches are
synthetic token ids with realistic lengths (log-normal, median --median_len tokens, cut at
--max_len); our side packs each batch into rows of whole texts as the trainer does (--packing=0:
pads it to the smallest bucket, 32/64/128, that fits), ST pads each column to its longest text.
Our FLOPs count what runs: packed rows (or padded texts) at their full length.

Cases (each side of each case runs in its own subprocess, so that JAX's and PyTorch's allocators
never share the GPU and the peak-memory figures are clean):
  minilm: all-MiniLM-L6-v2-sized BERT (6 x 384), global batch 1024; plain step on both sides
          (ST: MultipleNegativesRankingLoss), or gradient caching if --minilm_chunk is set.
  large:  roberta-large-sized (24 x 1024), global batch 1024 with gradient caching on both sides
          (ours: --grad_cache_chunk; ST: CachedMultipleNegativesRankingLoss(mini_batch_size=same)).
Precision: ours computes in bfloat16 with float32 parameters, optimizer state, similarity and loss;
PyTorch runs forward and backward under torch.autocast(bfloat16) with float32 parameters.
Both: pair batches, symmetric loss (query_to_doc + doc_to_query, per_direction), scale 20, AdamW
with clipping at 1.0, dropout on.

Printed per case: pairs/s of both, ratio, MFU, peak GPU memory. MFU = model FLOPs / (time x peak):
model FLOPs per step = 6 x (non-embedding parameters) x (padded tokens) + 12 x layers x hidden x
sum(padded length^2) (attention scores and values, forward + backward); the extra forward pass of
gradient caching is not counted (standard MFU). Peak: --peak_tflops, else 989 for H100/H200
(dense bf16), 312 for A100.

  python bench/bench_gpu.py                     # both cases, ~5-8 min on one H100/H200
  python bench/bench_gpu.py --cases=large --steps=3 --grad_cache_chunk=256
  python bench/bench_gpu.py --smoke             # tiny model on CPU: checks the script end to end
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

CASES = {
    # name: (model_type, hidden, layers, heads, intermediate, vocab, max_positions, pad_id)
    "minilm": ("bert", 384, 6, 12, 1536, 30522, 512, 0),
    "large": ("roberta", 1024, 24, 16, 4096, 50265, 514, 1),
    "tiny": ("bert", 32, 2, 2, 64, 1000, 128, 0),
}
BUCKETS = (32, 64, 128)


def synthetic_batches(n: int, batch: int, median_len: int, max_len: int, vocab: int, pad: int, seed: int = 0):
    """n pair batches: {column: (ids [B, Lmax] int32, lengths [B])} with log-normal text lengths."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        b = {}
        for col in ("anchor", "positive"):
            lengths = np.clip(np.round(rng.lognormal(np.log(median_len), 0.6, size=batch)), 4, max_len).astype(int)
            ids = rng.integers(5, vocab, size=(batch, max_len)).astype(np.int32)
            ids[:, 0] = 0 if pad != 0 else 101  # a CLS-like first token
            ids[np.arange(max_len)[None, :] >= lengths[:, None]] = pad
            b[col] = (ids, lengths)
        out.append(b)
    return out


def model_flops(n_nonembed: int, layers: int, hidden: int, padded_lengths: list[int]) -> float:
    tokens = sum(padded_lengths)
    return 6.0 * n_nonembed * tokens + 12.0 * layers * hidden * sum(l * l for l in padded_lengths)


def nonembed_params(hidden: int, layers: int, inter: int) -> int:
    per_layer = 4 * hidden * hidden + 4 * hidden + 2 * hidden * inter + inter + hidden + 4 * hidden
    return layers * per_layer


# --------------------------------------------------------------------------------------------- ours

def run_ours(args, case) -> dict:
    import jax
    import jax.numpy as jnp

    from trainer.config import TrainConfig
    from trainer.hf_loading import init_random
    from trainer.mesh import create_mesh
    from trainer.modeling import EncoderConfig
    from trainer.train_step import create_train_state, make_train_step

    mt, h, nl, nh, inter, vocab, maxpos, pad = CASES[case["model"]]
    enc = EncoderConfig(model_type=mt, vocab_size=vocab, hidden_size=h, num_hidden_layers=nl,
                        num_attention_heads=nh, intermediate_size=inter, max_position_embeddings=maxpos,
                        type_vocab_size=1 if mt == "roberta" else 2, pad_token_id=pad)
    dtype = "float32" if args.smoke else "bfloat16"
    cfg = TrainConfig(batch_size=case["batch"], dtype=dtype, grad_cache_chunk=case["chunk"],
                      learning_rate=2e-5, warmup_steps=10, train_steps=100_000)
    pre = init_random(enc, seed=0, dtype=jnp.bfloat16 if dtype == "bfloat16" else jnp.float32,
                      remat=args.remat)
    mesh = create_mesh()
    state = create_train_state(pre.params["params"], cfg, mesh)
    step = make_train_step(pre.model, cfg, mesh)
    raw = synthetic_batches(args.steps + 2, case["batch"], args.median_len, args.max_len, vocab, pad)
    from trainer.batching import effective_buckets
    from trainer.mesh import data_shards
    from trainer.packing import pack_batch

    buckets = effective_buckets(BUCKETS, args.max_len)
    n_chunks = case["batch"] // case["chunk"] if case["chunk"] else 1

    def prepare(d):  # the train loop's host-side packing (timed with the step, as the loop pays it)
        if not args.packing:
            return d
        return pack_batch(d, data_shards(mesh), buckets, cfg.pack_min_row_length, pad, row_multiple=n_chunks)

    batches, lengths = [], []
    for b in raw:
        longest = max(int(b[c][1].max()) for c in b)
        L = next(x for x in BUCKETS + (args.max_len,) if x >= longest)
        d = {}
        for k, col in enumerate(("anchor", "positive")):
            ids, ln = b[col]
            d[f"{col}_ids"] = ids[:, :L]
            d[f"{col}_mask"] = (np.arange(L)[None, :] < ln[:, None]).astype(np.int32)
            d[f"{col}_fp"] = np.arange(case["batch"], dtype=np.int32) + k * case["batch"]
        batches.append(d)
        if args.packing:  # FLOPs of what runs: packed rows of L' tokens
            rows, row_len = prepare(d)["packed_ids"].shape[-2:]
            lengths.append([row_len] * (rows * data_shards(mesh)))
        else:
            lengths.append([L] * (2 * case["batch"]))
    t0 = time.perf_counter()
    for d in batches[:2]:  # compile (and a second warm step)
        state, m = step(state, prepare(d))
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for d in batches[2:]:
        state, m = step(state, prepare(d))
    jax.block_until_ready(m)
    dt = time.perf_counter() - t0
    stats = jax.devices()[0].memory_stats() or {}
    flops = sum(model_flops(nonembed_params(h, nl, inter), nl, h, ls) for ls in lengths[2:])
    return {"side": "ours", "pairs_per_s": args.steps * case["batch"] / dt, "step_s": dt / args.steps,
            "compile_s": compile_s, "loss": float(m["loss"]), "finite": bool(m["finite"]),
            "flops_per_s": flops / dt, "peak_mem_gb": stats.get("peak_bytes_in_use", 0) / 2**30,
            "device": str(jax.devices()[0].device_kind)}


# --------------------------------------------------------------------------------------------- theirs

def _st_model_dir(case_name: str, tmp: str) -> str:
    """A random-weight HF model plus a throwaway WordPiece tokenizer (ids are fed directly)."""
    import transformers

    mt, h, nl, nh, inter, vocab, maxpos, pad = CASES[case_name]
    cls = transformers.BertConfig if mt == "bert" else transformers.RobertaConfig
    cfg = cls(vocab_size=vocab, hidden_size=h, num_hidden_layers=nl, num_attention_heads=nh,
              intermediate_size=inter, max_position_embeddings=maxpos, pad_token_id=pad,
              type_vocab_size=1 if mt == "roberta" else 2)
    transformers.AutoModel.from_config(cfg).save_pretrained(tmp)
    vocab_file = os.path.join(tmp, "vocab.txt")
    with open(vocab_file, "w") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(50)]) + "\n")
    transformers.BertTokenizerFast(vocab_file=vocab_file).save_pretrained(tmp)
    return tmp


def run_theirs(args, case) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses.cached_multiple_negatives_ranking import (
        CachedMultipleNegativesRankingLoss,
    )
    from sentence_transformers.sentence_transformer.losses.multiple_negatives_ranking import (
        MultipleNegativesRankingLoss,
    )

    device = "cpu" if args.smoke else "cuda"
    torch.manual_seed(0)
    mt, h, nl, nh, inter, vocab, maxpos, pad = CASES[case["model"]]
    with tempfile.TemporaryDirectory() as tmp:
        model = SentenceTransformer(_st_model_dir(case["model"], tmp), device=device)
    model.max_seq_length = args.max_len
    model.train()
    kw = dict(scale=20.0, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction")
    loss_fn = (CachedMultipleNegativesRankingLoss(model, mini_batch_size=case["chunk"], **kw) if case["chunk"]
               else MultipleNegativesRankingLoss(model, **kw))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01, eps=1e-6,
                            fused=device == "cuda")
    raw = synthetic_batches(args.steps + 2, case["batch"], args.median_len, args.max_len, vocab, pad)
    batches, lengths = [], []
    for b in raw:
        cols = []
        for col in ("anchor", "positive"):
            ids, ln = b[col]
            L = int(ln.max())
            cols.append({"input_ids": torch.tensor(ids[:, :L], dtype=torch.long, device=device),
                         "attention_mask": torch.tensor((np.arange(L)[None, :] < ln[:, None]).astype(np.int64),
                                                        device=device)})
            lengths.append([L] * case["batch"])
        batches.append(cols)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=not args.smoke)

    def step(cols):
        with autocast:  # CachedMNRL replays forwards inside backward: keep both under autocast
            loss = loss_fn(cols, None)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for cols in batches[:2]:
        loss = step(cols)
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for cols in batches[2:]:
        loss = step(cols)
    sync()
    dt = time.perf_counter() - t0
    lens = [l for ls in lengths[4:] for l in ls]
    flops = model_flops(nonembed_params(h, nl, inter), nl, h, lens)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    return {"side": "theirs", "pairs_per_s": args.steps * case["batch"] / dt, "step_s": dt / args.steps,
            "loss": float(loss.item()), "flops_per_s": flops / dt, "peak_mem_gb": peak,
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}


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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="minilm,large")
    ap.add_argument("--batch_size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per side (after 2 warm-up steps)")
    ap.add_argument("--median_len", type=int, default=24)
    ap.add_argument("--max_len", type=int, default=128)
    ap.add_argument("--grad_cache_chunk", type=int, default=256, help="texts per chunk, large case (both sides)")
    ap.add_argument("--minilm_chunk", type=int, default=0, help="0: plain step for the MiniLM case")
    ap.add_argument("--remat", action="store_true", help="our encoder recomputes block activations")
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
        cases = [{"name": "tiny", "model": "tiny", "batch": 16, "chunk": 0},
                 {"name": "tiny-cached", "model": "tiny", "batch": 16, "chunk": 8}]
        args.max_len, args.median_len = min(args.max_len, 32), min(args.median_len, 10)
    else:
        cases = []
        for name in args.cases.split(","):
            chunk = args.minilm_chunk if name == "minilm" else args.grad_cache_chunk
            cases.append({"name": name, "model": name, "batch": args.batch_size, "chunk": chunk})
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
    if args.smoke:
        env["JAX_PLATFORMS"] = "cpu"
    passthrough = [f"--steps={args.steps}", f"--median_len={args.median_len}", f"--max_len={args.max_len}"]
    passthrough += ["--smoke"] * args.smoke + ["--remat"] * args.remat + [f"--packing={args.packing}"]
    rows = []
    t_start = time.perf_counter()
    for case in cases:
        res = {}
        for side in args.sides.split(","):
            cmd = [sys.executable, os.path.abspath(__file__), f"--worker={side}", f"--case_json={json.dumps(case)}",
                   *passthrough]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                tail = (proc.stderr or proc.stdout)[-1500:]
                oom = "out of memory" in tail.lower() or "RESOURCE_EXHAUSTED" in tail
                res[side] = {"side": side, "error": "out of memory" if oom else f"failed (rc {proc.returncode})"}
                print(f"[{case['name']}/{side}] {res[side]['error']}:\n{tail}", file=sys.stderr)
            else:
                res[side] = json.loads(line[len("RESULT "):])
        rows.append((case, res))
        ours, theirs = res.get("ours", {}), res.get("theirs", {})
        peak = peak_tflops(ours.get("device") or theirs.get("device") or "", args.peak_tflops)
        for r in (ours, theirs):
            if "pairs_per_s" in r:
                r["mfu"] = r["flops_per_s"] / (peak * 1e12) if peak else None
        ratio = (ours["pairs_per_s"] / theirs["pairs_per_s"]
                 if "pairs_per_s" in ours and "pairs_per_s" in theirs else None)
        summary = {"case": case["name"], "batch": case["batch"], "grad_cache_chunk": case["chunk"],
                   "ours": ours, "theirs": theirs, "ratio": ratio}
        print("SUMMARY " + json.dumps(summary), flush=True)

        def fmt(r):
            if "pairs_per_s" not in r:
                return r.get("error", "skipped")
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
            return f"{r['pairs_per_s']:.1f} pairs/s, MFU {mfu}, peak {r['peak_mem_gb']:.1f} GB"
        print(f"{case['name']:>12} batch {case['batch']} chunk {case['chunk'] or '-'}: ours {fmt(ours)} | "
              f"sentence-transformers {fmt(theirs)} | ratio {ratio:.2f}x" if ratio else
              f"{case['name']:>12}: ours {fmt(ours)} | sentence-transformers {fmt(theirs)}", flush=True)
    print(f"total {time.perf_counter() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
