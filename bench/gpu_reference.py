"""The sentence-transformers side of bench/bench_gpu.py: MNRL / cached MNRL training in PyTorch on
the same synthetic batches, timed and counted the same way as ours."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from gpu_cases import CASES, COLUMNS, WARMUP_BATCHES, encoder_shape, synthetic_batches

from trainer.plan.flops import step_flops


def _st_model_dir(case_name: str, tmp: str) -> str:
    """A random-weight HF model plus a throwaway WordPiece tokenizer (ids are fed directly)."""
    import transformers

    mt, h, nl, nh, inter, vocab, maxpos, pad = CASES[case_name]
    cls = transformers.BertConfig if mt == "bert" else transformers.RobertaConfig
    cfg = cls(
        vocab_size=vocab,
        hidden_size=h,
        num_hidden_layers=nl,
        num_attention_heads=nh,
        intermediate_size=inter,
        max_position_embeddings=maxpos,
        pad_token_id=pad,
        type_vocab_size=1 if mt == "roberta" else 2,
    )
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
    loss_fn = (
        CachedMultipleNegativesRankingLoss(model, mini_batch_size=case["chunk"], **kw)
        if case["chunk"]
        else MultipleNegativesRankingLoss(model, **kw)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01, eps=1e-6, fused=device == "cuda")
    raw = synthetic_batches(args.steps + WARMUP_BATCHES, case["batch"], args.median_len, args.max_len, vocab, pad)
    batches = []
    for b in raw:
        cols = []
        for col in COLUMNS:
            ids, ln = b[col]
            L = int(ln.max())
            cols.append(
                {
                    "input_ids": torch.tensor(ids[:, :L], dtype=torch.long, device=device),
                    "attention_mask": torch.tensor(
                        (np.arange(L)[None, :] < ln[:, None]).astype(np.int64), device=device
                    ),
                }
            )
        batches.append(cols)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=not args.smoke)

    # The encoder calls that build the gradient (gradient caching's first, no-grad pass is not
    # counted: MFU convention), with their [texts, padded length].
    calls: list[tuple[int, int]] = []

    def record(_module, inputs):
        if torch.is_grad_enabled() and inputs and isinstance(inputs[0], dict) and "input_ids" in inputs[0]:
            calls.append(tuple(inputs[0]["input_ids"].shape))

    model.register_forward_pre_hook(record)

    def step(cols):
        with autocast:  # CachedMNRL replays forwards inside backward: keep both under autocast
            loss = loss_fn(cols, None)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for cols in batches[:WARMUP_BATCHES]:
        loss = step(cols)
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    calls.clear()
    t0 = time.perf_counter()
    for cols in batches[WARMUP_BATCHES:]:
        loss = step(cols)
    sync()
    dt = time.perf_counter() - t0
    enc = encoder_shape(case["model"])
    flops = sum(step_flops(enc, n, L)[0] for n, L in calls)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    return {
        "side": "theirs",
        "pairs_per_s": args.steps * case["batch"] / dt,
        "step_s": dt / args.steps,
        "loss": float(loss.item()),
        "flops_per_s": flops / dt,
        "peak_mem_gb": peak,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "mini_batch_size": case["chunk"],
        "calls_per_step": len(calls) / args.steps,
        "texts_per_call": float(np.mean([n for n, _ in calls])),
        "tokens_per_call": float(np.mean([n * L for n, L in calls])),
        "max_tokens_per_call": float(max(n * L for n, L in calls)),
    }
