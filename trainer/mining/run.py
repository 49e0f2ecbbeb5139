"""A whole mining run: read -> embed (shards, resumable) -> search (shards, resumable) -> filter ->
`OUT.jsonl.gz` (query_with_negatives lines) and `OUT.report.json`.

The work directory (default `OUT.work/`, local or gs://) holds `embeddings/` (the pool's and the
anchors' embedding shards, with `plan.json`: model fingerprint, max_seq_length, shard size and the
fingerprints of the texts) and `search/` (each anchor shard's top-k, with the search's `plan.json`).
Rerunning the same command continues from the shards there; a run whose embeddings would differ is
refused (or, with `overwrite`, started afresh); other search or filter settings reuse the embeddings.

Prompts (sentence-transformers' `query_prompt(_name)` / `corpus_prompt(_name)`) are prepended to the
anchors and to the pool texts before embedding only: fingerprints, the exclusions and the output
lines are the plain texts (the Beam job adds a corpus's own prompts when it tokenizes them).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import logging
import time
from typing import Any, Callable

import numpy as np

from pipeline import storage
from pipeline.model_source import DEMO_MODEL
from pipeline.user_errors import UserError
from trainer.mining import report as report_lib
from trainer.mining.corpus import MAX_LINE_BYTES, MiningCorpus, positive_matrix, read_corpus
from trainer.mining.embeddings import EmbeddingShards, load_encoder
from trainer.mining.filters import COUNTED, FilterSettings, choose_negatives
from trainer.mining.search import Searcher, recall_against_exact

log = logging.getLogger(__name__)

PLAN_VERSION = 1
OUTPUT_SUFFIXES = (".jsonl.gz", ".jsonl")


@dataclasses.dataclass(frozen=True)
class MineSettings:
    input: str
    output: str
    model: str = DEMO_MODEL
    record_format: str = "pair"
    pool: str | None = None
    workdir: str | None = None  # None: OUT.work next to the output
    filters: FilterSettings = FilterSettings()
    max_seq_length: int | None = None  # None: the model's own
    batch_size: int = 64
    shard_size: int = 16384
    query_block: int = 1024
    seed: int = 0
    approx_recall: float | None = None  # jax.lax.approx_max_k's recall target; None: exact top_k
    recall_sample: int = 1000  # anchors searched both ways to measure the approximate search's recall
    device_pool_gib: float = 4.0  # pool blocks kept on each device across anchor shards, at most
    max_line_bytes: int = MAX_LINE_BYTES
    overwrite: bool = False
    progress: bool = True
    # Prompts, as sentence-transformers' mine_hard_negatives takes them: the anchors are embedded with
    # the query prompt, the pool with the corpus prompt. A name is looked up in the model's
    # config_sentence_transformers.json; a literal prompt overrides the name. None: no prompt.
    query_prompt_name: str | None = None
    query_prompt: str | None = None
    corpus_prompt_name: str | None = None
    corpus_prompt: str | None = None
    packing: bool = True  # encode several texts per row (trainer/model/encode.py); False: one per bucket-padded row

    def check(self) -> None:
        self.filters.check()
        if not self.output.endswith(OUTPUT_SUFFIXES):
            raise UserError(f"--output={self.output}: name it OUT.jsonl.gz (or OUT.jsonl)")
        for flag, value in (
            ("--batch_size", self.batch_size),
            ("--shard_size", self.shard_size),
            ("--query_block", self.query_block),
            ("--recall_sample", self.recall_sample),
        ):
            if value < 1:
                raise UserError(f"{flag} must be at least 1, got {value}")
        if self.approx_recall is not None and not 0 < self.approx_recall <= 1:
            raise UserError(f"--approx_recall must be in (0, 1], got {self.approx_recall}")

    @property
    def base(self) -> str:
        return next(self.output[: -len(s)] for s in OUTPUT_SUFFIXES if self.output.endswith(s))

    @property
    def report_path(self) -> str:
        return self.base + ".report.json"

    @property
    def work(self) -> str:
        return self.workdir or self.base + ".work"


@dataclasses.dataclass
class MiningResult:
    corpus: MiningCorpus
    report: dict
    # Only with mine(collect=True): per anchor, its chosen negatives (pool indices, best first) and
    # their scores, and its positives' scores (in corpus.positives order).
    negatives: list[list[int]] | None = None
    negative_scores: list[list[float]] | None = None
    positive_scores: list[list[float]] | None = None


def resolve_prompts(s: MineSettings, model_dir: str) -> dict[str, str]:
    """{"query": text, "corpus": text}: each role's literal prompt, else its prompt name looked up in the
    config_sentence_transformers.json of `model_dir` (a name it lacks is a UserError that lists the
    names it has), else ""."""
    from trainer.model.export import sentence_transformers_prompts
    from trainer.prompts import prompt_text

    table = sentence_transformers_prompts(model_dir)[0]
    out = {}
    for role in ("query", "corpus"):
        literal, name = getattr(s, f"{role}_prompt"), getattr(s, f"{role}_prompt_name")
        if literal is not None:
            if name:  # as sentence-transformers: the literal wins
                log.warning("--%s_prompt given: --%s_prompt_name=%s is ignored", role, role, name)
            out[role] = literal
        else:
            out[role] = prompt_text(
                table, name, f"{role}_prompt_name", f"{s.model}'s config_sentence_transformers.json"
            )
    return out


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _hosts() -> tuple[int, int]:
    """(process count, this process's index): several with jax.distributed (mine_main's
    --coordinator_address, or a TPU pod slice), each mining its share of the shards."""
    import jax

    return jax.process_count(), jax.process_index()


def _barrier(name: str) -> None:
    """Every process waits here for the others (their shards are written before they arrive)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _prepare(directory: str, plan: dict, overwrite: bool, what: str, refuse: bool, write: bool = True) -> None:
    """Keeps `directory` when its plan.json equals `plan`; else empties it (refusing when `refuse`
    and not `overwrite`) and writes the plan (only when `write`: one process of several; the others
    decide the same and refuse the same)."""
    path = storage.join(directory, "plan.json")
    if storage.exists(path):
        with storage.open_file(path, "r", encoding="utf-8") as f:
            if json.load(f) == plan:
                return
        if refuse and not overwrite:
            raise UserError(
                f"{directory} holds {what} of another run (other model, prompts, texts or shard size): "
                "pass --overwrite to start afresh, or another --workdir"
            )
    if write:
        storage.remove_dir(directory)
        storage.write_json(path, plan)


def _bar(enabled: bool, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="text", disable=not enabled, dynamic_ncols=True)


def _save_npz(path: str, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    storage.write_bytes(path, buf.getvalue())


def _load_npz(path: str) -> dict:
    with np.load(io.BytesIO(storage.read_bytes(path))) as z:
        return {k: z[k] for k in z.files}


def mine(s: MineSettings, mesh: Any = None, collect: bool = False) -> MiningResult:
    s.check()
    t0 = time.perf_counter()
    corpus = read_corpus(s.input, s.record_format, s.pool, s.max_line_bytes)
    read_s = time.perf_counter() - t0

    from trainer.mesh import local_mesh

    mesh = mesh if mesh is not None else local_mesh()
    t0 = time.perf_counter()
    encoder = load_encoder(s.model, s.max_seq_length, s.batch_size, mesh, s.packing)
    prompts = resolve_prompts(s, encoder.source_dir)
    model_s = time.perf_counter() - t0
    n_q, n_pool = len(corpus.queries), len(corpus.pool)
    emb_dir, search_dir = storage.join(s.work, "embeddings"), storage.join(s.work, "search")
    plan = {
        "version": PLAN_VERSION,
        "model_fingerprint": encoder.fingerprint,
        "max_seq_length": encoder.max_seq_length,
        "shard_size": s.shard_size,
        "pool": [n_pool, _digest(corpus.pool_fp)],
        "anchors": [n_q, _digest(corpus.query_fp)],
    }
    if any(prompts.values()):  # the texts prepended (absent without: work directories of older runs stay valid)
        plan["prompts"] = prompts
    # Several processes: each embeds and searches the shards i with i % processes == its index, in the
    # one (shared: gs:// or a shared file system) work directory; process 0 writes the output.
    n_proc, proc = _hosts()
    owned = lambda i: i % n_proc == proc  # noqa: E731
    _prepare(emb_dir, plan, s.overwrite, "embeddings", refuse=True, write=proc == 0)
    _barrier("mine: embeddings plan")
    pool_shards = EmbeddingShards(emb_dir, "pool", n_pool, s.shard_size)
    query_shards = EmbeddingShards(emb_dir, "anchors", n_q, s.shard_size)
    t0 = time.perf_counter()
    with _bar(s.progress, pool_shards.owned_rows(owned) + query_shards.owned_rows(owned), "embedding") as bar:
        embedded = pool_shards.compute(corpus.pool, encoder.prompted(prompts["corpus"]), bar.update, owned)
        embedded += query_shards.compute(corpus.queries, encoder.prompted(prompts["query"]), bar.update, owned)
    _barrier("mine: embeddings")
    embed_s = time.perf_counter() - t0

    f = s.filters
    range_max = f.window_range_max(corpus.max_positive_rows)
    k = f.window(corpus.max_positive_rows, n_pool)
    t0 = time.perf_counter()
    searched, search_info = _search(s, corpus, mesh, pool_shards, query_shards, emb_dir, search_dir, k, owned)
    _barrier("mine: search")
    search_s = time.perf_counter() - t0
    search_info.update(range_max=range_max, processes=n_proc)
    if proc != 0:  # process 0 filters and writes the output and the report
        log.info(
            "process %d of %d: embedded %d texts, searched %d anchors; process 0 writes %s",
            proc,
            n_proc,
            embedded,
            searched,
            s.output,
        )
        return MiningResult(corpus, {})

    t0 = time.perf_counter()
    result = MiningResult(corpus, {}, *([[] for _ in range(3)] if collect else [None] * 3))
    stats = _write(s, corpus, search_dir, k, range_max, result)
    write_s = time.perf_counter() - t0
    info = {
        "name": s.model,
        "fingerprint": encoder.fingerprint,
        "max_seq_length": encoder.max_seq_length,
        "dim": encoder.dim,
    }
    result.report = report_lib.build_report(
        settings={
            **{k_: v for k_, v in dataclasses.asdict(s).items() if k_ not in ("filters", "progress")},
            **dataclasses.asdict(f),
            "prompts": prompts,
        },
        model=info,
        read={
            "input": corpus.corpus_counts.to_json(),
            "pool": corpus.pool_counts.to_json() if corpus.pool_counts else None,
        },
        counts=stats["counts"],
        removed=stats["removed"],
        candidates=stats["candidates"],
        positive=stats["positive"],
        negative=stats["negative"],
        search=search_info,
        timing={
            "read_s": round(read_s, 3),
            "model_s": round(model_s, 3),
            "embed_s": round(embed_s, 3),
            "texts_embedded": embedded,
            "texts_per_s": round(embedded / embed_s, 1) if embedded else None,
            "search_s": round(search_s, 3),
            "anchors_searched": searched,
            "anchors_per_s": round(searched / search_s, 1) if searched else None,
            "filter_and_write_s": round(write_s, 3),
        },
        output={"path": s.output, "sha256": stats["sha256"]},
        entry=report_lib.data_config_entry(
            s.output, s.report_path, s.model, encoder.fingerprint, stats["sha256"], prompts
        ),
    )
    storage.write_json(s.report_path, result.report)
    return result


def _search(
    s: MineSettings,
    corpus: MiningCorpus,
    mesh,
    pool_shards: EmbeddingShards,
    query_shards: EmbeddingShards,
    emb_dir: str,
    search_dir: str,
    k: int,
    owned: Callable[[int], bool],
) -> tuple[int, dict]:
    """Top-k candidates of every anchor shard of this process not yet searched, each written to
    `search_dir`; returns the anchors searched now and the search's part of the report."""
    width = max(len(p) for p in corpus.positives)
    first = owned(0)  # process 0 (owner of shard 0) writes the search plan
    _prepare(
        search_dir,
        {
            "version": PLAN_VERSION,
            "k": k,
            "approx_recall": s.approx_recall,
            "embeddings": storage.read_bytes(storage.join(emb_dir, "plan.json")).decode(),
        },
        s.overwrite,
        "search results",
        refuse=False,
        write=first,
    )
    _barrier("mine: search plan")
    searcher = Searcher(mesh, pool_shards, k, width, s.query_block, s.device_pool_gib * 2**30)
    searched = 0
    with _bar(s.progress, query_shards.owned_rows(owned), "searching") as bar:
        for i in filter(owned, range(query_shards.n_shards)):
            path = storage.join(search_dir, f"top{k}-{i:05d}.npz")
            a, b = query_shards.rows(i)
            if storage.exists(path):
                bar.update(b - a)
                continue
            scores, idx, pos = searcher.search(
                query_shards.load(i), positive_matrix(corpus.positives[a:b], width), s.approx_recall, bar.update
            )
            _save_npz(path, scores=scores, idx=idx, pos=pos)
            searched += b - a
    info = {
        "method": "exact top_k" if s.approx_recall is None else "approx_max_k",
        "k": k,
        "devices": int(mesh.devices.size),
        "platform": mesh.devices.flat[0].platform,
        "approx_recall_target": s.approx_recall,
    }
    if s.approx_recall is not None and first:  # the approximate search's recall against the exact one
        sample = query_shards.load(0)[: s.recall_sample]
        exact = searcher.search(sample, positive_matrix(corpus.positives[: len(sample)], width))[1]
        approx = _load_npz(storage.join(search_dir, f"top{k}-00000.npz"))["idx"][: len(sample)]
        info.update(recall_vs_exact=recall_against_exact(approx, exact), recall_sample=len(sample))
    return searched, info


def _write(
    s: MineSettings, corpus: MiningCorpus, search_dir: str, k: int, range_max: int, result: MiningResult
) -> dict:
    """Filters each anchor shard's candidates and writes the lines; returns the counts and statistics."""
    removed = dict.fromkeys(COUNTED, 0)
    counts = {
        "anchors": len(corpus.queries),
        "positive_pairs": sum(map(len, corpus.positives)),
        "pool": len(corpus.pool),
        "max_positive_rows": corpus.max_positive_rows,
        "anchors_written": 0,
        "anchors_without_negatives": 0,
        "anchors_with_fewer_negatives": 0,
        "negatives_written": 0,
    }
    positive, negative = report_lib.ScoreStats(), report_lib.ScoreStats()
    candidates = 0
    sha = hashlib.sha256()
    with storage.replacing_writer(s.output) as raw:
        out = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if s.output.endswith(".gz") else raw
        for i in range(-(-len(corpus.queries) // s.shard_size)):
            a = i * s.shard_size
            z = _load_npz(storage.join(search_dir, f"top{k}-{i:05d}.npz"))
            n = len(z["idx"])
            positives = corpus.positives[a : a + n]
            pos_idx = positive_matrix(positives, z["pos"].shape[1])
            # Never negatives: the anchor's own text and its positives (by fingerprint).
            excluded = np.concatenate([corpus.query_fp[a : a + n, None], corpus.pool_fp[np.maximum(pos_idx, 0)]], 1)
            valid = np.concatenate([np.ones((n, 1), bool), pos_idx >= 0], 1)
            chosen, c = choose_negatives(
                z["scores"],
                z["idx"],
                corpus.pool_fp[np.maximum(z["idx"], 0)],
                excluded,
                valid,
                z["pos"],
                s.filters,
                range_max,
                np.random.default_rng([s.seed, i]),
            )
            for name in removed:
                removed[name] += c[name]
            candidates += int((z["idx"] >= 0).sum())
            positive.add(z["pos"][pos_idx >= 0])
            negative.add(z["scores"][chosen])
            lines = []
            for j in range(n):
                negs = z["idx"][j][chosen[j]]
                counts["anchors_with_fewer_negatives"] += len(negs) < s.filters.num_negatives
                if result.negatives is not None:
                    result.negatives.append(negs.tolist())
                    result.negative_scores.append(z["scores"][j][chosen[j]].tolist())
                    result.positive_scores.append(z["pos"][j][: len(positives[j])].tolist())
                if not len(negs):  # a query_with_negatives line needs one negative at least
                    counts["anchors_without_negatives"] += 1
                    continue
                counts["anchors_written"] += 1
                counts["negatives_written"] += len(negs)
                lines.append(
                    json.dumps(
                        {
                            "query": corpus.queries[a + j],
                            "pos": [corpus.pool[p] for p in positives[j]],
                            "neg": [corpus.pool[p] for p in negs],
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
            data = "".join(lines).encode("utf-8")
            sha.update(data)
            out.write(data)
        if out is not raw:
            out.close()
    return {
        "counts": counts,
        "removed": removed,
        "candidates": candidates,
        "positive": positive,
        "negative": negative,
        "sha256": sha.hexdigest(),
    }
