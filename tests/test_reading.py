"""The line reader (pipeline/lines.py through pipeline/reading.py): numbering, long lines, and read
faults, injected (tests/_faulty_fs.py) or real (truncated, corrupt, deleted files): each ends in the
clean run's lines exactly or in FileReadFailed, never in fewer lines."""

import gzip
import os
import random
import zlib

import apache_beam as beam
import pytest

from pipeline.lines import FileReadFailed, Retry, open_with_storage
from pipeline.lines import iter_line_batches as lines_iter
from pipeline.reading import KEEP_OF_LONG_LINE, LINE_COUNTS, SKIPPED, ReadLineBatches, iter_line_batches
from tests import _faulty_fs

NO_WAIT = Retry(attempts=3, backoff_s=0.0)


def _all(path, batch_lines=3, max_line_bytes=100):
    batches = list(iter_line_batches("c", str(path), batch_lines, max_line_bytes))
    lines, too_long = [], []
    for b in batches:
        assert b.first_line == len(lines) + 1 and b.corpus == "c" and b.path == str(path)
        too_long += [b.first_line + i for i in b.too_long]
        lines += b.lines
    return batches, lines, too_long


def test_numbered_batches_from_gzip_and_plain_files(tmp_path):
    data = b"one\ntwo\r\n\nfour\nfive\nsix\nseven"  # CRLF, a blank line, no final line break
    with gzip.open(tmp_path / "a.jsonl.gz", "wb") as f:
        f.write(data)
    (tmp_path / "a.jsonl").write_bytes(data + b"\n")
    for name in ("a.jsonl.gz", "a.jsonl"):
        batches, lines, too_long = _all(tmp_path / name)
        assert lines == [b"one", b"two", b"", b"four", b"five", b"six", b"seven"]
        assert [len(b.lines) for b in batches] == [3, 3, 1] and too_long == []


def test_long_lines_are_cut_and_flagged_without_holding_them(tmp_path):
    long = b"x" * (3 * 1024 * 1024)
    with gzip.open(tmp_path / "l.gz", "wb") as f:
        f.write(b"short\n" + long + b"\n" + b"y" * 100 + b"\n" + b"z" * 101 + b"\nlast\n" + long)
    _, lines, too_long = _all(tmp_path / "l.gz", batch_lines=2, max_line_bytes=100)
    assert too_long == [2, 4, 6]  # exactly max_line_bytes (line 3) is allowed
    assert lines[1] == b"x" * KEEP_OF_LONG_LINE and lines[2] == b"y" * 100 and lines[4] == b"last"
    assert len(lines) == 6


def test_empty_and_missing_files(tmp_path):
    with gzip.open(tmp_path / "empty.gz", "wb"):
        pass
    assert list(iter_line_batches("c", str(tmp_path / "empty.gz"), 10, 100)) == []
    with pytest.raises(FileReadFailed) as e:
        list(iter_line_batches("c", str(tmp_path / "missing.gz"), 10, 100, NO_WAIT))
    assert (e.value.last_line, e.value.attempts) == (0, 3) and "FileNotFoundError" in e.value.cause


# ---------------------------------------------------------------------------------------------------
# Read faults. A corpus of 5,000 lines of random words (so gzip's reads are many small ones).

N_LINES = 5000


def _corpus_lines():
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    return [('["%s", "%d"]' % (" ".join(rng.choice(words) for _ in range(12)), i)).encode() for i in range(N_LINES)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    data = b"\n".join(_corpus_lines()) + b"\n"
    (d / "c.jsonl.gz").write_bytes(gzip.compress(data))
    (d / "c.jsonl").write_bytes(data)
    return d


def _read(path, **kw):
    return [line for b in iter_line_batches("c", str(path), 512, 1 << 20, **kw) for line in b.lines]


@pytest.mark.parametrize("name", ["c.jsonl.gz", "c.jsonl"])
def test_a_transient_fault_heals_without_losing_or_repeating_a_line(corpus, tmp_path, name):
    state = str(tmp_path / "state")
    _faulty_fs.set_faults(state, {name: {"nth_read": 4, "times": 2}})
    got = _read(_faulty_fs.url(str(corpus / name)), retry=NO_WAIT)
    assert _faulty_fs.injected(state) == [name, name]  # two faults in a row, healed by the third attempt
    assert got == _corpus_lines()


def test_a_fault_that_persists_raises_naming_file_line_and_cause(corpus, tmp_path):
    state = str(tmp_path / "state")
    _faulty_fs.set_faults(state, {"c.jsonl.gz": {"nth_read": 4, "times": 0}})
    path = _faulty_fs.url(str(corpus / "c.jsonl.gz"))
    with pytest.raises(FileReadFailed) as e:
        _read(path, retry=NO_WAIT)
    assert len(_faulty_fs.injected(state)) == 3 and e.value.attempts == 3
    assert 0 < e.value.last_line < N_LINES and e.value.cause.startswith("OSError: injected fault at read")
    assert str(e.value).startswith(f"cannot read {path} (after line {e.value.last_line}, 3 attempt(s)): OSError")


def _damaged(corpus, tmp_path, how):
    whole = (corpus / "c.jsonl.gz").read_bytes()
    path = tmp_path / "bad.jsonl.gz"
    if how == "truncated":
        path.write_bytes(whole[: len(whole) * 2 // 3])
    elif how == "deflate":  # the block after a full flush half way gets the reserved block type 11
        data = b"\n".join(_corpus_lines()) + b"\n"
        z = zlib.compressobj(wbits=31)
        head = z.compress(data[: len(data) // 2]) + z.flush(zlib.Z_FULL_FLUSH)
        rest = z.compress(data[len(data) // 2 :]) + z.flush()
        path.write_bytes(head + bytes([0x07]) + rest[1:])
    elif how == "crc":  # the trailer's CRC-32 changed: every byte decompresses, the check fails at the end
        path.write_bytes(whole[:-8] + bytes([whole[-8] ^ 1]) + whole[-7:])
    return path


@pytest.mark.parametrize(
    "how,cause",
    [
        ("truncated", "EOFError"),
        ("deflate", "zlib.error: Error -3 while decompressing data: invalid block type"),
        ("crc", "gzip.BadGzipFile: CRC check failed"),
    ],
)
def test_damaged_gzip_fails_on_every_attempt(corpus, tmp_path, how, cause):
    path = _damaged(corpus, tmp_path, how)
    with pytest.raises(FileReadFailed) as e:
        _read(path, retry=NO_WAIT)
    assert e.value.attempts == 3 and cause in e.value.cause and e.value.path == str(path)
    assert e.value.last_line < N_LINES or how == "crc"


def test_a_file_deleted_after_listing(corpus, tmp_path):
    path = tmp_path / "gone.jsonl.gz"
    path.write_bytes((corpus / "c.jsonl.gz").read_bytes())
    listed = beam.io.filesystems.FileSystems.match([str(tmp_path / "*.gz")])[0].metadata_list
    os.remove(path)
    with pytest.raises(FileReadFailed, match="FileNotFoundError"):
        _read(listed[0].path, retry=NO_WAIT)


def test_the_miners_reader_fails_too(corpus, tmp_path):
    """pipeline/storage.py's opener (the miner's): the same FileReadFailed, never part of a file."""
    path = _damaged(corpus, tmp_path, "truncated")
    with pytest.raises(FileReadFailed, match="EOFError"):
        list(lines_iter("mine", str(path), 512, 1 << 20, opener=open_with_storage, retry=NO_WAIT))


def _outputs(fn, element):
    out = {}
    for o in fn.process(element):
        tag = getattr(o, "tag", "main")
        out.setdefault(tag, []).append(getattr(o, "value", o))
    return out


def test_the_dofn_fails_or_skips_the_whole_file(corpus, tmp_path):
    bad = str(_damaged(corpus, tmp_path, "truncated"))
    with pytest.raises(FileReadFailed):
        _outputs(ReadLineBatches(512, 1 << 20, "fail", NO_WAIT), ("c", bad))
    out = _outputs(ReadLineBatches(512, 1 << 20, "skip", NO_WAIT), ("c", bad))
    ((corpus_name, entry),) = out[SKIPPED]
    assert corpus_name == "c" and entry["file"] == bad and "EOFError" in entry["cause"]
    assert LINE_COUNTS not in out and 0 < entry["last_line"] < N_LINES
    # The batches it emitted before the fault are dropped downstream (test_processing.py).
    assert sum(len(b.lines) for b in out["main"]) == entry["last_line"] - entry["last_line"] % 512
    good = _outputs(ReadLineBatches(512, 1 << 20, "skip", NO_WAIT), ("c", str(corpus / "c.jsonl.gz")))
    assert good[LINE_COUNTS] == [("c", N_LINES)] and SKIPPED not in good
