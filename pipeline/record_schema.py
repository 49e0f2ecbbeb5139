"""The TFRecord schema shared by the Beam writer and the trainer's reader. Defined here only.

One record per accepted input line, as a `tf.train.Example`:

  input_ids     int64[sum(lengths)]  token ids of every text of the line, concatenated, unpadded,
                                     each text cut at max_seq_length (special tokens included)
  lengths       int64[n_texts]       token count of each text
  roles         int64[n_texts]       ROLE_* of each text (see below)
  fingerprints  int64[n_texts]       fingerprint(text): equal texts have equal fingerprints, so the
                                     loss can mask in-batch false negatives

Texts keep the order they had in the line. Roles per record format (FORMATS below, the one table
that the job's parser, the trainer's draw and the validation reader all follow):
  pair                  [ANCHOR, POSITIVE]              ([ANCHOR, POSITIVE...] from {"query", "pos": [...]})
  triplet               [ANCHOR, POSITIVE, NEGATIVE]    ([ANCHOR, POSITIVE..., NEGATIVE...] from
                                                         {"query", "pos": [...], "neg": [...]})
  set                   [MEMBER, MEMBER, ...]           (two drawn at training time)
  query                 [ANCHOR, POSITIVE, ...]         (one positive drawn at training time)
  query_with_negatives  [ANCHOR, POSITIVE..., NEGATIVE...]
Every format but set is stored one way: the anchor, its positives, then its negatives; a draw takes
the anchor, one positive and (triplet, query_with_negatives) one negative, each uniformly among its
kind, so a record with one of each always gives the same example.

TensorFlow is imported lazily so that modules importing the constants stay light.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

SCHEMA_VERSION = 1

ROLE_ANCHOR = 0
ROLE_POSITIVE = 1
ROLE_NEGATIVE = 2
ROLE_MEMBER = 3

FEATURE_NAMES = ("input_ids", "lengths", "roles", "fingerprints")


@dataclasses.dataclass(frozen=True)
class RecordFormat:
    """What a corpus's lines hold and which texts a training example takes from them."""

    name: str
    anchor_role: int  # the role of the example's anchor text
    positive_role: int  # the role of its positive (another text than the anchor)
    negative_role: int | None  # the role of its hard negative; None: the format has none
    # How a line holds its texts: "fixed" (a list of exactly 2 or 3 texts, or {"query", "pos": [...]
    # [, "neg": [...]]}), "two_members" (a list of members; two distinct ones drawn), "drawn" (the object
    # form only). Outside sets a record is [ANCHOR, POSITIVE..., NEGATIVE...]: one positive[, one negative]
    # drawn per example.
    selection: str

    @property
    def has_negative(self) -> bool:
        return self.negative_role is not None

    def line_roles(self, n_positives: int = 1, n_negatives: int | None = None) -> list[int]:
        """The roles of a parsed line's texts, in line order (a set's n_positives = its member count;
        n_negatives defaults to the format's one negative, or none)."""
        if self.selection == "two_members":
            return [ROLE_MEMBER] * n_positives
        n_negatives = int(self.has_negative) if n_negatives is None else n_negatives
        return [ROLE_ANCHOR] + [ROLE_POSITIVE] * n_positives + [ROLE_NEGATIVE] * n_negatives

    def first_pair(self, roles: Sequence[int]) -> tuple[int, int]:
        """Indices of a record's first (anchor, positive): the deterministic pair evaluation uses."""
        a = list(roles).index(self.anchor_role)
        return a, list(roles).index(self.positive_role, a + 1)


FORMATS = {
    f.name: f
    for f in (
        RecordFormat("pair", ROLE_ANCHOR, ROLE_POSITIVE, None, "fixed"),
        RecordFormat("triplet", ROLE_ANCHOR, ROLE_POSITIVE, ROLE_NEGATIVE, "fixed"),
        RecordFormat("set", ROLE_MEMBER, ROLE_MEMBER, None, "two_members"),
        RecordFormat("query", ROLE_ANCHOR, ROLE_POSITIVE, None, "drawn"),
        RecordFormat("query_with_negatives", ROLE_ANCHOR, ROLE_POSITIVE, ROLE_NEGATIVE, "drawn"),
    )
}
RECORD_FORMATS = tuple(FORMATS)
# Formats whose lines give the trainer (anchor, positive, negative) triplets; the others give pairs.
TRIPLET_FORMATS = tuple(n for n, f in FORMATS.items() if f.has_negative)

# Output files are gzip-compressed TFRecords: token ids compress ~2-3x and Dataflow/GCS egress is billed.
COMPRESSION = "GZIP"
FILE_SUFFIX = ".tfrecord.gz"


def fingerprint(text: str) -> int:
    """A stable signed 64-bit fingerprint of a text (blake2b; stable across processes and machines)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _uvarint(v: int) -> bytes:
    n = max(1, (v.bit_length() + 6) // 7)  # 7 bits per byte, high bit = "more bytes follow"
    last = 7 * (n - 1)
    return bytes([((v >> s) & 0x7F) | 0x80 for s in range(0, last, 7)] + [v >> last])


# Varints of the common small values (token ids, lengths, roles), looked up instead of computed.
_SMALL_VARINTS = [_uvarint(i) for i in range(1 << 16)]


def _varint(v: int) -> bytes:
    if 0 <= v < 65536:
        return _SMALL_VARINTS[v]
    return _uvarint(v + (1 << 64) if v < 0 else v)  # int64: negatives as 10-byte two's complement


def _int64_feature(values: Sequence[int]) -> bytes:
    if values and min(values) >= 0 and max(values) < 65536:  # token ids, lengths, roles: table look-ups
        packed = b"".join(map(_SMALL_VARINTS.__getitem__, values))
    else:
        packed = b"".join([_varint(v) for v in values])
    int64_list = (b"\x0a" + _varint(len(packed)) + packed) if packed else b""  # Int64List.value (packed)
    return b"\x1a" + _varint(len(int64_list)) + int64_list  # Feature.int64_list = field 3


_MAP_KEYS = {n: b"\x0a" + _varint(len(n)) + n.encode() for n in FEATURE_NAMES}


def _map_entry(name: str, feature: bytes) -> bytes:
    entry = _MAP_KEYS[name] + b"\x12" + _varint(len(feature)) + feature  # key = 1, value = 2
    return b"\x0a" + _varint(len(entry)) + entry  # Features.feature (map) = field 1


def encode_record(token_ids: Sequence[Sequence[int]], roles: Sequence[int], fingerprints: Sequence[int]) -> bytes:
    """Serialises one line's texts (already tokenized and cut) to a tf.train.Example.

    Writes the protobuf wire format directly: no TensorFlow import on Beam workers (importing it
    costs seconds per process) and ~1.7x faster than building the message. `decode_record` and
    TensorFlow's parser with `tf_feature_spec` read it back (tests/test_record_schema.py checks both)."""
    if not (len(token_ids) == len(roles) == len(fingerprints)) or not token_ids:
        raise ValueError("token_ids, roles and fingerprints must be non-empty and of equal length")
    flat = [t for ids in token_ids for t in ids]
    features = (
        _map_entry("input_ids", _int64_feature(flat))
        + _map_entry("lengths", _int64_feature([len(ids) for ids in token_ids]))
        + _map_entry("roles", _int64_feature(roles))
        + _map_entry("fingerprints", _int64_feature(fingerprints))
    )
    return b"\x0a" + _varint(len(features)) + features  # Example.features = field 1


def decode_record(serialized: bytes) -> dict:
    """Pure-Python decoding (tests, inspection): {'texts': [[ids...], ...], 'roles': [...], 'fingerprints': [...]}."""
    from tensorflow.core.example import example_pb2

    ex = example_pb2.Example.FromString(serialized)
    f = ex.features.feature
    flat = list(f["input_ids"].int64_list.value)
    lengths = list(f["lengths"].int64_list.value)
    texts, pos = [], 0
    for n in lengths:
        texts.append(flat[pos : pos + n])
        pos += n
    if pos != len(flat):
        raise ValueError("corrupt record: lengths do not add up to input_ids")
    return {
        "texts": texts,
        "roles": list(f["roles"].int64_list.value),
        "fingerprints": list(f["fingerprints"].int64_list.value),
    }


def tf_feature_spec():
    """The `tf.io.parse_example` spec the trainer reads records with: every feature a 1-D int64 tensor."""
    from pipeline.tensorflow_import import import_tensorflow

    tf = import_tensorflow()
    return {name: tf.io.RaggedFeature(tf.int64) for name in FEATURE_NAMES}
