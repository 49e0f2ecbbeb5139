"""The data config (`data_config.json`): which corpora, where their files are, their record format and weight.

Parsed and validated here once; both the Beam job and the trainer import this module (on the
launcher, not on Beam workers). Files are read and globbed through pipeline/storage.py (local or gs://).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Iterable

from pipeline import storage
from pipeline.parsing import fields_error
from pipeline.record_schema import FORMATS, RECORD_FORMATS
from pipeline.user_errors import UserError

_CORPUS_FIELDS = {
    "name",
    "files",
    "record_format",
    "weight",
    "expected_lines",
    "symmetric",
    "description",
    "prompts",
    "fields",
    "input_format",
    "file_bytes",
}
# How a corpus's files are read: a name in pipeline/input_formats.py's registry ("lines": one record
# per JSON line or Parquet row; "beir": BEIR-format directories; "reddit_comments": Reddit comment
# dumps paired by thread). A format may own further corpus fields (its `options`, e.g. qrels_split).
DEFAULT_INPUT_FORMAT = "lines"
_TOP_FIELDS = {"corpora", "description", "prompts", "default_prompt_name"}
# A corpus's `prompts` keys: "anchor" prefixes its anchor texts, "candidate" its positives and negatives.
PROMPT_KEYS = ("anchor", "candidate")


class DataConfigError(UserError):
    """A data config that cannot be used; the message names the corpus and the field."""


@dataclasses.dataclass(frozen=True)
class Prompt:
    """An entry of the data config's prompt table, as a corpus uses it: the text is prepended to the
    texts it applies to before tokenizing (sentence-transformers' `prompts`)."""

    name: str
    text: str


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    name: str
    files: tuple[str, ...]  # paths or globs, relative to the input root, or absolute (gs:// allowed)
    record_format: str  # one of RECORD_FORMATS (pipeline/record_schema.py)
    weight: float  # sampling weight; probability = weight / sum of weights
    expected_lines: int | None = None
    # Symmetric corpora (duplicate questions, paraphrases) have their pair order swapped at random.
    symmetric: bool = False
    description: str = ""
    # PROMPT_KEYS -> the prompt it names in the table (a key absent: no prompt for those texts).
    prompts: dict[str, Prompt] = dataclasses.field(default_factory=dict, hash=False)
    # Where an object line's (or Parquet row's) texts are: pipeline/parsing.py FIELD_KEYS -> key name;
    # empty: the line is one of the record format's own shapes.
    fields: dict[str, str] = dataclasses.field(default_factory=dict, hash=False)
    input_format: str = DEFAULT_INPUT_FORMAT  # a name in pipeline/input_formats.py's registry
    # The corpus fields its input format owns, defaults filled in (beir: qrels_split; reddit_comments:
    # reddit_options), as that format's parse_options left them.
    options: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    # Optional: file name (the last part of a matched path) -> its size in bytes as published; the
    # launcher compares them before the job starts (check_file_sizes), a cheap catch of a short copy.
    file_bytes: dict[str, int] = dataclasses.field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["files"] = list(self.files)
        d["prompts"] = {key: p.name for key, p in self.prompts.items()}
        for key, default in (("fields", {}), ("input_format", DEFAULT_INPUT_FORMAT)):
            if d[key] == default:
                del d[key]
        d.update(d.pop("options"))
        if not self.file_bytes:
            del d["file_bytes"]
        return d

    @property
    def reader(self):
        """The corpus's input format entry (pipeline/input_formats.py)."""
        from pipeline import input_formats

        return input_formats.get(self.input_format)

    @property
    def line_format(self) -> tuple[str, dict[str, str] | None]:
        """(record format, fields or None): what pipeline.parsing needs to read one of its lines."""
        return self.record_format, dict(self.fields) or None

    def role_prompts(self) -> dict[int, str]:
        """Prompt text by text role (record_schema ROLE_*): the anchor's for the format's anchor role,
        the candidate's for its positive and negative roles (a set's members have one role: parsing
        made its anchor and candidate prompts the same); roles without a prompt are absent."""
        f = FORMATS[self.record_format]
        out = {}
        for role, key in ((f.anchor_role, "anchor"), (f.positive_role, "candidate"), (f.negative_role, "candidate")):
            if role is not None and key in self.prompts:
                out[role] = self.prompts[key].text
        return out


@dataclasses.dataclass(frozen=True)
class DataConfig:
    corpora: tuple[CorpusConfig, ...]
    # The prompt table (name -> text) and the name sentence-transformers applies when none is given.
    prompts: dict[str, str] = dataclasses.field(default_factory=dict, hash=False)
    default_prompt_name: str | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.corpora]

    def get(self, name: str) -> CorpusConfig:
        for c in self.corpora:
            if c.name == name:
                return c
        raise DataConfigError(f"unknown corpus {name!r}; the config has: {', '.join(self.names)}")

    def select(self, names: Iterable[str] | None) -> "DataConfig":
        """The sub-config of the named corpora (all when names is None or empty)."""
        names = [n for n in (names or []) if n]
        if not names:
            return self
        return dataclasses.replace(self, corpora=tuple(self.get(n) for n in names))

    def probabilities(self) -> dict[str, float]:
        total = sum(c.weight for c in self.corpora)
        return {c.name: c.weight / total for c in self.corpora}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"corpora": [c.to_json() for c in self.corpora]}
        if self.prompts:
            out["prompts"] = dict(self.prompts)
        if self.default_prompt_name is not None:
            out["default_prompt_name"] = self.default_prompt_name
        return out


def _err(where: str, msg: str) -> DataConfigError:
    return DataConfigError(f"data config: {where}: {msg}")


def _parse_prompt_table(raw: dict) -> tuple[dict[str, str], str | None]:
    table = raw.get("prompts", {})
    if not isinstance(table, dict):
        raise _err("top level", "field 'prompts' must be an object of prompt names to prompt texts")
    for name, text in table.items():
        if not name.strip():
            raise _err("top level", "field 'prompts': a prompt name must be a non-empty string")
        if not isinstance(text, str):
            raise _err("top level", f"field 'prompts': the text of {name!r} must be a string, got {text!r}")
    default = raw.get("default_prompt_name")
    if default is not None and (not isinstance(default, str) or default not in table):
        raise _err(
            "top level",
            f"field 'default_prompt_name' is {default!r}, not a name in 'prompts' "
            f"({', '.join(map(repr, table)) or 'none'})",
        )
    return dict(table), default


def _parse_corpus_prompts(where: str, raw: Any, table: dict[str, str], swaps: str | None) -> dict[str, Prompt]:
    """A corpus's `prompts` ({"anchor": name, "candidate": name}, either optional) resolved against
    the table; `swaps` says why anchor and candidate trade places in training (they must then agree)."""
    if not isinstance(raw, dict):
        raise _err(
            where,
            f"field 'prompts' must be an object with {' and/or '.join(map(repr, PROMPT_KEYS))} "
            f"naming prompts of the top-level 'prompts', got {raw!r}",
        )
    unknown = sorted(set(raw) - set(PROMPT_KEYS))
    if unknown:
        raise _err(where, f"field 'prompts': unknown key(s) {unknown}; allowed: {list(PROMPT_KEYS)}")
    out = {}
    for key, name in raw.items():
        if not isinstance(name, str) or name not in table:
            raise _err(
                where,
                f"field 'prompts.{key}' is {name!r}, not a name in the top-level 'prompts' "
                f"({', '.join(map(repr, table)) or 'none'})",
            )
        out[key] = Prompt(name, table[name])
    if swaps and raw.get("anchor") != raw.get("candidate"):
        raise _err(
            where,
            f"field 'prompts': {swaps}, so 'anchor' and 'candidate' must name the same prompt "
            f"(got {raw.get('anchor')!r} and {raw.get('candidate')!r})",
        )
    return {key: out[key] for key in PROMPT_KEYS if key in out}


def _parse_corpus(i: int, raw: Any, prompt_table: dict[str, str]) -> CorpusConfig:
    where = f"corpus #{i}"
    if not isinstance(raw, dict):
        raise _err(where, f"must be a JSON object, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _err(where, "field 'name' must be a non-empty string")
    if not all(ch.isalnum() or ch in "-_." for ch in name):
        raise _err(
            f"corpus {name!r}", "field 'name' may hold only letters, digits, '-', '_' and '.' (it names a directory)"
        )
    where = f"corpus {name!r}"
    if "shape" in raw:  # the field's name before 0.2
        raise _err(where, "field 'shape' is now called 'record_format'")
    input_format = raw.get("input_format", DEFAULT_INPUT_FORMAT)
    from pipeline import input_formats

    if input_format not in input_formats.names():
        raise _err(
            where, f"field 'input_format' is {input_format!r}; must be one of {', '.join(input_formats.names())}"
        )
    reader = input_formats.get(input_format)
    unknown = sorted(set(raw) - _CORPUS_FIELDS - set(reader.options))
    if unknown:
        owners = {key: name for name in input_formats.names() for key in input_formats.get(name).options}
        hints = [f"{key!r} applies to input_format {owners[key]!r} only" for key in unknown if key in owners]
        if hints:
            raise _err(where, f"field {'; field '.join(hints)}")
        raise _err(where, f"unknown field(s) {unknown}; allowed: {sorted(_CORPUS_FIELDS | set(reader.options))}")
    options = {key: raw.get(key, default) for key, default in reader.options.items()}
    files = raw.get("files")
    if isinstance(files, str):
        files = [files]
    if (
        not isinstance(files, list)
        or not (files or not reader.needs_files(options))
        or not all(isinstance(f, str) and f for f in files)
    ):
        raise _err(where, "field 'files' must be a non-empty list of path or glob strings")
    record_format = raw.get("record_format")
    if record_format not in RECORD_FORMATS:
        raise _err(where, f"field 'record_format' is {record_format!r}; must be one of {', '.join(RECORD_FORMATS)}")
    weight = raw.get("weight")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        raise _err(where, f"field 'weight' must be a positive number, got {weight!r}")
    expected = raw.get("expected_lines")
    if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int) or expected < 0):
        raise _err(where, f"field 'expected_lines' must be a non-negative integer, got {expected!r}")
    symmetric = raw.get("symmetric", False)
    if not isinstance(symmetric, bool):
        raise _err(where, f"field 'symmetric' must be true or false, got {symmetric!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _err(where, "field 'description' must be a string")
    f = FORMATS[record_format]
    swaps = (
        f"a {record_format} corpus draws its anchor and positive among the same texts"
        if f.anchor_role == f.positive_role
        else "a symmetric corpus swaps anchor and positive"
        if symmetric
        else None
    )
    prompts = _parse_corpus_prompts(where, raw.get("prompts", {}), prompt_table, swaps)
    fields = raw.get("fields", {})
    if "fields" in raw:
        why = fields_error(fields, record_format)
        if why:
            raise _err(where, f"field 'fields': {why}")
    try:
        options, fields = reader.parse_options(options, record_format, dict(fields), files)
    except ValueError as e:
        raise _err(where, str(e)) from None
    file_bytes = raw.get("file_bytes", {})
    if not isinstance(file_bytes, dict) or not all(
        isinstance(k, str) and k and "/" not in k and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in file_bytes.items()
    ):
        raise _err(where, "field 'file_bytes' must map file names (no '/') to sizes in bytes (non-negative integers)")
    return CorpusConfig(
        name,
        tuple(files),
        record_format,
        float(weight),
        expected,
        symmetric,
        description,
        prompts,
        dict(fields),
        input_format,
        dict(options),
        dict(file_bytes),
    )


def parse_data_config(raw: Any) -> DataConfig:
    """Validates a decoded `data_config.json`; raises DataConfigError naming corpus and field."""
    if isinstance(raw, list):
        raw = {"corpora": raw}
    if not isinstance(raw, dict) or "corpora" not in raw:
        raise _err("top level", "must be an object with a 'corpora' list")
    extra = sorted(set(raw) - _TOP_FIELDS)
    if extra:
        raise _err("top level", f"unknown field(s) {extra}")
    items = raw["corpora"]
    if not isinstance(items, list) or not items:
        raise _err("top level", "'corpora' must be a non-empty list")
    table, default_prompt_name = _parse_prompt_table(raw)
    corpora = [_parse_corpus(i, c, table) for i, c in enumerate(items)]
    seen: set[str] = set()
    for c in corpora:
        if c.name in seen:
            raise _err(f"corpus {c.name!r}", "duplicate name")
        seen.add(c.name)
    return DataConfig(tuple(corpora), table, default_prompt_name)


def load_data_config(path: str) -> DataConfig:
    try:
        with storage.open_file(path, "r", encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise DataConfigError(f"data config: file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise DataConfigError(f"data config: {path} is not valid JSON: {e}") from None
    return parse_data_config(raw)


def resolve_path(pattern: str, input_root: str | None) -> str:
    """A corpus file pattern made absolute against the input root (gs:// and absolute paths kept)."""
    if storage.is_remote(pattern) or os.path.isabs(pattern) or not input_root:
        return pattern
    return storage.join(input_root, pattern)


def _matches(corpus: CorpusConfig, path: str) -> list[str]:
    """What a resolved pattern names: files, or what the corpus's input format reads (BEIR: directories)."""
    try:
        return corpus.reader.find(path)
    except Exception as e:  # no such bucket, no fsspec driver, or (hf://) the HTTP client's own errors offline
        raise _err(f"corpus {corpus.name!r}", f"cannot list {path!r}: {type(e).__name__}: {str(e)[:300]}") from None


def find_files(corpus: CorpusConfig, input_root: str | None) -> tuple[list[str], list[str]]:
    """(the corpus's concrete files in a stable order, its resolved patterns that matched nothing)."""
    found: list[str] = []
    missing: list[str] = []
    for pattern in corpus.files:
        path = resolve_path(pattern, input_root)
        matched = _matches(corpus, path)
        if not matched:
            missing.append(path)
        found.extend(m for m in matched if m not in found)
    return found, missing


def expand_files(corpus: CorpusConfig, input_root: str | None) -> list[str]:
    """Concrete files of a corpus, in a stable order; an error names the pattern that matched nothing."""
    found, missing = find_files(corpus, input_root)
    if missing:
        raise _err(f"corpus {corpus.name!r}", f"field 'files': no file matches {missing[0]!r}")
    return found


@dataclasses.dataclass(frozen=True)
class LeftOut:
    """A corpus left out of a run because none of its files exist (--skip_missing_corpora)."""

    name: str
    weight: float
    missing: tuple[str, ...]  # its resolved patterns


def resolve_corpora(
    config: DataConfig, input_root: str | None, skip_missing: bool = False
) -> tuple[DataConfig, dict[str, list[str]], list[LeftOut]]:
    """(the config of the corpora that run, their files, the corpora left out).

    Every pattern of every corpus is looked up first, so that one error names every missing file. With
    skip_missing, a corpus none of whose files exist is left out (its weight leaves the sum, so the
    others keep their ratios); a corpus with some files present and others missing is still an error:
    an incomplete download must not become a smaller corpus without notice."""
    files: dict[str, list[str]] = {}
    left_out: list[LeftOut] = []
    problems: list[str] = []
    for c in config.corpora:
        found, missing = find_files(c, input_root)
        if not missing:
            files[c.name] = found
        elif skip_missing and not found:
            left_out.append(LeftOut(c.name, c.weight, tuple(missing)))
        else:
            problems.append(
                f"corpus {c.name!r}: {', '.join(missing)}" + (f" (found {len(found)} other file(s))" if found else "")
            )
    if problems:
        hint = "" if skip_missing else "; --skip_missing_corpora leaves out corpora none of whose files exist"
        raise DataConfigError(
            f"data config: {len(problems)} corpus(es) with missing files: {'; '.join(problems)}{hint}"
        )
    if not files:
        raise DataConfigError(
            "data config: no corpus has its files under the input root "
            f"({input_root}); left out: {', '.join(lo.name for lo in left_out)}"
        )
    kept = dataclasses.replace(config, corpora=tuple(c for c in config.corpora if c.name in files))
    return kept, files, left_out


def check_file_sizes(config: DataConfig, files: dict[str, list[str]]) -> None:
    """Compares each file a corpus's `file_bytes` names with its size (one metadata lookup per named
    file, no read); one DataConfigError names every difference, and a name that matches none of
    the corpus's files."""
    problems = []
    for c in config.corpora:
        by_name = {storage.basename(f): f for f in files.get(c.name, ())}
        for name, expected in sorted(c.file_bytes.items()):
            if name not in by_name:
                problems.append(f"corpus {c.name!r}: file_bytes names {name!r}, which none of its files is")
                continue
            size = storage.size(by_name[name])
            if size != expected:
                problems.append(f"corpus {c.name!r}: {by_name[name]} is {size} bytes, the data config says {expected}")
    if problems:
        raise DataConfigError(
            f"data config: {len(problems)} file size(s) differ (field 'file_bytes'): "
            f"{'; '.join(problems)}; an incomplete copy? Fetch it again or correct file_bytes"
        )
