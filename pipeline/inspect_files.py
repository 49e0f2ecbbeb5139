"""What a corpus file holds, and whether a data config reads it: `python -m pipeline.inspect_files`.

  python -m pipeline.inspect_files PATH_OR_GLOB... [--data_config=FILE] [--input_root=DIR]

Per file (JSON lines, .gz or not, or Parquet; local, gs:// or hf://): the line shapes of a sample
(list lengths, object keys; a Parquet file's schema), two sample lines cut short, and the line
count, exact for files up to EXACT_BYTES and otherwise estimated from a prefix (it says which).
With a data config: for each file a corpus covers, whether the corpus's declared format accepts
the sample (the share rejected and the reasons: the job's own start-up check, pipeline/format_check.py);
for each file no corpus covers, a data-config entry to start from. With a data config and no
paths, every file of every corpus is inspected. Exit status 1 when a declared format rejects most
of its sample, 2 for a usage error.

Given the job's output directory (one holding manifest.json) instead, it prints what the job wrote and
removed, per corpus: lines read, written, rejected, duplicates removed, tuples removed as evaluation
texts (by set), the overlap with other corpora, and the evaluation sets checked.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import re
import sys

from pipeline import data_config as dc
from pipeline import format_check, input_formats, storage
from pipeline.user_errors import ArgumentParser, UserError, run_cli

EXACT_BYTES = 64 << 20  # files up to this size (as stored) are counted in full
PREFIX_BYTES = 8 << 20  # larger ones: lines per stored byte over this prefix, times the size
SHOW_CHARS = 160
# The published weights' rule (../shared/reference/corpora.md): lines / 4000, at least 1, at most 247.
WEIGHT_DIVISOR, WEIGHT_CAP = 4000, 247


def shape_of(line: bytes) -> str:
    """A short name of a line's JSON shape: 'list of 2', 'object {query: str, pos: list}', 'bad JSON'."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return "bad JSON"
    if isinstance(obj, list):
        return f"list of {len(obj)}"
    if isinstance(obj, dict):
        kinds = {str: "str", list: "list", type(None): "null"}
        return "object {" + ", ".join(f"{k}: {kinds.get(type(v), type(v).__name__)}" for k, v in obj.items()) + "}"
    return f"JSON {type(obj).__name__}"


def count_lines(path: str) -> tuple[int | None, bool]:
    """(line count, exact?): exact up to EXACT_BYTES stored, else estimated from a PREFIX_BYTES prefix;
    (None, False) for a bz2 / xz / zstd dump over EXACT_BYTES (its stored bytes per line are not known)."""
    if path.endswith(format_check.COMMENT_DUMP_SUFFIXES):
        if _size(path) > EXACT_BYTES:
            return None, False
        from pipeline.reddit import open_comment_file

        with open_comment_file(path) as f:
            return sum(1 for _ in f), True
    if format_check.is_parquet(path):
        import pyarrow.parquet as pq

        with storage.open_file(path, "rb") as f:
            return pq.ParquetFile(f).metadata.num_rows, True
    size = _size(path)
    with storage.open_file(path, "rb") as raw:
        f = gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw
        n = 0
        for n, _ in enumerate(f, 1):
            if size > EXACT_BYTES and raw.tell() >= PREFIX_BYTES:
                return round(n * size / raw.tell()), False
    return n, True


def _size(path: str) -> int:
    if storage.is_remote(path):
        import fsspec

        fs, p = fsspec.core.url_to_fs(path)
        return fs.size(p)
    return os.path.getsize(path)


def decoded(lines: list[bytes]) -> list:
    """The lines that are JSON, decoded."""
    objs = []
    for line in lines:
        try:
            objs.append(json.loads(line))
        except (ValueError, RecursionError):
            pass
    return objs


def recognised_format(objs: list) -> tuple[input_formats.InputFormat, str] | None:
    """(the input format whose records most of a sample holds, its note), for formats that say so."""
    for name in input_formats.names():
        fmt = input_formats.get(name)
        note = fmt.recognise(objs)
        if note:
            return fmt, note
    return None


def suggest_entry(path: str, lines: list[bytes], count: int, exact: bool) -> dict:
    """A data-config entry for a file from its dominant line shape (to check, not to trust blindly:
    a list of three texts may be a triplet or a small set)."""
    objs = decoded(lines)
    shapes = collections.Counter(shape_of(line) for line in lines).most_common()
    entry: dict = {"name": _corpus_name(path), "files": [os.path.basename(path)]}
    recognised = recognised_format(objs)
    if recognised:
        return recognised[0].suggest_entry(entry)
    first = next((o for o in objs if isinstance(o, (list, dict))), None)
    fmt, fields, note = "pair", None, ""
    list_key = next((k for k in ("set", "texts") if isinstance(first, dict) and isinstance(first.get(k), list)), None)
    if isinstance(first, list) or list_key:
        key = list_key
        held = [o.get(key) if key and isinstance(o, dict) else o for o in objs]
        sizes = {len(v) for v in held if isinstance(v, list)}
        fmt = "pair" if sizes == {2} else "triplet" if sizes == {3} else "set"
        note = (
            "a list of 3 texts may also be a small set: declare 'set' if they are interchangeable"
            if fmt == "triplet"
            else ""
        )
        # {"set": [...]} and older releases' {"texts": [...]} read without a field mapping
    elif isinstance(first, dict) and {"query", "pos"} <= set(first):
        fmt = "query_with_negatives" if "neg" in first else "query"
    elif isinstance(first, dict):
        text_keys = [k for k, v in first.items() if isinstance(v, str)][:3]
        fmt = "triplet" if len(text_keys) == 3 else "pair"
        fields = dict(zip(("anchor", "positive", "negative"), text_keys))
        note = "fields mapped from the object's string keys in order: check which is the anchor"
    entry["record_format"] = fmt
    if fields:
        entry["fields"] = fields
    entry["weight"] = max(1, min(WEIGHT_CAP, round((count or 0) / WEIGHT_DIVISOR)))
    if exact:
        entry["expected_lines"] = count
    entry["description"] = (
        f"{shapes[0][0] if shapes else 'empty'}; weight: lines / {WEIGHT_DIVISOR}, "
        f"capped at {WEIGHT_CAP}" + (f"; {note}" if note else "")
    )
    return entry


def _corpus_name(path: str) -> str:
    base = os.path.basename(path)
    for suffix in (".jsonl.gz", ".json.gz", ".jsonl", ".parquet", ".gz"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9_.-]", "_", base) or "corpus"


def parquet_schema(path: str) -> str:
    import pyarrow.parquet as pq

    with storage.open_file(path, "rb") as f:
        return ", ".join(f"{field.name}: {field.type}" for field in pq.ParquetFile(f).schema_arrow)


def _cut(line: bytes) -> str:
    text = line[: SHOW_CHARS * 4].decode("utf-8", "replace")
    return text if len(text) <= SHOW_CHARS else text[:SHOW_CHARS] + " ..."


def inspect_file(path: str, out) -> tuple[list[bytes], int, bool]:
    """Prints a file's report; returns its sample lines and its line count (and whether exact)."""
    lines, _ = format_check.sample_lines(path)
    count, exact = count_lines(path)
    print(f"{path}", file=out)
    if count is None:
        print(f"  lines: not counted (a compressed dump over {EXACT_BYTES >> 20} MiB)", file=out)
    else:
        print(
            f"  lines: {count:,}" + ("" if exact else f" (estimated from the first {PREFIX_BYTES >> 20} MiB)"), file=out
        )
    if format_check.is_parquet(path):
        print(f"  Parquet schema: {parquet_schema(path)}", file=out)
    for shape, n in collections.Counter(shape_of(line) for line in lines).most_common(3):
        print(f"  shape: {shape}  ({n} of the first {len(lines)})", file=out)
    for line in lines[:2]:
        print(f"  sample: {_cut(line)}", file=out)
    recognised = recognised_format(decoded(lines))
    if recognised:
        print(f"  {recognised[1]}", file=out)
    return lines, count, exact


def report_output_dir(path: str, out) -> None:
    """What the job wrote and removed (module docstring), from the directory's manifest."""
    from pipeline.manifest import MANIFEST_NAME, cleaning_summary, read_manifest

    m = read_manifest(path)
    t = m["totals"]
    print(
        f"{storage.join(path, MANIFEST_NAME)}: {t['lines_read']} lines read, {t['train_examples']} train, "
        f"{t['validation_examples']} validation, {t['rejected']} rejected; {cleaning_summary(m)}",
        file=out,
    )
    print(
        f"  {'corpus':<24} {'read':>10} {'written':>10} {'rejected':>9} {'duplicates':>10} {'eval texts':>10}  "
        "overlap / by set",
        file=out,
    )
    for c in m["corpora"]:
        decon = c.get("decontaminated", {"total": 0, "by_set": {}})
        notes = [f"also in {k}: {v}" for k, v in c.get("overlap", {}).items()]
        notes += [f"{k}: {v}" for k, v in decon["by_set"].items()]
        print(
            f"  {c['name']:<24} {c['lines_read']:>10} {c['train_examples'] + c['validation_examples']:>10} "
            f"{c['rejected']['total']:>9} {c.get('duplicates_removed', 0):>10} {decon['total']:>10}  "
            f"{'; '.join(notes)}",
            file=out,
        )
    for s in (m.get("cleaning") or {}).get("decontaminate", []):
        print(
            f"  evaluation set {s['name']} ({s['kind']}, {s['path']}): {s['texts']} texts read, {s['skipped']} "
            f"lines skipped, {s['removed_lines']} training lines removed",
            file=out,
        )


def build_parser():
    p = ArgumentParser(prog="python -m pipeline.inspect_files", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="*", help="files or globs (local, gs://, hf://), or the job's output directory")
    p.add_argument("--data_config", default=None, help="check the files against this data config")
    p.add_argument("--input_root", default=None, help="the config's relative patterns' root (default: its directory)")
    return p


def main(argv=None) -> int:
    return run_cli("python -m pipeline.inspect_files", _main, argv)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    out = sys.stdout
    config = dc.load_data_config(args.data_config) if args.data_config else None
    root = args.input_root or (storage.dirname(storage.abspath(args.data_config)) if args.data_config else None)
    covered: dict[str, dc.CorpusConfig] = {}
    if config:
        for c in config.corpora:
            if c.reader.reads_files:
                covered.update((f, c) for f in dc.find_files(c, root)[0])
    outputs = [p for p in args.paths if storage.exists(storage.join(storage.abspath(p), "manifest.json"))]
    for path in outputs:
        report_output_dir(storage.abspath(path), out)
    if outputs and len(outputs) == len(args.paths) and not config:
        return 0
    paths = [
        f
        for pattern in args.paths
        if pattern not in outputs
        for f in (storage.glob(storage.abspath(pattern)) or [pattern])
    ]
    if not args.paths:
        if not config:
            raise UserError("give files to inspect, or a --data_config whose files to check")
        paths = list(covered)
    failed = 0
    suggestions = []
    for path in paths:
        if not storage.exists(path):
            raise UserError(f"no such file: {path}")
        lines, count, exact = inspect_file(path, out)
        corpus = covered.get(path)
        if corpus is not None:
            result = format_check.check_sample(corpus, path)
            verdict = "REJECTS MOST" if result.mostly_rejected else "ok"
            print(
                f"  corpus {corpus.name!r}: {result.describe()} ({result.rejected / max(1, result.sampled):.1%}) "
                f"-> {verdict}",
                file=out,
            )
            failed += result.mostly_rejected
        else:
            suggestions.append(suggest_entry(path, lines, count, exact))
    if suggestions:
        what = "not covered by the data config" if config else "as data-config entries"
        print(f"\nFiles {what} (check each entry before use):", file=out)
        print(json.dumps(suggestions, indent=2, ensure_ascii=False), file=out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
