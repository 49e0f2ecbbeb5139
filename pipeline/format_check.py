"""The job's start-up check: the first lines of every file parsed with its corpus's declared format.

A corpus declared with the wrong record format or field mapping would otherwise become a run that
rejects every line, found only when the job ends (on Dataflow, after paying for it). Here, on the
launcher and before any worker starts, the first SAMPLE_LINES lines (or Parquet rows) of each file go
through the same parser the job uses; when most are rejected the job stops with one line naming the
corpus, the file, the format and the reasons. `python -m pipeline.inspect_files` prints the same check in
full. Files are read through pipeline/storage.py (local, gs://, hf://).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from typing import Iterator

from pipeline import lines as lines_lib
from pipeline import parsing, storage
from pipeline.user_errors import UserError

SAMPLE_LINES = 1000
PARQUET_SUFFIX = ".parquet"
COMMENT_DUMP_SUFFIXES = (".zst", ".bz2", ".xz")
MAX_LINE_BYTES = 1 << 20
# Above this share of rejected sample lines the declared format is taken to be wrong.
MOST = 0.5


def is_parquet(path: str) -> bool:
    return path.endswith(PARQUET_SUFFIX)


class FormatCheckError(UserError):
    """A corpus whose declared record format rejects most of a file's first lines."""


def sample_lines(path: str, n: int = SAMPLE_LINES) -> tuple[list[bytes], tuple[int, ...]]:
    """(the first n lines of a JSON-lines file, or n rows of a Parquet file as object lines; the
    indexes of lines cut for being longer than MAX_LINE_BYTES)."""
    if is_parquet(path):
        return [parsing.row_line(r) for r in parquet_rows(path, n)], ()
    if path.endswith(COMMENT_DUMP_SUFFIXES):  # Reddit's dumps: bz2, xz, zstd with a long window
        from pipeline.reddit import open_comment_file

        with open_comment_file(path) as f:
            return [line.rstrip(b"\r\n") for line in itertools.islice(f, n)], ()
    out: list[bytes] = []
    too_long: list[int] = []
    for batch in lines_lib.iter_line_batches("", path, min(n, 4096), MAX_LINE_BYTES):
        too_long.extend(len(out) + i for i in batch.too_long)
        out.extend(batch.lines)
        if len(out) >= n:
            break
    return out[:n], tuple(i for i in too_long if i < n)


def parquet_rows(path: str, n: int) -> list[dict]:
    import pyarrow.parquet as pq

    with storage.open_file(path, "rb") as f:
        pf = pq.ParquetFile(f)
        return list(itertools.islice(_rows(pf, n), n))


def _rows(pf, n: int) -> Iterator[dict]:
    for batch in pf.iter_batches(batch_size=min(n, 4096)):
        yield from batch.to_pylist()


@dataclasses.dataclass
class SampleCheck:
    corpus: str
    path: str
    what: str  # "record_format 'pair'", "record_format 'pair' with fields {...}", "Reddit comment records"
    sampled: int = 0
    reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    first_detail: dict = dataclasses.field(default_factory=dict)  # reason -> the first line's detail

    @property
    def rejected(self) -> int:
        return sum(self.reasons.values())

    @property
    def mostly_rejected(self) -> bool:
        return self.sampled > 0 and self.rejected > MOST * self.sampled

    def describe(self) -> str:
        reasons = ", ".join(
            f"{r} {n}" + (f" ({self.first_detail[r]})" if self.first_detail.get(r) else "")
            for r, n in self.reasons.most_common()
        )
        return f"{self.what} rejects {self.rejected} of the first {self.sampled} lines" + (
            f": {reasons}" if reasons else ""
        )


def check_sample(corpus, path: str, n: int = SAMPLE_LINES) -> SampleCheck:
    """The first n lines of a file judged as its corpus (a data_config.CorpusConfig) reads them."""
    lines, too_long = sample_lines(path, n)
    what, rejections = corpus.reader.sample_rejections(corpus, lines, too_long)
    out = SampleCheck(corpus.name, path, what, len(lines))
    for r in rejections:
        out.reasons[r.reason] += 1
        out.first_detail.setdefault(r.reason, r.detail[:160])
    return out


def check_files_sample(corpus, files: list[str], n: int = SAMPLE_LINES) -> None:
    """Raises FormatCheckError for the first file whose sample the corpus's declared format mostly rejects
    (the start-up check of the formats that read files line by line)."""
    for path in files:
        try:
            result = check_sample(corpus, path, n)
        except Exception as e:  # noqa: BLE001 (pyarrow, gzip and HTTP clients raise their own types)
            raise FormatCheckError(
                f"corpus {corpus.name!r}, file {path}: cannot read its first lines ({type(e).__name__}: {str(e)[:300]})"
            ) from None
        if result.mostly_rejected:
            raise FormatCheckError(
                f"corpus {corpus.name!r}, file {path}: {result.describe()}; fix the corpus's record_format / "
                f"fields (python -m pipeline.inspect_files {path} prints what the lines hold), or pass "
                "--no_format_check"
            )


def check_before_start(config, files: dict[str, list[str]], n: int = SAMPLE_LINES) -> None:
    """Each corpus's input format's start-up check (default: check_files_sample) over a data_config.DataConfig
    and its resolved files; raises FormatCheckError."""
    for c in config.corpora:
        c.reader.check_before_start(c, files[c.name], n)
