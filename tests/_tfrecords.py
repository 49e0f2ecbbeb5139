"""Reading back what the job wrote, with TensorFlow's own TFRecord reader (it checks every CRC)."""

from pipeline.tensorflow_import import import_tensorflow

tf = import_tensorflow()


def read_tfrecords(path: str) -> list[bytes]:
    """The records of one TFRecord file (gzip'd when the name ends in .gz)."""
    compression = "GZIP" if path.endswith(".gz") else ""
    return [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type=compression)]
