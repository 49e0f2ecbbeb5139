"""The manifest (`<output_dir>/manifest.json`): what the job wrote, read by the trainer.

Built and written by the job's last step, after every shard is finalised; the format is in
docs/HELPERS_COMMON.md and docs/pipeline.md. `read_manifest` is the reader for everyone.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Any

from pipeline import stats as stats_lib
from pipeline.record_schema import COMPRESSION, FILE_SUFFIX, SCHEMA_VERSION

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


class ManifestError(ValueError):
    pass


def corpus_entry(corpus, files: list[str], acc: dict, train_files: list[str],
                 validation_files: list[str]) -> dict[str, Any]:
    rejected_total = sum(acc["rejected"].values())
    entry = {
        "name": corpus.name,
        "record_format": corpus.record_format,
        "weight": corpus.weight,
        "symmetric": corpus.symmetric,
        "files": list(files),
        "expected_lines": corpus.expected_lines,
        "lines_read": acc["lines_read"],
        "train_examples": acc["train"],
        "validation_examples": acc["validation"],
        "rejected": {"total": rejected_total, "by_reason": dict(sorted(acc["rejected"].items()))},
        "train_files": list(train_files),
        "validation_files": list(validation_files),
        "token_lengths": stats_lib.token_length_summary(acc),
    }
    if entry["lines_read"] != entry["train_examples"] + entry["validation_examples"] + rejected_total:
        raise ManifestError(f"corpus {corpus.name!r}: counts do not reconcile: {entry}")
    return entry


def build_manifest(entries: list[dict], tokenizer: dict, max_seq_length: int, validation_fraction: float,
                   created: str | None = None) -> dict[str, Any]:
    totals = {k: sum(e[k] for e in entries) for k in ("lines_read", "train_examples", "validation_examples")}
    totals["rejected"] = sum(e["rejected"]["total"] for e in entries)
    return {
        "schema_version": SCHEMA_VERSION,
        "manifest_version": MANIFEST_VERSION,
        "created": created or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "max_seq_length": max_seq_length,
        "validation_fraction": validation_fraction,
        "compression": COMPRESSION,
        "file_suffix": FILE_SUFFIX,
        "tokenizer": dict(tokenizer),
        "corpora": entries,
        "totals": totals,
    }


def write_manifest(output_dir: str, manifest: dict) -> str:
    """Writes manifest.json (through a temporary name, so a reader never sees half a manifest)."""
    from apache_beam.io.filesystems import FileSystems

    path = FileSystems.join(output_dir, MANIFEST_NAME)
    tmp = path + ".tmp"
    with FileSystems.create(tmp, mime_type="application/json") as f:
        f.write((json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])
    return path


def read_manifest(path_or_dir: str) -> dict:
    """The manifest of an output directory (or the manifest file itself); local or gs://."""
    from apache_beam.io.filesystems import FileSystems

    path = path_or_dir
    if not path.endswith(".json"):
        path = FileSystems.join(path_or_dir, MANIFEST_NAME)
    if not FileSystems.exists(path):
        raise ManifestError(f"no manifest at {path}: has the Beam job (beam_main.py) finished there?")
    with FileSystems.open(path) as f:
        manifest = json.loads(f.read().decode("utf-8"))
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(f"{path}: record schema version {manifest.get('schema_version')} "
                            f"but this code reads version {SCHEMA_VERSION}")
    return manifest


def corpus_files(manifest: dict, output_dir: str, corpus: str, split: str = "train") -> list[str]:
    """Absolute paths of one corpus's shards of a split."""
    for c in manifest["corpora"]:
        if c["name"] == corpus:
            base = output_dir.rstrip("/")
            return [f"{base}/{rel}" if base.startswith("gs://") else os.path.join(base, rel)
                    for rel in c[f"{split}_files"]]
    raise ManifestError(f"no corpus {corpus!r} in the manifest")
