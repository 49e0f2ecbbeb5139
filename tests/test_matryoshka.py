"""Matryoshka loss: parity with sentence-transformers' MatryoshkaLoss(MultipleNegativesRankingLoss), the
options' checks, and per-size evaluation. The same loss through packing, gradient caching, ZeRO-1 and
8 devices: tests/test_layout_invariance.py (its CI pair runs with --matryoshka_dims)."""

import numpy as np
import pytest

from tests._tiny import TwinBert
from trainer.config import ConfigError, TrainConfig, check_dims
from trainer.train.matryoshka import dim_metric, eval_dims, truncate

DIMS, WEIGHTS = (16, 8, 4), (1.0, 0.5, 2.0)


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return TwinBert(tmp_path_factory.mktemp("twin"), triplet=True)


def _cfg(**kw):
    return TrainConfig(
        triplet_directions=("query_to_doc",),
        partition_mode="joint",
        mask_false_negatives=False,
        matryoshka_dims=DIMS,
        matryoshka_weights=WEIGHTS,
        **kw,
    )


def test_loss_and_gradients_equal_sentence_transformers(twin):
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

    mnrl = MultipleNegativesRankingLoss(twin.st, directions=("query_to_doc",), partition_mode="joint")
    st_loss, st_grads = twin.st_loss_and_grads(MatryoshkaLoss(twin.st, mnrl, list(DIMS), list(WEIGHTS)))
    loss, grads = twin.our_loss_and_grads(_cfg())
    assert abs(loss - st_loss) < 1e-5
    ours, theirs = twin.common_gradients(grads, st_grads)
    # float32 on both sides: within 1e-5 of the gradient's scale (its largest entry is ~15).
    assert np.abs(ours - theirs).max() < 1e-5 * np.abs(theirs).max()
    # Not the plain loss: the sizes and weights count.
    assert abs(loss - twin.st_loss_and_grads(mnrl)[0]) > 0.1


@pytest.mark.parametrize(
    "dims,weights,hidden,match",
    [
        ((8, 8), (), None, "repeats"),
        ((8, 0), (), None, "positive integers"),
        ((8, 4), (1.0,), None, "one weight per size"),
        ((), (1.0,), None, "needs matryoshka_dims"),
        ((8, 4), (1.0, -1.0), None, "positive numbers"),
        ((64, 8), (), 32, "32 dimensions"),
    ],
)
def test_invalid_options_are_refused(dims, weights, hidden, match):
    with pytest.raises(ValueError, match=match):
        check_dims(dims, weights, hidden)
    if hidden is None:  # the flags say the same, naming the flag
        with pytest.raises(ConfigError, match=f"--matryoshka_.*{match}"):
            TrainConfig(matryoshka_dims=dims, matryoshka_weights=weights)


def test_truncation_and_metric_names():
    x = np.array([[3.0, 4.0, 12.0], [0.0, 2.0, 0.0]], np.float32)
    np.testing.assert_allclose(truncate(x, 2), [[0.6, 0.8], [0.0, 1.0]])
    assert truncate(x, None) is x  # the full size: the evaluator's embeddings as they are
    assert eval_dims((1024, 256, 512, 64), 1024) == (512, 256, 64)
    assert dim_metric("eval/ir/scifact/ndcg@10", 256) == "eval/dim256/ir/scifact/ndcg@10"
    assert dim_metric("eval/sts_spearman", None) == "eval/sts_spearman"
