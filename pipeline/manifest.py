"""The manifest (`<output_dir>/manifest.json`): what the job wrote, read by the trainer.

Built and written by the job's last step (through Beam's FileSystems, where the job runs), after
every shard is finalised; the format is in docs/pipeline.md. `load_manifest` is the reader for
everyone else: it reads the file once (pipeline/storage.py) into a typed `Manifest`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Any, Sequence

from pipeline import stats as stats_lib
from pipeline import storage
from pipeline.data_config import PROMPT_KEYS, Prompt
from pipeline.parsing import DROPPED
from pipeline.record_schema import COMPRESSION, FILE_SUFFIX, FORMATS, SCHEMA_VERSION, RecordFormat
from pipeline.user_errors import UserError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 2  # 2: a corpus's `shape` became `record_format`


class ManifestError(UserError):
    """A manifest that is missing, unreadable, of another schema version, or inconsistent."""


def corpus_entry(
    corpus,
    files: list[str],
    acc: dict,
    train_files: list[str],
    validation_files: list[str],
    source: dict | None = None,
    source_rejected: dict[str, int] | None = None,
    skipped_files=(),
) -> dict[str, Any]:
    """One corpus's record. `source_rejected`: reason -> input lines of a joined source (Reddit's bad
    comment lines) written to rejected/: they count in `rejected` (total, by_reason and from_source)
    but not in `lines_read`, which counts the records the source built. `skipped_files`: the files
    --on_corrupt_file=skip left out ({"file", "last_line", "cause"})."""
    by_reason = dict(acc["rejected"])
    for reason, n in (source_rejected or {}).items():
        by_reason[reason] = by_reason.get(reason, 0) + n
    from_source = sum((source_rejected or {}).values())
    rejected_total = sum(by_reason.values())
    entry = {
        "name": corpus.name,
        "record_format": corpus.record_format,
        "weight": corpus.weight,
        "symmetric": corpus.symmetric,
        "description": corpus.description,
        "files": list(files),
        "expected_lines": corpus.expected_lines,
        "lines_read": acc["lines_read"],
        "train_examples": acc["train"],
        "validation_examples": acc["validation"],
        "rejected": {"total": rejected_total, "by_reason": dict(sorted(by_reason.items()))},
        # Texts dropped from lines that became records (a set's empty members): not lines, so outside
        # the reconciliation below.
        "dropped_texts": {reason: acc.get("dropped", {}).get(reason, 0) for reason in DROPPED},
        "skipped_files": sorted(skipped_files, key=lambda s: s["file"]),
        # The cleaning stages (pipeline/dedup.py): copies of another tuple not written, tuples matching an
        # evaluation set (lines removed per set; a line matching two sets counts under both), and how
        # many of this corpus's tuples also occur in each other corpus.
        "duplicates_removed": acc["duplicates"],
        "decontaminated": {
            "total": acc["decontaminated"],
            "by_set": dict(sorted(acc["decontaminated_by_set"].items())),
        },
        "overlap": dict(sorted(acc["overlap"].items())),
        "train_files": list(train_files),
        "validation_files": list(validation_files),
        "token_lengths": stats_lib.token_length_summary(acc),
        # The prompts its texts were tokenized with: {"anchor"|"candidate": {"name", "text"}}.
        "prompts": {key: dataclasses.asdict(p) for key, p in corpus.prompts.items()},
    }
    if corpus.fields:
        entry["fields"] = dict(corpus.fields)
    if source is not None:  # a joined source's own accounting (pipeline/beir.py): its lines are its records
        entry["source"] = source
    if source_rejected is not None:
        entry["rejected"]["from_source"] = from_source
    if entry["lines_read"] != (
        entry["train_examples"]
        + entry["validation_examples"]
        + rejected_total
        - from_source
        + acc["duplicates"]
        + acc["decontaminated"]
    ):
        raise ManifestError(f"corpus {corpus.name!r}: counts do not reconcile: {entry}")
    return entry


def left_out_summary(left_out, kept_config) -> str:
    """One line for the log: which corpora were left out and what the others' probabilities become."""
    total = sum(c.weight for c in kept_config.corpora) + sum(lo.weight for lo in left_out)
    gone = ", ".join(f"{lo.name} (weight {lo.weight:g}, {lo.weight / total:.1%} of batches)" for lo in left_out)
    return (
        f"left out {len(left_out)} corpus(es) whose files are missing (--skip_missing_corpora): {gone}; "
        f"the other {len(kept_config.corpora)} keep their weights, so their shares grow by "
        f"{total / (total - sum(lo.weight for lo in left_out)):.3f}x (manifest.json: left_out)"
    )


def left_out_entry(left_out, entries: list[dict]) -> dict[str, Any]:
    """The manifest's record of corpora left out and the probabilities of the corpora that ran, before
    (with the left-out weights in the sum) and after."""
    kept = sum(e["weight"] for e in entries)
    before = kept + sum(lo.weight for lo in left_out)
    return {
        "corpora": [{"name": lo.name, "weight": lo.weight, "missing": list(lo.missing)} for lo in left_out],
        "probabilities": {
            e["name"]: {"configured": round(e["weight"] / before, 6), "now": round(e["weight"] / kept, 6)}
            for e in entries
        },
    }


def build_manifest(
    entries: list[dict],
    tokenizer: dict,
    max_seq_length: int,
    validation_fraction: float,
    created: str | None = None,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    left_out=(),
    hf_revisions=None,
    cleaning: dict | None = None,
) -> dict[str, Any]:
    totals = {k: sum(e[k] for e in entries) for k in ("lines_read", "train_examples", "validation_examples")}
    totals["rejected"] = sum(e["rejected"]["total"] for e in entries)
    totals["skipped_files"] = sum(len(e.get("skipped_files", ())) for e in entries)
    totals["duplicates_removed"] = sum(e["duplicates_removed"] for e in entries)
    totals["decontaminated"] = sum(e["decontaminated"]["total"] for e in entries)
    return {
        "schema_version": SCHEMA_VERSION,
        "manifest_version": MANIFEST_VERSION,
        "created": created or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "max_seq_length": max_seq_length,
        "validation_fraction": validation_fraction,
        "compression": COMPRESSION,
        "file_suffix": FILE_SUFFIX,
        "tokenizer": dict(tokenizer),
        # The data config's prompt table and default (the export writes them for sentence-transformers).
        "prompts": dict(prompts or {}),
        "default_prompt_name": default_prompt_name,
        "corpora": entries,
        # Corpora of the data config that this run left out (--skip_missing_corpora); empty: none.
        "left_out": left_out_entry(left_out, entries) if left_out else {},
        # hf:// repositories as the data config named them ("hf://datasets/O/N[@REVISION]") -> the
        # commit every file was read at (pipeline/hf_filesystem.py); empty: no hf:// input.
        "hf_revisions": dict(hf_revisions or {}),
        # What the cleaning stages did (pipeline/cleaning.py `describe`, with each evaluation set's counts);
        # the model card reads it. Absent in manifests from before them.
        "cleaning": dict(cleaning or {"deduplicate": False, "decontaminate": []}),
        "totals": totals,
    }


def cleaning_summary(manifest: dict) -> str:
    """One phrase on what the cleaning stages removed (the job's closing line, pipeline.inspect_files)."""
    cleaning, totals = manifest.get("cleaning"), manifest.get("totals", {})
    if cleaning is None:
        return "cleaning not recorded (a manifest from before the cleaning stages)"
    dup = (
        f"{totals.get('duplicates_removed', 0)} duplicate tuples removed"
        if cleaning.get("deduplicate")
        else "duplicates kept (--no_deduplicate)"
    )
    sets = cleaning.get("decontaminate") or []
    if not sets:
        return f"{dup}, not checked against evaluation sets"
    by_set = ", ".join(f"{s['name']}: {s.get('removed_lines', 0)}" for s in sets)
    return f"{dup}, {totals.get('decontaminated', 0)} removed as evaluation texts ({by_set}; decontaminated/)"


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
    """The manifest of an output directory (or the manifest file itself) as JSON; local or any
    fsspec URL (gs://). Checks the record schema version; `load_manifest` gives the typed form."""
    path = path_or_dir if path_or_dir.endswith(".json") else storage.join(path_or_dir, MANIFEST_NAME)
    if not storage.exists(path):
        raise ManifestError(f"no manifest at {path}: run the Beam job (beam_main.py) there first")
    with storage.open_file(path, "r", encoding="utf-8") as f:
        try:
            manifest = json.load(f)
        except ValueError as e:
            raise ManifestError(f"{path} is not valid JSON: {e}") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise ManifestError(f"{path}: record schema version {version} but this code reads version {SCHEMA_VERSION}")
    return manifest


@dataclasses.dataclass(frozen=True)
class CorpusEntry:
    """One corpus as the job wrote it; file paths are absolute (joined to the data directory)."""

    name: str
    record_format: str
    weight: float
    symmetric: bool
    train_examples: int
    validation_examples: int
    train_files: tuple[str, ...]
    validation_files: tuple[str, ...]
    token_lengths: dict
    description: str = ""  # the data config's, e.g. the mining run of a mined corpus
    # "anchor" / "candidate" -> the prompt prepended to those texts before tokenizing (none: absent).
    prompts: dict[str, Prompt] = dataclasses.field(default_factory=dict)

    @property
    def format(self) -> RecordFormat:
        return FORMATS[self.record_format]

    @property
    def has_negative(self) -> bool:
        return self.format.has_negative


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The typed manifest the trainer reads once and hands down (tokenizer check, input pipeline,
    evaluators, model card)."""

    path: str
    corpora: tuple[CorpusEntry, ...]
    tokenizer: dict
    pad_token_id: int
    max_seq_length: int | None  # the job's cut; None if unknown
    compression: str  # tf.data's compression_type ("GZIP" or "")
    raw: dict  # the JSON as written
    # The data config's prompt table (name -> text) and default name; empty / None before prompts.
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.corpora]

    def corpus(self, name: str) -> CorpusEntry:
        for c in self.corpora:
            if c.name == name:
                return c
        raise ManifestError(f"corpus {name!r} is not in the manifest {self.path} (it has {', '.join(self.names)})")

    def select(self, names: Sequence[str] | None) -> tuple[CorpusEntry, ...]:
        """The named corpora in the given order (all of them when names is None or empty)."""
        return tuple(self.corpus(n) for n in names) if names else self.corpora

    @classmethod
    def from_json(cls, raw: dict, data_dir: str, path: str | None = None) -> "Manifest":
        path = path or storage.join(data_dir, MANIFEST_NAME)

        def fail(msg: str) -> ManifestError:
            return ManifestError(f"{path}: {msg}")

        if not isinstance(raw.get("corpora"), list) or not raw["corpora"]:
            raise fail("'corpora' must be a non-empty list")
        tokenizer = raw.get("tokenizer")
        if not isinstance(tokenizer, dict) or not isinstance(tokenizer.get("pad_token_id"), int):
            raise fail("tokenizer.pad_token_id is missing")
        prompts = raw.get("prompts") or {}  # manifests before prompts have none
        if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
            raise fail(f"'prompts' must map prompt names to texts, got {prompts!r}")
        default_prompt_name = raw.get("default_prompt_name")
        if default_prompt_name is not None and default_prompt_name not in prompts:
            raise fail(f"'default_prompt_name' {default_prompt_name!r} is not in 'prompts'")
        entries = []
        for c in raw["corpora"]:
            name = c.get("name")
            record_format = c.get("record_format", c.get("shape"))  # manifests before 0.2 say "shape"
            for key, value in (
                ("name", name),
                ("record_format", record_format),
                ("weight", c.get("weight")),
                ("train_files", c.get("train_files")),
            ):
                if value is None:
                    raise fail(f"corpus {name!r} lacks field {key!r}")
            if record_format not in FORMATS:
                raise fail(f"corpus {name!r} has unknown record format {record_format!r}")
            entries.append(
                CorpusEntry(
                    name,
                    record_format,
                    float(c["weight"]),
                    bool(c.get("symmetric", False)),
                    int(c.get("train_examples", 0)),
                    int(c.get("validation_examples", 0)),
                    tuple(_absolute(data_dir, f) for f in c["train_files"]),
                    tuple(_absolute(data_dir, f) for f in c.get("validation_files", [])),
                    dict(c.get("token_lengths", {})),
                    str(c.get("description", "")),
                    _corpus_prompts(c, fail),
                )
            )
        job_len = raw.get("max_seq_length")
        return cls(
            path,
            tuple(entries),
            dict(tokenizer),
            int(tokenizer["pad_token_id"]),
            job_len if isinstance(job_len, int) else None,
            raw.get("compression", COMPRESSION) or "",
            raw,
            dict(prompts),
            default_prompt_name,
        )


def _corpus_prompts(c: dict, fail) -> dict[str, Prompt]:
    out = {}
    for key, p in (c.get("prompts") or {}).items():
        well_formed = isinstance(p, dict) and all(isinstance(p.get(k), str) for k in ("name", "text"))
        if key not in PROMPT_KEYS or not well_formed:
            raise fail(
                f'corpus {c.get("name")!r}: prompts.{key} must be {{"name", "text"}} under one of '
                f"{', '.join(PROMPT_KEYS)}, got {p!r}"
            )
        out[key] = Prompt(p["name"], p["text"])
    return out


def _absolute(data_dir: str, rel: str) -> str:
    return rel if storage.is_remote(rel) or os.path.isabs(rel) else storage.join(data_dir, rel)


def load_manifest(path_or_dir: str) -> Manifest:
    """The typed manifest of a data directory (or of the manifest file itself)."""
    data_dir = path_or_dir
    if data_dir.endswith(".json"):
        data_dir = data_dir.rsplit("/", 1)[0] if "/" in data_dir else "."
    return Manifest.from_json(read_manifest(path_or_dir), data_dir)
