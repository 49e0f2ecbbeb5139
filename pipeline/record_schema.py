"""The TFRecord schema shared by the Beam writer and the trainer's reader. Defined here only.

One record per accepted input line, as a `tf.train.Example`:

  input_ids     int64[sum(lengths)]  token ids of every text of the line, concatenated, unpadded,
                                     each text cut at max_seq_length (special tokens included)
  lengths       int64[n_texts]       token count of each text
  roles         int64[n_texts]       ROLE_* of each text (see below)
  fingerprints  int64[n_texts]       fingerprint(text): equal texts have equal fingerprints, so the
                                     loss can mask in-batch false negatives

Texts keep the order they had in the line. Roles per shape:
  pair                  [ANCHOR, POSITIVE]
  triplet               [ANCHOR, POSITIVE, NEGATIVE]
  set                   [MEMBER, MEMBER, ...]           (two drawn at training time)
  query                 [ANCHOR, POSITIVE, ...]         (one positive drawn at training time)
  query_with_negatives  [ANCHOR, POSITIVE..., NEGATIVE...]

TensorFlow is imported lazily so that modules importing the constants stay light.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

SCHEMA_VERSION = 1

ROLE_ANCHOR = 0
ROLE_POSITIVE = 1
ROLE_NEGATIVE = 2
ROLE_MEMBER = 3

FEATURE_NAMES = ("input_ids", "lengths", "roles", "fingerprints")

# Output files are gzip-compressed TFRecords: token ids compress ~2-3x and Dataflow/GCS egress is billed.
COMPRESSION = "GZIP"
FILE_SUFFIX = ".tfrecord.gz"


def fingerprint(text: str) -> int:
    """A stable signed 64-bit fingerprint of a text (blake2b; stable across processes and machines)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def encode_record(token_ids: Sequence[Sequence[int]], roles: Sequence[int], fingerprints: Sequence[int]) -> bytes:
    """Serialises one line's texts (already tokenized and cut) to a tf.train.Example."""
    if not (len(token_ids) == len(roles) == len(fingerprints)) or not token_ids:
        raise ValueError("token_ids, roles and fingerprints must be non-empty and of equal length")
    from tensorflow.core.example import example_pb2, feature_pb2

    def ints(values):
        return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=list(values)))

    flat = [t for ids in token_ids for t in ids]
    example = example_pb2.Example(
        features=feature_pb2.Features(
            feature={
                "input_ids": ints(flat),
                "lengths": ints(len(ids) for ids in token_ids),
                "roles": ints(roles),
                "fingerprints": ints(fingerprints),
            }
        )
    )
    return example.SerializeToString()


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
    """The `tf.io.parse_single_example` spec: every feature a 1-D int64 tensor."""
    import tensorflow as tf

    return {name: tf.io.RaggedFeature(tf.int64) for name in FEATURE_NAMES}


def tf_parse(serialized):
    """Parses one serialised record in tf.data: returns texts as a RaggedTensor [n_texts, None]
    plus 1-D `roles` and `fingerprints`."""
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, tf_feature_spec())
    texts = tf.RaggedTensor.from_row_lengths(parsed["input_ids"], parsed["lengths"], validate=False)
    return {"texts": texts, "roles": parsed["roles"], "fingerprints": parsed["fingerprints"]}
