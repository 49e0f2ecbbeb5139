import gzip

from pipeline.reading import KEEP_OF_LONG_LINE, iter_line_batches


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
        assert all(b.read_error == "" for b in batches)


def test_long_lines_are_cut_and_flagged_without_holding_them(tmp_path):
    long = b"x" * (3 * 1024 * 1024)
    with gzip.open(tmp_path / "l.gz", "wb") as f:
        f.write(b"short\n" + long + b"\n" + b"y" * 100 + b"\n" + b"z" * 101 + b"\nlast\n" + long)
    _, lines, too_long = _all(tmp_path / "l.gz", batch_lines=2, max_line_bytes=100)
    assert too_long == [2, 4, 6]  # exactly max_line_bytes (line 3) is allowed
    assert lines[1] == b"x" * KEEP_OF_LONG_LINE and lines[2] == b"y" * 100 and lines[4] == b"last"
    assert len(lines) == 6


def test_empty_truncated_and_missing_files(tmp_path):
    with gzip.open(tmp_path / "empty.gz", "wb"):
        pass
    assert list(iter_line_batches("c", str(tmp_path / "empty.gz"), 10, 100)) == []
    whole = gzip.compress(b"".join(b'["line %d", "x"]\n' % i for i in range(5000)))
    (tmp_path / "cut.gz").write_bytes(whole[: len(whole) // 2])
    batches = list(iter_line_batches("c", str(tmp_path / "cut.gz"), 1000, 1000))
    assert batches[-1].read_error and "EOFError" in batches[-1].read_error
    assert 0 < sum(len(b.lines) for b in batches) < 5000
    missing = list(iter_line_batches("c", str(tmp_path / "missing.gz"), 10, 100))
    assert len(missing) == 1 and missing[0].lines == [] and missing[0].read_error
