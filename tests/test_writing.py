import os

import apache_beam as beam
import pytest

from pipeline.writing import OutputDirError, WriteRecordBatches, frame_records, list_files, prepare_output_dir
from tests._tfrecords import read_tfrecords


def test_sink_writes_sharded_gzip_tfrecords_that_tensorflow_reads(tmp_path):
    batches = [[f"record {b}-{i}".encode() for i in range(50)] for b in range(7)] + [[b""]]
    with beam.Pipeline("FnApiRunner") as p:
        _ = p | beam.Create(batches) | WriteRecordBatches(str(tmp_path / "c" / "train"), num_shards=3)
    files = list_files(str(tmp_path), "c/train-*")
    assert files == [f"c/train-0000{i}-of-00003.tfrecord.gz" for i in range(3)]
    got = [r for f in files for r in read_tfrecords(str(tmp_path / f))]
    assert sorted(got) == sorted(r for b in batches for r in b)
    import tensorflow as tf

    ds = tf.data.TFRecordDataset([str(tmp_path / f) for f in files], compression_type="GZIP")
    assert sorted(x.numpy() for x in ds) == sorted(got)


def test_framing_is_checked(tmp_path):
    framed = bytearray(frame_records([b"hello", b"world"]))
    (tmp_path / "ok.tfrecord").write_bytes(bytes(framed))
    assert read_tfrecords(str(tmp_path / "ok.tfrecord")) == [b"hello", b"world"]
    framed[14] ^= 1  # a byte of the first record's data: its CRC no longer matches
    (tmp_path / "bad.tfrecord").write_bytes(bytes(framed))
    import tensorflow as tf

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
