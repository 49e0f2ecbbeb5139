"""Retrieval on BEIR-format data sets (trainer/evaluators/ir_data.py): nDCG@10, MRR@10, recall@100 and
MAP@100 of each query's ranking of the whole corpus by cosine similarity.

The definitions are sentence-transformers' InformationRetrievalEvaluator's, so the numbers match it
(tests/test_evaluators_ir.py): binary relevance; equal scores ranked by ascending corpus id (string
order); nDCG's ideal ranking puts min(|relevant|, 10) relevant documents first; MAP@100 divides by
min(100, |relevant|); means over the queries that have a relevant document. The corpus is scored in
chunks, so memory stays [queries, chunk]. `IrEvaluator` tokenizes each set once and embeds it with
the parameters it is given (metrics eval/ir/<set name>/<metric>), in training (--ir_eval) and on the
command line (trainer/cli.py: set-ir-eval, python -m trainer.cli ir-eval). A query prompt and a corpus
prompt, when given, are prepended to the texts before tokenizing, as sentence-transformers'
`encode(prompt=...)` does (its evaluator's query_prompt_name / corpus_prompt_name).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from trainer.evaluators.ir_data import BeirDataset, read_beir
from trainer.model.encode import encode_ids, tokenize
from trainer.train.matryoshka import dim_metric, truncate

METRICS = ("ndcg@10", "mrr@10", "recall@100", "map@100")
MAX_K = 100


def rank_corpus(
    queries: np.ndarray, corpus: np.ndarray, corpus_ids: Sequence[str], k: int = MAX_K, chunk: int = 50_000
) -> np.ndarray:
    """Indices [Q, min(k, N)] of each query's best corpus rows, best first: by score (a dot product of
    normalised embeddings), then by ascending corpus id."""
    n = len(corpus_ids)
    k = min(k, n)
    id_rank = np.empty(n, np.int64)
    id_rank[sorted(range(n), key=corpus_ids.__getitem__)] = np.arange(n)
    q = np.asarray(queries, np.float32)
    best_i, best_s = np.zeros((len(q), 0), np.int64), np.zeros((len(q), 0), np.float32)
    for start in range(0, n, chunk):
        s = q @ np.asarray(corpus[start : start + chunk], np.float32).T
        kk = min(k, s.shape[1])
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        # argpartition cuts ties at the k-th score arbitrarily: such rows choose among the tied by id.
        threshold = np.take_along_axis(s, top, 1).min(axis=1)
        for r in np.nonzero((s >= threshold[:, None]).sum(axis=1) > kk)[0]:
            cand = np.nonzero(s[r] >= threshold[r])[0]
            top[r] = cand[np.lexsort((id_rank[start + cand], -s[r, cand]))[:kk]]
        idx = np.concatenate([best_i, top + start], axis=1)
        scores = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
        order = np.lexsort((id_rank[idx], -scores), axis=1)[:, :k]
        best_i, best_s = np.take_along_axis(idx, order, 1), np.take_along_axis(scores, order, 1)
    return best_i


def ir_metrics(ranked: np.ndarray, data: BeirDataset) -> dict[str, float]:
    """METRICS of rankings [Q, K] (corpus indices, best first; rows in data.query_ids order)."""
    hits = np.zeros((len(data.query_ids), MAX_K), bool)
    for row, (qid, ranking) in enumerate(zip(data.query_ids, ranked)):
        relevant = data.relevant[qid]
        hits[row, : ranking.shape[0]] = [data.corpus_ids[j] in relevant for j in ranking[:MAX_K]]
    n_rel = np.array([len(data.relevant[q]) for q in data.query_ids])
    discount = 1.0 / np.log2(np.arange(10) + 2.0)
    ndcg = (hits[:, :10] @ discount) / np.cumsum(discount)[np.minimum(n_rel, 10) - 1]
    first = hits[:, :10].argmax(axis=1)
    mrr = np.where(hits[:, :10].any(axis=1), 1.0 / (first + 1), 0.0)
    recall = hits.sum(axis=1) / n_rel
    precision_at_hits = np.cumsum(hits, axis=1) / np.arange(1, MAX_K + 1) * hits
    ap = precision_at_hits.sum(axis=1) / np.minimum(n_rel, MAX_K)
    return {name: float(v.mean()) for name, v in zip(METRICS, (ndcg, mrr, recall, ap))}


def embedder(
    model,
    variables: Any,
    pad_id: int,
    batch_size: int,
    max_seq_length: int,
    progress: bool = False,
    mesh: Any = None,
) -> Callable[[list[list[int]], str], np.ndarray]:
    """embed(token ids, label) -> embeddings, in slices of 16 batches so a progress bar (stderr) can move.
    The texts are sorted by length (longest first) before they are sliced, so each slice's calls pad as
    little as one pass over the whole set would (a slice of texts in file order spans every length).
    With a `mesh` (one host's devices) each call's rows are split over its devices (encode_ids)."""

    def embed(ids: list[list[int]], label: str) -> np.ndarray:
        order = np.argsort([-len(x) for x in ids], kind="stable")
        step = batch_size * 16
        out = np.empty((len(ids), model.config.hidden_size), np.float32)
        with tqdm(total=len(ids), desc=label, unit="text", disable=not progress) as bar:
            for i in range(0, len(ids), step):
                part = order[i : i + step]
                out[part] = encode_ids(
                    model, variables, [ids[j] for j in part], pad_id, batch_size, max_seq_length, mesh=mesh
                )
                bar.update(len(part))
        return out

    return embed


class IrEvaluator:
    """eval/ir/<name>/{ndcg@10, mrr@10, recall@100, map@100} per BEIR directory, on given parameters."""

    def __init__(
        self,
        model,
        tokenizer,
        sets: Sequence[str | BeirDataset],
        max_seq_length: int,
        batch_size: int = 64,
        split: str = "test",
        query_prompt: str = "",
        corpus_prompt: str = "",
        dims: Sequence[int] = (),
        mesh: Any = None,
    ):
        """`sets`: BEIR directories (read with `split`'s qrels) or data sets already read; the prompts
        are prepended to every query / document (counting toward max_seq_length); `dims`: Matryoshka
        sizes `run` reports besides the full one (trainer/train/matryoshka.py); `mesh`: one host's
        devices to split each call's rows over (default: JAX's default device)."""
        self.model, self.batch_size, self.mesh = model, batch_size, mesh
        self.dims = (None,) + tuple(dims)
        self.max_seq_length = min(max_seq_length, model.config.max_input_length)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else model.config.pad_token_id
        self.sets = []
        for path in sets:
            data = path if isinstance(path, BeirDataset) else read_beir(path, split)
            self.sets.append(
                (
                    data,
                    tokenize(tokenizer, [query_prompt + t for t in data.queries], self.max_seq_length),
                    tokenize(tokenizer, [corpus_prompt + t for t in data.corpus], self.max_seq_length),
                )
            )

    def evaluate(self, params: Any, progress: bool = False) -> dict[str, dict[str, float]]:
        """Set name -> metrics; `params` as the model's apply takes them ({"params": ...})."""
        return self.evaluate_sizes(params, (None,), progress)[None]

    def evaluate_sizes(
        self, params: Any, dims: Sequence[int | None], progress: bool = False
    ) -> dict[int | None, dict[str, dict[str, float]]]:
        """Size (None: the full embedding; else a Matryoshka size) -> set name -> metrics; each set is
        embedded once."""
        embed = embedder(self.model, params, self.pad_id, self.batch_size, self.max_seq_length, progress, self.mesh)
        out: dict[int | None, dict[str, dict[str, float]]] = {dim: {} for dim in dims}
        for data, q, c in self.sets:
            queries, corpus = embed(q, "queries"), embed(c, "corpus")
            for dim in dims:
                ranked = rank_corpus(truncate(queries, dim), truncate(corpus, dim), data.corpus_ids)
                out[dim][data.name] = ir_metrics(ranked, data)
        return out

    def run(self, params: Any) -> dict[str, float]:
        """eval/ir/<set>/<metric>, and eval/dim<d>/ir/<set>/<metric> per Matryoshka size of `dims`."""
        per_dim = self.evaluate_sizes({"params": params}, self.dims)
        return {
            dim_metric(f"eval/ir/{name}/{k}", dim): v
            for dim, sets in per_dim.items()
            for name, m in sets.items()
            for k, v in m.items()
        }
