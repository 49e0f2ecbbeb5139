"""trainer/data/records.py: the draw of one example per record, by the record format's roles.

A pair or triplet record from an object line ({"query", "pos": [...], "neg": [...]}) holds every
positive and negative: the draw takes one of each, uniformly, as for the query formats; a record
from a list line has one of each and always gives the same example."""

import collections

import pytest

from pipeline import record_schema as rs
from pipeline.tensorflow_import import import_tensorflow
from trainer.data import records

tf = import_tensorflow()


def _stream(record_format, symmetric=False):
    return records.CorpusStream(0, "c", rs.FORMATS[record_format], 1.0, symmetric, (), False, 0)


def _draw(record_format, roles, n=2048, seed=5):
    """Texts drawn per column from n copies of one record whose text t is the ids [t + 10]."""
    raw = rs.encode_record([[t + 10] for t in range(len(roles))], roles, [t + 1 for t in range(len(roles))])
    out = records.draw_chunk(_stream(record_format), tf.constant([raw] * n), tf.constant([seed, 0], tf.int64), None)
    cols = {}
    for k, col in enumerate(("anchor", "positive", "negative")):
        values, lengths, fps = (t.numpy() for t in out[3 * k : 3 * k + 3])
        if values.size:
            assert (lengths == 1).all() and (values - 10 == fps - 1).all()  # each text with its own fingerprint
            cols[col] = collections.Counter((values - 10).tolist())
    return cols


A, P, N = rs.ROLE_ANCHOR, rs.ROLE_POSITIVE, rs.ROLE_NEGATIVE


def test_a_triplet_record_with_several_positives_and_negatives_draws_each_uniformly():
    cols = _draw("triplet", [A, P, P, N, N, N])
    assert cols["anchor"] == {0: 2048}
    assert set(cols["positive"]) == {1, 2} and min(cols["positive"].values()) > 900
    assert set(cols["negative"]) == {3, 4, 5} and min(cols["negative"].values()) > 600


def test_a_pair_record_from_a_query_object_draws_among_its_positives():
    cols = _draw("pair", [A, P, P, P])
    assert set(cols) == {"anchor", "positive"} and cols["anchor"] == {0: 2048}
    assert set(cols["positive"]) == {1, 2, 3} and min(cols["positive"].values()) > 600


def test_list_line_records_always_give_texts_0_1_2_as_the_same_draws_as_query_formats():
    assert _draw("triplet", [A, P, N]) == {"anchor": {0: 2048}, "positive": {1: 2048}, "negative": {2: 2048}}
    assert _draw("pair", [A, P]) == {"anchor": {0: 2048}, "positive": {1: 2048}}
    # The same record read as query_with_negatives draws the same example (one stored layout, one draw).
    assert _draw("query_with_negatives", [A, P, P, N, N, N], seed=9) == _draw("triplet", [A, P, P, N, N, N], seed=9)


def test_a_pair_record_without_a_positive_fails_naming_the_corpus():
    raw = rs.encode_record([[10], [11]], [A, N], [1, 2])
    with pytest.raises(tf.errors.InvalidArgumentError, match="corpus c: a pair record has no positive"):
        records.draw_chunk(_stream("pair"), tf.constant([raw]), tf.constant([1, 0], tf.int64), None)
