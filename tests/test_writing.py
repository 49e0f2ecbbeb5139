import json
import os
import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.tensorflow_import import import_tensorflow
from pipeline.writing import (
    JSON_LINES,
    TFRECORDS,
    OutputDirError,
    WriteShards,
    frame_records,
    item_digest,
    list_files,
    prepare_output_dir,
    shard_of,
)
from tests._tfrecords import read_tfrecords

tf = import_tensorflow()


def _write(out, batches, file_format=TFRECORDS, shards=3, per_shard=1, runner="FnApiRunner", options=()):
    with beam.Pipeline(runner, options=PipelineOptions(list(options))) as p:
        _ = p | beam.Create(batches, reshuffle=False) | WriteShards(str(out), file_format, shards, per_shard)


def _contents(root) -> dict:
    return {f: (root / f).read_bytes() for f in list_files(str(root), "**")}


def test_shards_are_gzip_tfrecords_that_tensorflow_reads(tmp_path):
    batches = [[f"record {b}-{i}".encode() for i in range(50)] for b in range(7)] + [[b""]]
    _write(tmp_path / "c" / "train", batches)
    files = list_files(str(tmp_path), "c/train-*")
    assert files == [f"c/train-0000{i}-of-00003.tfrecord.gz" for i in range(3)]
    got = [[x.numpy() for x in tf.data.TFRecordDataset(str(tmp_path / f), compression_type="GZIP")] for f in files]
    assert sorted(r for shard in got for r in shard) == sorted(r for b in batches for r in b)
    # Each record in the shard its digest picks, a shard sorted by digest.
    for i, shard in enumerate(got):
        assert shard and all(shard_of(r, 3) == i for r in shard)
        assert shard == sorted(shard, key=item_digest)


def test_any_arrival_order_and_batching_writes_the_same_bytes(tmp_path):
    # The same records in other lists, in another order, on two worker processes: the same files.
    records = [f"record {i}".encode() * (1 + i % 5) for i in range(300)]
    _write(tmp_path / "a" / "train", [records[i : i + 40] for i in range(0, 300, 40)])
    shuffled = random.Random(0).sample(records, len(records))
    _write(
        tmp_path / "b" / "train",
        [shuffled[i : i + 7] for i in range(0, 300, 7)],
        options=["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    )
    a, b = _contents(tmp_path / "a"), _contents(tmp_path / "b")
    assert sorted(a) == [f"train-0000{i}-of-00003.tfrecord.gz" for i in range(3)] and a == b


def test_a_counted_shard_count_writes_empty_and_many_shards(tmp_path):
    # shards=0: ceil(items / per_shard) files; none at all still writes one, empty.
    _write(tmp_path / "none" / "rejected", [], JSON_LINES, shards=0, per_shard=2)
    assert _contents(tmp_path / "none") == {"rejected-00000-of-00001.jsonl": b""}
    lines = [
        json.dumps({"corpus": c, "file": "f", "line_number": n, "reason": "bad_json"}) for c in "ba" for n in (10, 9)
    ]
    _write(tmp_path / "one" / "rejected", lines, JSON_LINES, shards=0, per_shard=4)
    # Sorted by corpus, file and line number (not as text: 9 before 10).
    assert (
        _contents(tmp_path / "one")["rejected-00000-of-00001.jsonl"]
        == "".join(
            json.dumps({"corpus": c, "file": "f", "line_number": n, "reason": "bad_json"}) + "\n"
            for c in "ab"
            for n in (9, 10)
        ).encode()
    )
    _write(tmp_path / "many" / "rejected", lines, JSON_LINES, shards=0, per_shard=3)
    many = _contents(tmp_path / "many")
    assert sorted(many) == ["rejected-00000-of-00002.jsonl", "rejected-00001-of-00002.jsonl"]
    assert sorted(b"".join(many.values()).splitlines()) == sorted(x.encode() for x in lines)


def test_framing_is_checked(tmp_path):
    framed = bytearray(frame_records([b"hello", b"world"]))
    (tmp_path / "ok.tfrecord").write_bytes(bytes(framed))
    assert read_tfrecords(str(tmp_path / "ok.tfrecord")) == [b"hello", b"world"]
    framed[14] ^= 1  # a byte of the first record's data: its CRC no longer matches
    (tmp_path / "bad.tfrecord").write_bytes(bytes(framed))
    with pytest.raises(tf.errors.DataLossError):
        read_tfrecords(str(tmp_path / "bad.tfrecord"))


def test_output_dir_guard(tmp_path):
    out = tmp_path / "out"
    prepare_output_dir(str(out), overwrite=False)  # created
    assert out.is_dir()
    prepare_output_dir(str(out), overwrite=False)  # empty: fine
    (out / "sub").mkdir()
    (out / "sub" / "f").write_text("x")
    (out / "g").write_text("y")
    with pytest.raises(OutputDirError, match="not empty.*--overwrite"):
        prepare_output_dir(str(out), overwrite=False)
    prepare_output_dir(str(out), overwrite=True)
    assert os.listdir(out) == []
    (tmp_path / "file").write_text("z")
    with pytest.raises(OutputDirError, match="not a directory"):
        prepare_output_dir(str(tmp_path / "file"), overwrite=True)
