"""Reddit comment records -> (context, response) pair lines, in Beam: the `reddit` corpus's source.

Input: comment records as the public monthly dumps and BigQuery publish them, one JSON object a line
with `id`, `parent_id` (t1_ = a comment, t3_ = the post), `link_id` (the thread) and `body` (other
fields are read past), in plain, .gz, .bz2, .xz or .zst files (local, gs://, any scheme Beam's
FileSystems knows), and optionally a BigQuery table (RedditOptions.bigquery_table). The graph:

    paths -> files (glob) -> Reshuffle -> ReadComments (one whole file a call: these formats cannot
    be split) -> (thread id, [comments]) -> GroupByKey (thread) -> PairThread -> pair lines -> LineBatch

so no process holds more than one thread. A comment gives a pair when it and its parent (a comment
of the same thread) both pass PolyAI's filters (pipeline/reddit_filters.py, docs/reddit.md). Each pair
line is `{"context": parent body, "response": comment body}`, plus "context/0" (grandparent),
"context/1", ... when RedditOptions.extra_contexts asks for them (PolyAI's names).

Events (the `events` output, one string per event; count them with Count.PerElement):
    lines_read                  each input line or BigQuery row
    dropped/<reason>            a line that is no comment record (invalid_utf8, empty_line, bad_json,
                                wrong_format, line_too_long: REJECTION_REASONS, which also go to
                                `rejected`), a comment PolyAI's filters drop (too_long, deleted,
                                removed, too_short), or a second copy of a comment id (duplicate)
    comments_kept               a comment that may be a context or a response
    pairs                       a kept comment whose parent is a kept comment of its thread
    unpaired/<reason>           a kept comment without such a parent: parent_is_post, parent_missing
                                (not in the input), parent_dropped (filtered out), self_parent
    pairs_written               a pair in RedditOptions.split (all of them for split="all")
    pairs_other_split           a pair of PolyAI's other split

Identities (check_reddit_counts):
    lines_read    == comments_kept + sum(dropped/*)
    comments_kept == pairs + sum(unpaired/*)
    pairs         == pairs_written + pairs_other_split
and the lines in `batches` number pairs_written.

A file that cannot be read to its end (after pipeline/lines.py's retries) is never data: it raises
FileReadFailed and the job fails, or, with on_corrupt_file="skip", it goes to the `skipped` output
and gives nothing. The comments of a file are grouped by thread with other files' before anything
could drop them, so in skip mode each file is first read through once, without parsing, and only a
file read to its end is then read for its comments (skip mode reads each dump twice; the default
reads it once). A glob that matches no file at run time is a FileReadFailed of its own.
"""

from __future__ import annotations

import contextlib
import io
import json
from typing import IO, Iterator, NamedTuple

import apache_beam as beam

from pipeline import hf_filesystem  # noqa: F401 (registers hf:// with Beam's FileSystems on every worker)
from pipeline.lines import (
    DEFAULT_RETRY,
    FileReadFailed,
    LineBatch,
    ResumableReader,
    Retry,
    describe_fault,
    iter_line_batches,
)
from pipeline.processing import rejected_record
from pipeline.reddit_filters import RedditOptions, drop_reason, normalise_id, thread_split, trim

# Event names (module docstring).
LINES_READ = "lines_read"
COMMENTS_KEPT = "comments_kept"
PAIRS = "pairs"
PAIRS_WRITTEN = "pairs_written"
PAIRS_OTHER_SPLIT = "pairs_other_split"
DROPPED = "dropped/"
UNPAIRED = "unpaired/"
DUPLICATE = "duplicate"
PARENT_IS_POST = "parent_is_post"
PARENT_MISSING = "parent_missing"
PARENT_DROPPED = "parent_dropped"
SELF_PARENT = "self_parent"

# Rejection reasons, the job's names (docs/pipeline.md).
INVALID_UTF8 = "invalid_utf8"
EMPTY_LINE = "empty_line"
BAD_JSON = "bad_json"
WRONG_FORMAT = "wrong_format"
LINE_TOO_LONG = "line_too_long"
# The dropped/<reason> events whose lines go to `rejected`: they count in the corpus's rejected total.
REJECTION_REASONS = (INVALID_UTF8, EMPTY_LINE, BAD_JSON, WRONG_FORMAT, LINE_TOO_LONG)

EVENTS = "events"
REJECTED = "rejected"
SKIPPED = "skipped"
# The fields a comment record needs; each a non-empty string (body may be empty).
REQUIRED_FIELDS = ("id", "parent_id", "link_id", "body")
# Bytes of compressed input read per step.
_CHUNK = 1 << 20
# Pushshift's .zst dumps are written with a 2 GiB window (zstd --long=31); the library refuses
# windows over 128 MiB unless told.
ZSTD_MAX_WINDOW = 2**31


class RedditOutputs(NamedTuple):
    batches: beam.PCollection  # LineBatch of pair lines (UTF-8 JSON bytes)
    events: beam.PCollection  # str, one per counted event
    rejected: beam.PCollection  # str, the job's rejected-record JSON
    skipped: beam.PCollection  # (corpus, {"file", "last_line", "cause"}) of files left out (on_corrupt_file="skip")


# ---------------------------------------------------------------------------------------------------
# Files: decompression by extension, on top of Beam's FileSystems.


def _new_decompressor(path: str):
    """A fresh decompressor object for one gzip member / bz2 stream / xz stream / zstd frame, or
    None for an uncompressed file."""
    if path.endswith(".gz"):
        import zlib

        return zlib.decompressobj(wbits=31)
    if path.endswith(".bz2"):
        import bz2

        return bz2.BZ2Decompressor()
    if path.endswith(".xz"):
        import lzma

        return lzma.LZMADecompressor()
    if path.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).decompressobj()
    return None


class _Decompressed(io.RawIOBase):
    """The decompressed bytes of a file of one or more concatenated members/frames. A stream that ends
    inside a member raises EOFError and a corrupt one OSError (zstandard returns a truncated frame's
    bytes without complaint, and lzma / zlib / zstandard raise their own error types): the line
    reader's read faults (pipeline/lines.py)."""

    def __init__(self, raw: IO[bytes], path: str):
        self._raw, self._path = raw, path
        self._d = _new_decompressor(path)
        self._fed = False  # input given to the current member
        self._out = memoryview(b"")

    def readable(self):
        return True

    def _refill(self) -> bool:
        while not self._out:
            data = self._raw.read(_CHUNK)
            if not data:
                if self._fed and not self._d.eof:
                    raise EOFError(f"compressed data ends inside a member/frame: {self._path}")
                return False
            try:
                chunks = []
                while data:
                    chunks.append(self._d.decompress(data))
                    self._fed = True
                    if self._d.eof:  # the next member/frame starts in the unused bytes
                        data = self._d.unused_data
                        self._d, self._fed = _new_decompressor(self._path), False
                    else:
                        data = b""
            except EOFError:
                raise
            except Exception as e:  # zlib.error, OSError, lzma.LZMAError, zstandard.ZstdError
                raise OSError(f"{type(e).__name__}: {e}") from e
            self._out = memoryview(b"".join(chunks))
        return True

    def readinto(self, b) -> int:
        if not self._out and not self._refill():
            return 0
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n


@contextlib.contextmanager
def open_comment_file(path: str) -> Iterator[IO[bytes]]:
    """A binary reader of the decompressed bytes of `path` (chosen by extension), opened through Beam's
    FileSystems uncompressed, so every scheme it knows works and the decompression is ours."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        if _new_decompressor(path) is None:
            yield raw
        else:
            yield io.BufferedReader(_Decompressed(raw, path), buffer_size=_CHUNK)


def _has_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


# ---------------------------------------------------------------------------------------------------
# Records -> comments, and a thread -> pairs (pure functions).


class Rejection(NamedTuple):
    reason: str
    detail: str


def comment_from_record(record, options: RedditOptions):
    """(thread id, comment) of one decoded record, or a Rejection. A comment is the tuple
    (id, parent comment id or None when the parent is the post, body, drop reason or "")."""
    if not isinstance(record, dict):
        return Rejection(WRONG_FORMAT, f"not a JSON object but {type(record).__name__}")
    cid, parent, link, body = record.get("id"), record.get("parent_id"), record.get("link_id"), record.get("body")
    if not (
        type(cid) is str and type(parent) is str and type(link) is str and type(body) is str and cid and parent and link
    ):
        missing = next(
            f
            for f, v in zip(REQUIRED_FIELDS, (cid, parent, link, body))
            if not isinstance(v, str) or (not v and f != "body")
        )
        return Rejection(WRONG_FORMAT, f"field {missing!r} missing or not a non-empty string")
    reason = drop_reason(body, options)
    if reason and not options.extra_contexts:
        body = ""  # only extra contexts show a dropped comment's text: keep the shuffle small
    elif reason:
        body = trim(body, options.max_length)
    parent = None if parent.startswith("t3_") else normalise_id(parent)
    return normalise_id(link), (cid, parent, body, reason)


def parse_comment_line(raw: bytes, options: RedditOptions):
    """(thread id, comment) of one raw line, or a Rejection."""
    if not raw.strip():
        return Rejection(EMPTY_LINE, "")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Rejection(INVALID_UTF8, str(e)[:200])
    try:
        record = json.loads(text)
    except ValueError as e:
        return Rejection(BAD_JSON, str(e)[:200])
    return comment_from_record(record, options)


def pair_line(texts: list) -> bytes:
    """The JSON line of one pair: texts = [response, context, grandparent, ...]."""
    obj = {"context": texts[1], "response": texts[0]}
    for i, text in enumerate(texts[2:]):
        obj[f"context/{i}"] = text
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def pair_thread(thread_id: str, comments, options: RedditOptions) -> tuple[list, list]:
    """(pair lines, events) of one thread's comments, in comment-id order. One copy of each id is
    kept: the first in sorted order, which prefers a copy that passes the filters."""
    events: list = []
    by_id: dict = {}
    for comment in sorted(comments, key=lambda c: (c[0], c[3] != "", c[3], c[2], c[1] or "")):
        if comment[0] in by_id:
            events.append(DROPPED + DUPLICATE)
        else:
            by_id[comment[0]] = comment
    in_split = options.split == "all" or thread_split(thread_id, options) == options.split
    lines = []
    for cid, parent, body, reason in by_id.values():
        if reason:
            events.append(DROPPED + reason)
            continue
        events.append(COMMENTS_KEPT)
        if parent is None:
            events.append(UNPAIRED + PARENT_IS_POST)
        elif parent == cid:
            events.append(UNPAIRED + SELF_PARENT)
        elif parent not in by_id:
            events.append(UNPAIRED + PARENT_MISSING)
        elif by_id[parent][3]:
            events.append(UNPAIRED + PARENT_DROPPED)
        else:
            events.append(PAIRS)
            if not in_split:
                events.append(PAIRS_OTHER_SPLIT)
                continue
            events.append(PAIRS_WRITTEN)
            texts = [body, by_id[parent][2]]
            # Extra contexts: ancestors as far as the thread's data reaches, dropped ones included
            # (PolyAI's linear paths); `seen` guards against a cycle in corrupt data.
            seen = {cid, parent}
            up = by_id[parent][1]
            while len(texts) < 2 + options.extra_contexts and up in by_id and up not in seen:
                seen.add(up)
                texts.append(by_id[up][2])
                up = by_id[up][1]
            lines.append(pair_line(texts))
    return lines, events


def rejected_counts(counts: dict) -> dict[str, int]:
    """reason -> lines of the input written to `rejected` (the dropped/<reason> events of REJECTION_REASONS)."""
    return {r: counts[DROPPED + r] for r in REJECTION_REASONS if counts.get(DROPPED + r)}


def check_reddit_counts(counts: dict) -> list[str]:
    """The identities of the module docstring that `counts` (event -> count) breaks; [] when all hold."""

    def total(prefix):
        return sum(v for k, v in counts.items() if k.startswith(prefix))

    def get(name):
        return counts.get(name, 0)

    failed = []
    dropped, unpaired = total(DROPPED), total(UNPAIRED)
    if get(LINES_READ) != get(COMMENTS_KEPT) + dropped:
        failed.append(f"lines_read ({get(LINES_READ)}) != comments_kept ({get(COMMENTS_KEPT)}) + dropped/* ({dropped})")
    if get(COMMENTS_KEPT) != get(PAIRS) + unpaired:
        failed.append(f"comments_kept ({get(COMMENTS_KEPT)}) != pairs ({get(PAIRS)}) + unpaired/* ({unpaired})")
    if get(PAIRS) != get(PAIRS_WRITTEN) + get(PAIRS_OTHER_SPLIT):
        failed.append(
            f"pairs ({get(PAIRS)}) != pairs_written ({get(PAIRS_WRITTEN)}) "
            f"+ pairs_other_split ({get(PAIRS_OTHER_SPLIT)})"
        )
    return failed


# ---------------------------------------------------------------------------------------------------
# Beam.


def _events_and_rejection(corpus: str, path: str, line_number: int, rejection: Rejection, raw: bytes):
    yield beam.pvalue.TaggedOutput(EVENTS, DROPPED + rejection.reason)
    yield beam.pvalue.TaggedOutput(
        REJECTED, rejected_record(corpus, path, line_number, rejection.reason, rejection.detail, raw)
    )


def _skipped(corpus: str, e: FileReadFailed):
    return beam.pvalue.TaggedOutput(SKIPPED, (corpus, {"file": e.path, "last_line": e.last_line, "cause": e.cause}))


class ExpandPaths(beam.DoFn):
    """A path or glob -> its files, sorted; a pattern that matches none (or cannot be listed) is a
    FileReadFailed (or, with on_corrupt_file="skip", a skipped entry), not a silent nothing."""

    def __init__(self, corpus: str, on_corrupt_file: str = "fail"):
        self._corpus = corpus
        self._skip = on_corrupt_file == "skip"

    def process(self, pattern: str):
        if not _has_glob(pattern):
            yield pattern  # opened as it is (a missing file is the reader's FileReadFailed)
            return
        from apache_beam.io.filesystems import FileSystems

        try:
            files = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
        except Exception as e:  # noqa: BLE001 (BeamIOError, the HTTP clients' own types)
            files, detail = [], describe_fault(e)
        else:
            detail = "no file matches the pattern"
        if not files:
            failure = FileReadFailed(pattern, 0, detail)
            if not self._skip:
                raise failure
            yield _skipped(self._corpus, failure)
        yield from files


class ReadComments(beam.DoFn):
    """One whole comment file -> (thread id, [comments]) elements, with events and rejected lines.
    Comments are grouped by thread within windows of GROUP_WINDOW lines before they leave: a month's
    file is in time order, so a thread's comments mostly fall in one window, and the shuffle then
    moves a few lists instead of one element per comment, in bounded memory."""

    GROUP_WINDOW = 50_000

    def __init__(
        self, corpus: str, options: RedditOptions, on_corrupt_file: str = "fail", retry: Retry = DEFAULT_RETRY
    ):
        self._corpus = corpus
        self._options = options
        self._skip = on_corrupt_file == "skip"
        self._retry = retry

    def process(self, path: str):
        if self._skip:
            try:
                read_through(path, self._retry)
            except FileReadFailed as e:
                yield _skipped(self._corpus, e)
                return
        lines_read = beam.pvalue.TaggedOutput(EVENTS, LINES_READ)
        number = 0
        pending: dict = {}
        held = 0
        for batch in iter_line_batches(
            self._corpus, path, 4096, self._options.max_line_bytes, opener=open_comment_file, retry=self._retry
        ):
            too_long = set(batch.too_long)
            for i, raw in enumerate(batch.lines):
                number = batch.first_line + i
                yield lines_read
                parsed = (
                    Rejection(LINE_TOO_LONG, f"over {self._options.max_line_bytes} bytes")
                    if i in too_long
                    else parse_comment_line(raw, self._options)
                )
                if isinstance(parsed, Rejection):
                    yield from _events_and_rejection(self._corpus, path, number, parsed, raw)
                    continue
                pending.setdefault(parsed[0], []).append(parsed[1])
                held += 1
            if held >= self.GROUP_WINDOW:
                yield from sorted(pending.items())
                pending, held = {}, 0
        yield from sorted(pending.items())


def read_through(path: str, retry: Retry = DEFAULT_RETRY) -> int:
    """Reads a comment file to its end without parsing (the pre-pass of on_corrupt_file="skip"); its
    decompressed bytes, or FileReadFailed."""
    with ResumableReader(path, open_comment_file, retry) as f:
        while f.readline(_CHUNK):
            pass
        return f.offset


class CommentsFromRows(beam.DoFn):
    """BigQuery rows (dicts) -> (thread id, [comment]), as ReadComments does for lines."""

    def __init__(self, corpus: str, options: RedditOptions):
        self._corpus = corpus
        self._options = options

    def process(self, row):
        yield beam.pvalue.TaggedOutput(EVENTS, LINES_READ)
        parsed = comment_from_record(dict(row), self._options)
        if isinstance(parsed, Rejection):
            raw = json.dumps(dict(row), default=str, ensure_ascii=False).encode("utf-8")
            yield from _events_and_rejection(self._corpus, "bigquery:" + self._options.bigquery_table, 0, parsed, raw)
        else:
            yield parsed[0], [parsed[1]]


class PairThread(beam.DoFn):
    """(thread id, lists of its comments) -> pair lines, with events."""

    def __init__(self, options: RedditOptions):
        self._options = options

    def process(self, element):
        thread_id, groups = element
        lines, events = pair_thread(thread_id, [c for group in groups for c in group], self._options)
        for event in events:
            yield beam.pvalue.TaggedOutput(EVENTS, event)
        yield from lines


def _line_batch(lines, corpus: str, label: str) -> LineBatch:
    return LineBatch(corpus, label, 0, list(lines), ())


def source_label(paths: list[str], options: RedditOptions) -> str:
    """What the pair batches name as their `path`: the input pattern(s) or table, kept short."""
    names = list(paths) + (["bigquery:" + options.bigquery_table] if options.bigquery_table else [])
    if not names:
        return ""
    return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} more)"


class RedditPairs(beam.PTransform):
    """Pipeline -> RedditOutputs(batches, events, rejected) for one Reddit corpus (module docstring)."""

    def __init__(
        self, corpus: str, paths: list[str], options: RedditOptions, batch_lines: int, on_corrupt_file: str = "fail"
    ):
        super().__init__()
        if not paths and not options.bigquery_table:
            raise ValueError(f"corpus {corpus!r}: no comment files and no bigquery_table")
        if batch_lines < 1:
            raise ValueError(f"batch_lines must be >= 1, got {batch_lines}")
        self._corpus = corpus
        self._paths = list(paths)
        self._options = options
        self._batch_lines = batch_lines
        self._on_corrupt_file = on_corrupt_file

    def expand(self, pbegin):
        corpus, options = self._corpus, self._options
        keyed, events, rejected, skipped = [], [], [], []
        if self._paths:
            files = (
                pbegin
                | "Patterns" >> beam.Create(self._paths)
                | "ExpandPaths"
                >> beam.ParDo(ExpandPaths(corpus, self._on_corrupt_file)).with_outputs(SKIPPED, main="files")
            )
            read = (
                files.files
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadComments"
                >> beam.ParDo(ReadComments(corpus, options, self._on_corrupt_file)).with_outputs(
                    EVENTS, REJECTED, SKIPPED, main="comments"
                )
            )
            keyed.append(read.comments)
            events.append(read[EVENTS])
            rejected.append(read[REJECTED])
            skipped += [files[SKIPPED], read[SKIPPED]]
        if options.bigquery_table:
            rows = pbegin | "ReadBigQuery" >> beam.io.ReadFromBigQuery(
                table=options.bigquery_table,
                method=beam.io.ReadFromBigQuery.Method.DIRECT_READ,
                selected_fields=list(REQUIRED_FIELDS),
            )
            parsed = rows | "CommentsFromRows" >> beam.ParDo(CommentsFromRows(corpus, options)).with_outputs(
                EVENTS, REJECTED, main="comments"
            )
            keyed.append(parsed.comments)
            events.append(parsed[EVENTS])
            rejected.append(parsed[REJECTED])
        comments = keyed[0] if len(keyed) == 1 else tuple(keyed) | "AllComments" >> beam.Flatten()
        pairs = (
            comments
            | "GroupByThread" >> beam.GroupByKey()
            | "PairThreads" >> beam.ParDo(PairThread(options)).with_outputs(EVENTS, main="pairs")
        )
        events.append(pairs[EVENTS])
        batches = (
            pairs.pairs
            | "BatchPairs" >> beam.BatchElements(min_batch_size=self._batch_lines, max_batch_size=self._batch_lines)
            | "LineBatches" >> beam.Map(_line_batch, corpus, source_label(self._paths, options))
        )
        return RedditOutputs(
            batches=batches,
            events=tuple(events) | "AllEvents" >> beam.Flatten(),
            rejected=tuple(rejected) | "AllRejected" >> beam.Flatten(),
            skipped=(tuple(skipped) or (pbegin | "NoSkipped" >> beam.Create([]),)) | "AllSkipped" >> beam.Flatten(),
        )
