"""Writing: sharded files that are the same bytes on every runner and every run, and the output
directory's guard.

Every item (a serialised record, or a JSON line of rejected/ and decontaminated/) goes to the shard
a pure function of its bytes picks (the first 8 bytes of its blake2b digest, modulo the shard count),
and a shard's items are written sorted (records by that digest: a random order, as good for training
as any; JSON lines by corpus, file and line number). Neither depends on which worker saw an item or
when, so two runs, `in_memory` and `multi_processing`, and any number of workers write the same files.

  lists of items -> KeyByShard: (shard, [items]) per shard, gathered over a bundle --+
  every shard number -> (shard, []) (an empty shard still gets its file) ----------+-> GroupByKey
      -> WriteShard: sort, frame, `<prefix>-SSSSS-of-NNNNN<suffix>` (a temporary name, then renamed)

A shard is sorted in one worker's memory: its size is the bound. The shard count is given (train:
--train_shards or ceil(expected_lines / --records_per_shard), pipeline/job.py) or counted: ceil(items /
per_shard) from the items themselves (a side input), so a counted shard holds about per_shard items.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import uuid
from collections import defaultdict
from typing import Callable, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import window

from pipeline import storage
from pipeline.record_schema import COMPRESSION, FILE_SUFFIX
from pipeline.user_errors import UserError

# A counted shard of JSON lines holds about this many (a rejected line is cut to ~1000 characters).
LINES_PER_SHARD = 100_000
# KeyByShard passes a shard's items on in lists of this many (Beam's per-element cost is paid per list).
LIST_ITEMS = 512
FRAME_ITEMS = 4096  # items framed and written per call


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


def frame_lines(lines) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def item_digest(item: bytes) -> bytes:
    """blake2b, not Python's hash (salted per process): the same on every worker and run. Two different
    items share a digest with probability ~1e-20 at a billion items; equal items are equal bytes."""
    return hashlib.blake2b(item, digest_size=16).digest()


def shard_of(item: bytes, shards: int) -> int:
    return int.from_bytes(item_digest(item)[:8], "little") % shards


def shard_count(items: int, per_shard: int) -> int:
    return max(1, math.ceil(items / per_shard))


def json_line_order(line: bytes) -> tuple:
    """A JSON line of rejected/ or decontaminated/ sorts by corpus, file, line number (none: 0), then bytes."""
    r = json.loads(line)
    return (r.get("corpus") or "", r.get("file") or "", r.get("line_number") or 0, line)


class FileFormat(NamedTuple):
    suffix: str
    compression: str  # a CompressionTypes value
    frame: Callable[[list], bytes]
    order: Callable[[bytes], object]  # the sort key of an item within its shard
    batched: bool  # elements are lists of bytes; else one str (a line) per element


assert COMPRESSION == "GZIP" and FILE_SUFFIX.endswith(".gz")
TFRECORDS = FileFormat(FILE_SUFFIX, CompressionTypes.GZIP, frame_records, item_digest, True)
JSON_LINES = FileFormat(".jsonl", CompressionTypes.UNCOMPRESSED, frame_lines, json_line_order, False)


def shard_path(prefix: str, shard: int, shards: int, suffix: str) -> str:
    return f"{prefix}-{shard:05d}-of-{shards:05d}{suffix}"


def _shards(shards: int, per_shard: int, counted: int) -> int:
    """The shard count: given, or counted from the items (`counted`, a side input)."""
    return shards or shard_count(counted, per_shard)


class _KeyByShard(beam.DoFn):
    """Lists of items -> (shard, [items]), a shard's items gathered over the bundle into lists of up to
    LIST_ITEMS, so that a list of records dealt over many shards does not become an element per record."""

    def __init__(self, shards: int, per_shard: int, batched: bool):
        self._shards, self._per_shard, self._batched = shards, per_shard, batched

    def start_bundle(self):
        self._pending = defaultdict(list)

    def process(self, items, counted=0):
        n = _shards(self._shards, self._per_shard, counted)
        if not self._batched:
            items = [items.encode("utf-8")]
        if n == 1:  # nothing to deal: the list goes on whole
            yield 0, items
            return
        for item in items:
            shard = shard_of(item, n)
            pending = self._pending[shard]
            pending.append(item)
            if len(pending) >= LIST_ITEMS:
                yield shard, self._pending.pop(shard)

    def finish_bundle(self):
        for shard_items in self._pending.items():
            yield window.GlobalWindows.windowed_value(shard_items)
        self._pending = defaultdict(list)


def _every_shard(_, shards: int, per_shard: int, counted=0):
    return [(shard, []) for shard in range(_shards(shards, per_shard, counted))]


class _WriteShard(beam.DoFn):
    """(shard, [[items]...]) -> the shard's file, its items sorted; the file's final name."""

    def __init__(self, prefix: str, file_format: FileFormat, shards: int, per_shard: int):
        self._prefix, self._format, self._shards, self._per_shard = prefix, file_format, shards, per_shard

    def process(self, element, counted=0):
        shard, lists = element
        fmt = self._format
        items = [item for items in lists for item in items]
        items.sort(key=fmt.order)
        path = shard_path(self._prefix, shard, _shards(self._shards, self._per_shard, counted), fmt.suffix)
        # Written under a temporary name and renamed, so a retried or failed write never leaves a partial
        # file under a shard's name.
        temp = f"{path}.temp-{uuid.uuid4().hex}"
        with FileSystems.create(temp, compression_type=fmt.compression) as f:
            for i in range(0, len(items), FRAME_ITEMS):
                f.write(fmt.frame(items[i : i + FRAME_ITEMS]))
        FileSystems.rename([temp], [path])
        yield path


class WriteShards(beam.PTransform):
    """Items -> `<prefix>-SSSSS-of-NNNNN<suffix>`, the same bytes on every run (module docstring);
    returns the final file names. shards = 0: counted, ceil(items / per_shard)."""

    def __init__(self, file_path_prefix: str, file_format: FileFormat, shards: int = 0, per_shard: int = 1):
        super().__init__()
        self._prefix, self._format, self._shards, self._per_shard = file_path_prefix, file_format, shards, per_shard

    def expand(self, pcoll):
        args = (self._shards, self._per_shard)
        side = []
        if not self._shards:
            sizes = pcoll | "Sizes" >> (beam.Map(len) if self._format.batched else beam.Map(lambda _: 1))
            side = [beam.pvalue.AsSingleton(sizes | "Count" >> beam.CombineGlobally(sum))]
        keyed = pcoll | "ByShard" >> beam.ParDo(_KeyByShard(*args, self._format.batched), *side)
        every = (
            pcoll.pipeline | "Once" >> beam.Create([None]) | "EveryShard" >> beam.FlatMap(_every_shard, *args, *side)
        )
        return (
            (keyed, every)
            | "Flatten" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShard(self._prefix, self._format, *args), *side)
        )


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
