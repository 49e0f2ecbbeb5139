"""One batch of raw lines -> encoded records (train / validation), rejected lines and statistics.

Everything per line happens in this one DoFn, on a whole batch at a time: decoding, parsing by the
corpus's declared record format, tokenizing all texts of the batch in one fast-tokenizer call, the split,
and serialisation. Outputs (tagged):
  output_tag(corpus, split): lists of serialised tf.train.Example records
  "rejected": JSON lines {"corpus", "file", "line_number", "reason", "detail", "line"}
  "stats": (corpus, stats dict of pipeline/stats.py) once per batch, with the texts dropped from lines
           that stay (a set's empty members) by reason
With the cleaning stages on (`cleaning`, pipeline/dedup.py), records do not go to their output tags
here: each accepted line becomes an entry on "tuples", (tuple bucket, [entries]) once per bucket and
batch (dedup.pack_entries), and, when decontaminating, its texts' keys go to "keys", (key bucket,
(keys, tuple keys)) packed as arrays (decontaminate.pack_keys).
"""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np

from pipeline import dedup, normalize, parsing, splitting, stats
from pipeline.decontaminate import TK, by_bucket, pack_keys
from pipeline.reading import LineBatch
from pipeline.record_schema import encode_record, fingerprint
from pipeline.tokenizing import BatchTokenizer

REJECTED = "rejected"
STATS = "stats"
TUPLES = "tuples"
KEYS = "keys"
# The `line` field of a rejected record is cut to this many characters.
REJECTED_LINE_CHARS = 1000


def output_tag(corpus: str, split: str) -> str:
    # Letters, digits, '_', '-', '.' only (corpus names are restricted to these): runners name
    # PCollections after tags.
    return f"{split}__{corpus}"


def rejected_record(corpus: str, path: str, line_number: int | None, reason: str, detail: str, raw: bytes) -> str:
    line = raw[: REJECTED_LINE_CHARS * 4].decode("utf-8", "replace")[:REJECTED_LINE_CHARS]
    return json.dumps(
        {"corpus": corpus, "file": path, "line_number": line_number, "reason": reason, "detail": detail, "line": line},
        ensure_ascii=False,
    )


class ProcessLineBatch(beam.DoFn):
    def __init__(
        self,
        line_formats: dict[str, tuple[str, dict | None]],
        tokenizer_json_path: str,
        max_seq_length: int,
        validation_fraction: float,
        prompts: dict[str, dict[int, str]] | None = None,
        cleaning: dict | None = None,
    ):
        # corpus name -> (declared record format, fields or None): CorpusConfig.line_format, plain data.
        self._formats = line_formats
        # corpus name -> {text role: prompt text} (CorpusConfig.role_prompts): plain data, pickled to workers.
        self._prompts = prompts or {}
        self._tokenizer_json_path = tokenizer_json_path
        self._max_seq_length = max_seq_length
        self._validation_fraction = validation_fraction
        self._tokenizer = None
        # None, or plain data: {"decontaminate": bool, "symmetric": {corpus: bool}, "tuple_buckets": int,
        # "key_buckets": int} (job.cleaning_spec).
        self._cleaning = cleaning

    def setup(self):
        # Once per worker (DoFn instance), not per bundle or element.
        self._tokenizer = BatchTokenizer.from_path(self._tokenizer_json_path, self._max_seq_length)

    def process(self, batch: LineBatch, skipped=()):
        """`skipped`: (corpus, {"file", ...}) of files left out by --on_corrupt_file=skip (a side
        input): their batches are dropped here, so a skipped file gives nothing, never a prefix."""
        corpus, path = batch.corpus, batch.path
        if skipped and any(s["file"] == path for _, s in skipped):
            return
        record_format, fields = self._formats[corpus]
        prompts = self._prompts.get(corpus)
        acc = stats.new_stats(self._max_seq_length)
        acc["lines_read"] = len(batch.lines)
        rejected = acc["rejected"]

        def reject(i, reason, detail, raw):
            rejected[reason] = rejected.get(reason, 0) + 1
            number = batch.first_line + i if batch.first_line else None
            return beam.pvalue.TaggedOutput(REJECTED, rejected_record(corpus, path, number, reason, detail, raw))

        accepted = []  # (raw line, texts, roles)
        all_texts = []
        for i, raw, parsed in parsing.parse_lines(batch.lines, batch.too_long, record_format, fields, acc["dropped"]):
            if isinstance(parsed, parsing.Rejection):
                yield reject(i, parsed.reason, parsed.detail, raw)
                continue
            texts, roles = parsed
            accepted.append((i, raw, texts, roles))
            # A prompt is prepended to the text before tokenizing, as sentence-transformers applies it
            # (it counts toward max_seq_length); fingerprints below stay those of the texts themselves.
            all_texts.extend([prompts.get(r, "") + t for t, r in zip(texts, roles)] if prompts else texts)

        ids, truncated = self._tokenizer.encode(all_texts) if all_texts else ([], [])
        hist = acc["hist"]
        for n in map(len, ids):
            hist[n] += 1
        acc["texts"] = len(ids)
        acc["truncated"] = sum(truncated)

        out = {splitting.TRAIN: [], splitting.VALIDATION: []}
        fraction = self._validation_fraction
        pos = 0
        for i, raw, texts, roles in accepted:
            n = len(texts)
            record = encode_record(ids[pos : pos + n], roles, [fingerprint(t.strip()) for t in texts])
            pos += n
            out[splitting.split_of(raw, fraction)].append((i, raw, texts, roles, record))
        if self._cleaning:
            yield from self._to_cleaning(batch, record_format, out)
            yield beam.pvalue.TaggedOutput(STATS, (corpus, acc))  # its train / validation come from dedup.Decide
            return
        for split, records in out.items():
            records = [r[-1] for r in records]
            acc[split] = len(records)
            if records:
                yield beam.pvalue.TaggedOutput(output_tag(corpus, split), records)
        yield beam.pvalue.TaggedOutput(STATS, (corpus, acc))

    def _to_cleaning(self, batch: LineBatch, record_format: str, out: dict):
        """Entries of the cleaning stages (module docstring), packed by bucket: one element per bucket.
        Built as columns over the batch (no Python object per entry beyond its tuple key)."""
        c = self._cleaning
        symmetric, decontaminate = c["symmetric"][batch.corpus], c["decontaminate"]
        # (split, i, raw, texts, roles, record) per line
        lines = [(split, *r) for split, records in out.items() for r in records]
        if not lines:
            return
        all_norms = normalize.normalize_many([t for line in lines for t in line[3]])  # the batch's texts, in order
        counts = [len(line[3]) for line in lines]
        bounds = np.cumsum([0, *counts]).tolist()
        norms = [all_norms[a:b] for a, b in zip(bounds, bounds[1:])]
        tks = [dedup.tuple_key(record_format, symmetric, n, line[4]) for n, line in zip(norms, lines)]
        first = batch.first_line
        numbers = [first + line[1] for line in lines] if first else [0] * len(lines)
        columns = (
            tks,
            numbers,
            [dedup.line_digest(line[2], number) for line, number in zip(lines, numbers)],
            [line[0] for line in lines],
            [line[5] for line in lines],
            [dedup.TEXT_SEP.join(n) for n in norms] if decontaminate else None,
        )
        for b, part in by_bucket(dedup.tuple_prefixes(b"".join(tks)), c["tuple_buckets"]):
            if not isinstance(part, slice):
                part = part.tolist()
                columns_b = [col if col is None else [col[i] for i in part] for col in columns]
            else:
                columns_b = columns
            yield beam.pvalue.TaggedOutput(TUPLES, (b, dedup.pack_columns(batch.corpus, batch.path, *columns_b)))
        if decontaminate and all_norms:
            # A tuple's keys: the union of its texts' keys, computed for the whole batch at once.
            keys, of = normalize.batch_text_keys(all_norms, np.repeat(np.arange(len(lines)), counts))
            key_tks = np.frombuffer(b"".join(tks), f"S{TK}")[of]
            yield from (beam.pvalue.TaggedOutput(KEYS, kb) for kb in pack_keys(keys, key_tks, c["key_buckets"]))
