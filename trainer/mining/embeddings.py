"""Texts -> unit embeddings with our jit encoder, over all of this host's devices, kept in shards.

Each shard (`<dir>/<name>-NNNNN.npy`, float32 [rows, hidden], `shard_size` texts) is written as soon
as it is computed, whole or not at all (`storage.write_bytes`), so a killed run recomputes at most the
shard it was in; memory holds one shard's texts and embeddings at a time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from typing import Any, Callable, Sequence

import numpy as np

from pipeline import storage

# Texts per encode call: the progress bar moves this often; encode sorts each call's texts by length.
ENCODE_CHUNK = 4096


@dataclasses.dataclass
class Encoder:
    """Our SentenceEncoder, its parameters and tokenizer, run over a mesh (trainer/model/encode.py)."""

    model: Any
    params: Any
    tokenizer: Any
    max_seq_length: int
    batch_size: int
    mesh: Any
    source_dir: str
    fingerprint: str  # of the model's files (model_fingerprint)
    packing: bool = True  # several texts per row (trainer/model/encode.py): no padding computed

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        from trainer.model.encode import encode

        return encode(
            self.model,
            self.params,
            self.tokenizer,
            texts,
            self.batch_size,
            self.max_seq_length,
            mesh=self.mesh,
            packing=self.packing,
        )

    def prompted(self, prompt: str) -> Callable[[Sequence[str]], np.ndarray]:
        """This encoder with `prompt` prepended to every text before tokenizing (counting toward
        max_seq_length), as sentence-transformers' `encode(prompt=...)`; itself when there is none."""
        return (lambda texts: self([prompt + t for t in texts])) if prompt else self

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)


def model_fingerprint(model_dir: str) -> str:
    """sha256 (first 16 hex digits) of the files that decide a model's embeddings: config, weights,
    tokenizer, and the module configs one folder down (a SentenceTransformers `1_Pooling/`), by
    path and content."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(model_dir):
        dirs[:] = sorted(dirs) if root == model_dir else []
        for name in sorted(files):
            if name.endswith((".json", ".safetensors", ".bin", ".txt", ".model")):
                path = os.path.join(root, name)
                h.update(os.path.relpath(path, model_dir).encode() + b"\0")
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 24), b""):
                        h.update(block)
    return h.hexdigest()[:16]


def load_encoder(model: str, max_seq_length: int | None, batch_size: int, mesh, packing: bool = True) -> Encoder:
    """Our encoder of `--model` (a Hugging Face name or directory, local or gs://, or our export);
    max_seq_length None: the model's own (sentence_bert_config.json, as sentence-transformers uses it)."""
    from trainer.model.encode import load_tokenizer
    from trainer.model.export import sentence_bert_max_len
    from trainer.model.hf_loading import load_pretrained

    pre = load_pretrained(model)
    limit = pre.config.max_input_length
    length = min(max_seq_length or sentence_bert_max_len(pre.source_dir), limit)
    return Encoder(
        pre.model,
        pre.params,
        load_tokenizer(pre.source_dir),
        length,
        batch_size,
        mesh,
        pre.source_dir,
        model_fingerprint(pre.source_dir),
        packing,
    )


@dataclasses.dataclass(frozen=True)
class EmbeddingShards:
    """The embeddings of `n` texts in shards of `shard_size` rows under `directory`."""

    directory: str
    name: str
    n: int
    shard_size: int

    @property
    def n_shards(self) -> int:
        return -(-self.n // self.shard_size)

    def rows(self, i: int) -> tuple[int, int]:
        return i * self.shard_size, min((i + 1) * self.shard_size, self.n)

    def path(self, i: int) -> str:
        return storage.join(self.directory, f"{self.name}-{i:05d}.npy")

    def missing(self) -> list[int]:
        return [i for i in range(self.n_shards) if not storage.exists(self.path(i))]

    def load(self, i: int) -> np.ndarray:
        start, stop = self.rows(i)
        emb = np.load(io.BytesIO(storage.read_bytes(self.path(i))))
        if emb.ndim != 2 or emb.shape[0] != stop - start:
            raise ValueError(
                f"{self.path(i)} holds {emb.shape}, expected {stop - start} rows: remove the work "
                "directory (--overwrite) and run again"
            )
        return emb

    def owned_rows(self, owned: Callable[[int], bool]) -> int:
        return sum(b - a for a, b in map(self.rows, filter(owned, range(self.n_shards))))

    def compute(
        self,
        texts: Sequence[str],
        encoder: Callable[[Sequence[str]], np.ndarray],
        progress: Callable[[int], None] = lambda n: None,
        owned: Callable[[int], bool] = lambda i: True,
    ) -> int:
        """Embeds and writes every shard that `owned` gives this process (all of them on one host) not
        yet written (what a resumed run skips is reported as progress at once); returns the number of
        texts embedded now."""
        todo = set(self.missing())
        done = 0
        for i in filter(owned, range(self.n_shards)):
            start, stop = self.rows(i)
            if i not in todo:
                progress(stop - start)
                continue
            parts = []
            for a in range(start, stop, ENCODE_CHUNK):
                parts.append(encoder(texts[a : min(a + ENCODE_CHUNK, stop)]))
                progress(len(parts[-1]))
            buf = io.BytesIO()
            np.save(buf, np.concatenate(parts).astype(np.float32, copy=False))
            storage.write_bytes(self.path(i), buf.getvalue())
            done += stop - start
        return done
