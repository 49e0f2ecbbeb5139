"""STS evaluation: Spearman correlation of cosine similarity against gold similarity scores.

Input: the STS benchmark's tab-separated layout (score in column 5, the sentence pair in columns 6
and 7, 1-based; further columns ignored). Lines are read without quote processing, since sentences
contain stray quote characters. TensorFlow-free; `StsEvaluator` runs it on the trainer's parameters.
A prompt, when given, is prepended to both sentences of every pair before tokenizing (STS is
symmetric), as sentence-transformers' `encode(prompt=...)` does.
"""

from __future__ import annotations

import csv
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from pipeline import storage
from pipeline.user_errors import UserError
from trainer.model.encode import encode
from trainer.prompts import prompt_text
from trainer.train.matryoshka import dim_metric, truncate

StsRow = tuple[str, str, float]


class StsFileError(UserError):
    """An STS file that is missing or not in the benchmark's layout; the message names the line."""


def read_sts(path: str) -> list[StsRow]:
    """(sentence1, sentence2, gold score) rows; a header line is skipped; a missing file or a malformed
    line is a StsFileError that names it. Local or gs:// paths."""
    if not storage.exists(path):
        raise StsFileError(f"no STS file at {path}")
    rows: list[StsRow] = []
    with storage.open_file(path, "r", encoding="utf-8", newline="") as f:
        for lineno, rec in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue  # blank line
            if len(rec) < 7:
                raise StsFileError(f"{path}:{lineno}: expected at least 7 tab-separated columns, found {len(rec)}")
            try:
                score = float(rec[4])
            except ValueError:
                if lineno == 1:  # header such as "genre filename year id score sentence1 sentence2"
                    continue
                raise StsFileError(f"{path}:{lineno}: score column 5 is not a number: {rec[4]!r}") from None
            rows.append((rec[5], rec[6], score))
    if not rows:
        raise StsFileError(f"{path}: no STS rows")
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


def training_sts_prompt(cfg, manifest) -> str:
    """A training run's STS prompt: its --sts_prompt_name in the manifest's table ("" without one;
    train_main.py checks it before the run starts)."""
    return prompt_text(manifest.prompts, cfg.sts_prompt_name, "sts_prompt_name", f"the manifest {manifest.path}")


class StsEvaluator:
    """STS Spearman (`eval/sts_spearman`) of the model with given parameters, and at each Matryoshka
    size of `dims` (eval/dim<d>/sts_spearman); the file is read once. `prompt` is prepended to every
    sentence (counting toward max_seq_length)."""

    def __init__(
        self,
        model,
        tokenizer,
        path: str,
        max_seq_length: int,
        batch_size: int = 64,
        dims: Sequence[int] = (),
        prompt: str = "",
    ):
        self.model, self.tokenizer = model, tokenizer
        self.max_seq_length, self.batch_size = max_seq_length, batch_size
        self.rows = read_sts(path)
        self.sentences = sorted({s for a, b, _ in self.rows for s in (a, b)})
        self.dims = (None,) + tuple(dims)
        self.prompt = prompt

    def run(self, params: Any) -> dict[str, float]:
        emb = encode(
            self.model,
            {"params": params},
            self.tokenizer,
            [self.prompt + s for s in self.sentences],
            self.batch_size,
            self.max_seq_length,
        )
        row = {s: i for i, s in enumerate(self.sentences)}
        return {
            dim_metric("eval/sts_spearman", dim): sts_spearman(
                lambda s, dim=dim: truncate(emb[[row[x] for x in s]], dim), self.rows
            )
            for dim in self.dims
        }
