import pytest

from pipeline.record_schema import (
    ROLE_ANCHOR,
    ROLE_MEMBER,
    ROLE_NEGATIVE,
    ROLE_POSITIVE,
    decode_record,
    encode_record,
    fingerprint,
    tf_feature_spec,
)
from pipeline.tensorflow_import import import_tensorflow

tf = import_tensorflow()

CASES = [
    ([[101, 2054, 102], [101, 7592, 2088, 102]], [ROLE_ANCHOR, ROLE_POSITIVE], ["what", "hello world"]),
    ([[101, 102]] * 5, [ROLE_MEMBER] * 5, ["a", "b", "c", "d", "e"]),
    ([[0], [65535, 65536, 2**40], []], [ROLE_ANCHOR, ROLE_POSITIVE, ROLE_NEGATIVE], ["x", "y", "z"]),
]


def _tf_example(token_ids, roles, fps):
    """The same record built with TensorFlow's protobuf classes (the reference encoding)."""

    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "input_ids": ints(t for ids in token_ids for t in ids),
                "lengths": ints(len(i) for i in token_ids),
                "roles": ints(roles),
                "fingerprints": ints(fps),
            }
        )
    )


@pytest.mark.parametrize("token_ids,roles,texts", CASES)
def test_encoding_matches_tensorflow_protobuf(token_ids, roles, texts):
    fps = [fingerprint(t) for t in texts]
    data = encode_record(token_ids, roles, fps)
    assert tf.train.Example.FromString(data) == _tf_example(token_ids, roles, fps)
    assert decode_record(data) == {"texts": token_ids, "roles": roles, "fingerprints": fps}
    parsed = tf.io.parse_single_example(tf.constant(data), tf_feature_spec())
    texts = tf.RaggedTensor.from_row_lengths(parsed["input_ids"], parsed["lengths"])
    assert texts.to_list() == token_ids
    assert parsed["roles"].numpy().tolist() == roles and parsed["fingerprints"].numpy().tolist() == fps


def test_fingerprints_are_signed_64_bit_and_stable():
    assert fingerprint("hello") == fingerprint("hello") != fingerprint("Hello")
    fps = [fingerprint(str(i)) for i in range(1000)]
    assert min(fps) < 0 < max(fps) and all(-(2**63) <= f < 2**63 for f in fps)
    assert fingerprint("hello there my friend") == 2067836205676473524


def test_bad_input():
    with pytest.raises(ValueError):
        encode_record([[1]], [0, 1], [1])
    with pytest.raises(ValueError):
        encode_record([], [], [])
