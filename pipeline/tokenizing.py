"""The target model's fast tokenizer: resolved and described on the launcher, run in batches on workers.

The launcher loads the tokenizer once (a Hugging Face name, a local directory or a gs:// directory),
saves it beside the output (`<output_dir>/tokenizer/`) and fingerprints its vocabulary. Workers load
only the `tokenizers` JSON from there in `setup` (no transformers import, no hub access on workers)
and run `BatchTokenizer`, which gives the same ids as `tokenizer(texts, truncation=True,
max_length=max_seq_length)` (tests/test_tokenizing.py checks it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Sequence

from pipeline import storage
from pipeline.model_source import DEMO_HUB_NAME, resolve_model_source
from pipeline.user_errors import UserError

# The default --tokenizer: the bundled model's hub name, read from the installed copy (offline).
DEMO_TOKENIZER = DEMO_HUB_NAME
TOKENIZER_SUBDIR = "tokenizer"
TOKENIZER_JSON = "tokenizer.json"
# Texts longer than this many characters per allowed token are cut before tokenizing, so one huge
# text cannot stall a worker; 20 characters per token is far beyond any tokenizer's average.
CHARS_PER_TOKEN = 20


class TokenizerError(UserError):
    """The --tokenizer cannot be loaded or is not a fast tokenizer."""


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
    name: str
    vocab_fingerprint: str
    vocab_size: int
    pad_token_id: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def vocab_fingerprint(vocab: dict[str, int]) -> str:
    """sha256 of the vocabulary as `id<TAB>token` lines in id order: equal iff the same ids mean
    the same tokens, whatever the tokenizer's file format."""
    h = hashlib.sha256()
    for token, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
        h.update(f"{idx}\t{token}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def load_hf_tokenizer(spec: str):
    """The transformers fast tokenizer for a hub name, a local or a gs:// directory."""
    from transformers import AutoTokenizer

    try:
        source = resolve_model_source(spec)
    except FileNotFoundError as e:  # an empty remote directory, the demo package missing
        raise TokenizerError(f"--tokenizer={spec!r}: {e}") from e
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except Exception as e:  # hub errors, missing files, bad configs: all end the job before work
        raise TokenizerError(f"--tokenizer={spec!r}: cannot load a tokenizer from {source!r}: {e}") from e
    if not getattr(tok, "is_fast", False) or getattr(tok, "backend_tokenizer", None) is None:
        raise TokenizerError(f"--tokenizer={spec!r}: {type(tok).__name__} is not a fast (Rust) tokenizer")
    return tok


def describe(tok, name: str) -> TokenizerInfo:
    vocab = tok.get_vocab()
    pad = tok.pad_token_id
    return TokenizerInfo(
        name=name,
        vocab_fingerprint=vocab_fingerprint(vocab),
        vocab_size=len(vocab),
        pad_token_id=int(pad) if pad is not None else 0,
    )


def save_for_workers(tok, output_dir: str) -> str:
    """Saves the tokenizer under `<output_dir>/tokenizer/` (readable by Dataflow workers and by the
    trainer); returns the path of its `tokenizer.json`."""
    dest = storage.join(output_dir, TOKENIZER_SUBDIR)
    with storage.staged_dir(dest) as stage:  # runs on the launcher: storage, not Beam's FileSystems
        tok.save_pretrained(stage)
        # The backend's exact state (normaliser, post-processor) is what workers run.
        with open(os.path.join(stage, TOKENIZER_JSON), "w", encoding="utf-8") as f:
            f.write(tok.backend_tokenizer.to_str())
    return storage.join(dest, TOKENIZER_JSON)


class BatchTokenizer:
    """Batched encoding with special tokens, cut at max_seq_length, unpadded."""

    def __init__(self, tokenizer_json: str, max_seq_length: int):
        from tokenizers import Tokenizer

        self.max_seq_length = max_seq_length
        self.max_chars = max_seq_length * CHARS_PER_TOKEN
        self._tok = Tokenizer.from_str(tokenizer_json)
        self._tok.no_padding()  # saved tokenizers may carry a padding setting: ids are stored unpadded
        self._tok.enable_truncation(max_seq_length)
        # encode_batch_fast skips character offsets we do not store (tokenizers >= 0.21).
        self._encode_batch = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)

    @classmethod
    def from_path(cls, path: str, max_seq_length: int) -> "BatchTokenizer":
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as f:
            return cls(f.read().decode("utf-8"), max_seq_length)

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids per text and whether each text was cut (in characters or in tokens)."""
        max_chars = self.max_chars
        cut = [len(t) > max_chars for t in texts]
        if any(cut):
            texts = [t[:max_chars] if c else t for t, c in zip(texts, cut)]
        encodings = self._encode_batch(texts)
        ids = [e.ids for e in encodings]
        truncated = [c or bool(e.overflowing) for c, e in zip(cut, encodings)]
        return ids, truncated
