"""Writing: sharded gzip'd TFRecord files from batches of records, and the output directory's guard.

Records arrive in lists (one per line batch), and the sink writes a whole list with one call: the
per-element cost of Beam's own WriteToTFRecord would be paid per record. Files are finalised by
Beam's FileBasedSink (temporary files, then renamed to `<prefix>-SSSSS-of-NNNNN<suffix>`), so a
retried bundle never leaves a partial shard.
"""

from __future__ import annotations

import os
import shutil
import struct

import apache_beam as beam
from apache_beam import coders
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline import storage
from pipeline.record_schema import COMPRESSION, FILE_SUFFIX
from pipeline.user_errors import UserError


class OutputDirError(UserError):
    """The output directory cannot be used (not empty without --overwrite)."""


def _crc32c_fn():
    import google_crc32c  # C implementation; a dependency of apache-beam[gcp]

    return google_crc32c.value


def _masked_crc(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_records(records, crc32c=None) -> bytes:
    """TFRecord framing: length, masked crc32c of the length, data, masked crc32c of the data."""
    crc32c = crc32c or _crc32c_fn()
    parts = []
    pack_q, pack_i = struct.Struct("<Q").pack, struct.Struct("<I").pack
    for r in records:
        length = pack_q(len(r))
        parts += (length, pack_i(_masked_crc(crc32c(length))), r, pack_i(_masked_crc(crc32c(r))))
    return b"".join(parts)


class BatchedTFRecordSink(filebasedsink.FileBasedSink):
    def __init__(self, file_path_prefix: str, num_shards: int):
        assert COMPRESSION == "GZIP" and FILE_SUFFIX.endswith(".gz")
        super().__init__(
            file_path_prefix,
            coder=coders.BytesCoder(),
            file_name_suffix=FILE_SUFFIX,
            num_shards=num_shards,
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.GZIP,
        )
        self._crc32c = None

    def write_record(self, file_handle, value):
        if self._crc32c is None:
            self._crc32c = _crc32c_fn()
        file_handle.write(frame_records(value, self._crc32c))


class WriteRecordBatches(beam.PTransform):
    """PCollection[list[bytes]] -> `<prefix>-SSSSS-of-NNNNN.tfrecord.gz`; returns the final file names.

    num_shards = 0 lets the runner choose (one file per bundle, no shuffle)."""

    def __init__(self, file_path_prefix: str, num_shards: int):
        super().__init__()
        self._prefix = file_path_prefix
        self._num_shards = num_shards

    def expand(self, pcoll):
        return pcoll | beam.io.Write(BatchedTFRecordSink(self._prefix, self._num_shards))


# The output directory's guard runs on the launcher (storage tells URLs from local paths); remote
# listing and deleting stay with Beam's FileSystems, which the rest of this module writes with.
def _existing_files(output_dir: str) -> list[str]:
    if storage.is_remote(output_dir):
        return [m.path for m in FileSystems.match([output_dir.rstrip("/") + "/**"])[0].metadata_list]
    if not os.path.exists(output_dir):
        return []
    if not os.path.isdir(output_dir):
        raise OutputDirError(f"--output_dir={output_dir!r} exists and is not a directory")
    return [os.path.join(output_dir, n) for n in os.listdir(output_dir)]


def prepare_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuses a non-empty output directory unless overwrite, which clears it first."""
    existing = _existing_files(output_dir)
    if existing and not overwrite:
        raise OutputDirError(
            f"--output_dir={output_dir!r} is not empty ({len(existing)} entries, e.g. {existing[0]!r}); "
            "choose an empty directory or pass --overwrite to clear it"
        )
    if existing:
        if storage.is_remote(output_dir):
            FileSystems.delete(existing)
        else:
            for p in existing:
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
    storage.makedirs(output_dir)


def list_files(output_dir: str, pattern: str) -> list[str]:
    """Files matching a glob relative to output_dir, as sorted relative paths."""
    base = output_dir.rstrip("/") + "/"
    found = FileSystems.match([base + pattern])[0].metadata_list
    return sorted(
        m.path[len(base) :] if m.path.startswith(base) else os.path.relpath(m.path, output_dir) for m in found
    )
