"""Pooling modes (trainer/model/pooling.py): values on hand-made states, packed = padded (values and
gradients), sentence-transformers parity per mode on a tiny random BERT (our padded and packed
encoder paths), and the 1_Pooling config read from a source model and written by the export."""

import json
import os
import shutil
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pipeline.user_errors import UserError
from trainer.data.packing import pack_batch
from trainer.model.encode import load_tokenizer, tokenize
from trainer.model.export import export_sentence_transformers
from trainer.model.hf_loading import load_pretrained
from trainer.model.pooling import POOLING_MODES, packed_pool, pool, pooling_config, source_pooling_mode

SENTENCES = [
    "A man is playing a guitar.",
    "Short.",
    "Größere Straßen führen über die Brücke.",
    "東京は日本の首都です。",
    "Two dogs run through a field of snow while a third one watches from the fence. " * 6,
    "The stock market fell sharply on Monday after the announcement.",
    "",
    "Why?",
]
MAX_LEN = 64


def test_pool_values_on_hand_made_states():
    h = jnp.array(
        [
            [[1.0, -2.0], [3.0, 5.0], [-4.0, 1.0], [9.0, 9.0]],
            [[7.0, 0.0], [9.0, 9.0], [9.0, 9.0], [9.0, 9.0]],
            [[6.0, 6.0], [6.0, 6.0], [6.0, 6.0], [6.0, 6.0]],
        ]
    )
    mask = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])  # the last row: a filler without tokens
    want = {
        "mean": [[0.0, 4 / 3], [7.0, 0.0], [0.0, 0.0]],
        "cls": [[1.0, -2.0], [7.0, 0.0], [0.0, 0.0]],
        "max": [[3.0, 5.0], [7.0, 0.0], [0.0, 0.0]],
        "lasttoken": [[-4.0, 1.0], [7.0, 0.0], [0.0, 0.0]],
    }
    # The same texts packed into one row of 8 slots (padding, with junk states, after them).
    flat = jnp.concatenate([h[0, :3], h[1, :1], jnp.full((4, 2), 50.0)])
    text = jnp.array([0, 0, 0, 1, -1, -1, -1, -1])
    pos = jnp.array([0, 1, 2, 0, 0, 0, 0, 0])
    got = jax.jit(lambda: {m: (pool(h, mask, m), packed_pool(flat, text, pos, 3, m)) for m in POOLING_MODES})()
    for mode, (padded, packed) in got.items():
        np.testing.assert_allclose(padded, want[mode], rtol=1e-6, err_msg=mode)
        np.testing.assert_allclose(packed, want[mode], rtol=1e-6, err_msg=mode)
    with pytest.raises(ValueError, match="pooling must be one of mean, cls, max, lasttoken, got 'weightedmean'"):
        pool(h, mask, "weightedmean")


def test_packed_pooling_has_the_gradients_of_padded_pooling():
    """The segment ops (packed) and the masked reductions (padded) route the gradient to the same tokens."""
    rng = np.random.default_rng(1)
    lengths = np.array([3, 1, 5, 2, 4])
    mask = (np.arange(5)[None] < lengths[:, None]).astype(np.int32)  # [5 texts, 5 slots]
    hidden = jnp.asarray(rng.standard_normal((5, 5, 4)), jnp.float32)
    weights = jnp.asarray(rng.standard_normal((5, 4)), jnp.float32)
    # Packed: the texts back to back in one row of 16 slots, 1 slot of padding at the end.
    text = np.repeat(np.arange(5), lengths)
    pos = np.concatenate([np.arange(n) for n in lengths])
    take = (text, pos)  # padded [text, position] -> packed slot
    text_index = jnp.asarray(np.concatenate([text, [-1]]))
    positions = jnp.asarray(np.concatenate([pos, [0]]))

    def padded(h, mode):
        return jnp.sum(pool(h, mask, mode) * weights)

    def packed(h, mode):
        flat = jnp.concatenate([h[take], jnp.zeros((1, 4))])
        return jnp.sum(packed_pool(flat, text_index, positions, 5, mode) * weights)

    got = jax.jit(
        lambda h: {
            m: [f(h, m) for f in (padded, packed)] + [jax.grad(f)(h, m) for f in (padded, packed)]
            for m in POOLING_MODES
        }
    )(hidden)
    for mode, (value_pad, value_pack, grad_pad, grad_pack) in got.items():
        np.testing.assert_allclose(value_pack, value_pad, rtol=1e-6, err_msg=mode)
        np.testing.assert_allclose(grad_pack, grad_pad, atol=1e-6, err_msg=mode)
        assert np.count_nonzero(grad_pad) > 0


# ------------------------------------------------------------------ parity with sentence-transformers


@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory, demo_model_dir):
    """A random 2-layer BERT saved by transformers (biases and LayerNorms perturbed) + MiniLM's tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny_hf")
    model = BertModel(
        BertConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=128,
        )
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(d)
    for name in os.listdir(demo_model_dir):
        if name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copyfile(os.path.join(demo_model_dir, name), d / name)
    return str(d)


def _st_model(hf_dir, out, mode):
    """A SentenceTransformers directory written by sentence-transformers itself, pooling by `mode`."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    torch.set_num_threads(2)
    st = SentenceTransformer(
        modules=[Transformer(hf_dir, max_seq_length=MAX_LEN), Pooling(32, pooling_mode=mode), Normalize()], device="cpu"
    )
    st.save(out)
    return st


def _padded_and_packed(tok, sentences):
    """Right-padded [N, L] ids and mask, and the same texts packed into rows (anchor and positive
    columns of one batch: the packed texts come out in the input order)."""
    ids = tokenize(tok, sentences, MAX_LEN)
    n = len(ids) // 2
    arr = np.full((len(ids), MAX_LEN), tok.pad_token_id, np.int32)
    mask = np.zeros_like(arr)
    for i, x in enumerate(ids):
        arr[i, : len(x)], mask[i, : len(x)] = x, 1
    batch = {
        "anchor_ids": arr[:n],
        "anchor_mask": mask[:n],
        "anchor_fp": np.arange(n, dtype=np.int32),
        "positive_ids": arr[n:],
        "positive_mask": mask[n:],
        "positive_fp": np.arange(n, 2 * n, dtype=np.int32),
    }
    return arr, mask, pack_batch(batch, 1, (16, 32, 64), 32, pad_id=tok.pad_token_id)


def test_padded_and_packed_embeddings_match_sentence_transformers(tmp_path, tiny_hf_dir):
    from sentence_transformers import SentenceTransformer

    refs, models = {}, {}
    for mode in POOLING_MODES:
        st_dir = str(tmp_path / mode)
        refs[mode] = _st_model(tiny_hf_dir, st_dir, mode).encode(SENTENCES, convert_to_numpy=True)
        pre = load_pretrained(st_dir)  # the mode comes from the directory's 1_Pooling/config.json
        assert pre.model.pooling == mode
        models[mode] = pre.model
    ids, mask, packed = _padded_and_packed(load_tokenizer(pre.source_dir), SENTENCES)

    @jax.jit  # one program for every mode and both paths: compiling is most of this test's time
    def embeddings(params):
        return {
            mode: (
                m.apply(params, ids, mask),
                m.apply(
                    params,
                    packed["packed_ids"],
                    packed["packed_positions"],
                    packed["packed_text"],
                    len(SENTENCES),
                    method="packed",
                )[0],
            )
            for mode, m in models.items()
        }

    for mode, (padded, packed_emb) in embeddings(pre.params).items():
        diffs = (np.abs(np.asarray(padded) - refs[mode]).max(), np.abs(np.asarray(packed_emb) - refs[mode]).max())
        print(f"{mode}: max |ours - sentence-transformers| padded {diffs[0]:.2e}, packed {diffs[1]:.2e}")
        assert max(diffs) <= 1e-5, mode
    # The export writes the mode back (legacy key layout): sentence-transformers and we both read it.
    out = str(tmp_path / "export")
    export_sentence_transformers(
        pre.params,
        pre.config,
        pre.hf_config,
        pre.source_dir,
        out,
        MAX_LEN,
        extra_tensors=pre.extras,
        pooling="lasttoken",
    )
    assert source_pooling_mode(out) == "lasttoken"
    again = SentenceTransformer(out, device="cpu")
    assert again[1].pooling_mode == "lasttoken"
    assert np.abs(again.encode(SENTENCES, convert_to_numpy=True) - refs["lasttoken"]).max() <= 1e-5


def test_pooling_flag_overrides_and_unsupported_modes(tmp_path, tiny_hf_dir):
    assert source_pooling_mode(tiny_hf_dir) is None  # a plain Hugging Face model: mean
    assert load_pretrained(tiny_hf_dir).model.pooling == "mean"
    st_dir = tmp_path / "st"
    _st_model(tiny_hf_dir, str(st_dir), "cls")
    assert load_pretrained(str(st_dir), pooling="max").model.pooling == "max"
    config = st_dir / "1_Pooling" / "config.json"
    for written, message in [
        ({"pooling_mode": "weightedmean"}, "pooling weightedmean is not implemented"),
        ({"pooling_mode": ["cls", "mean"]}, r"pooling cls\+mean is not implemented"),
        ({"pooling_mode_mean_sqrt_len_tokens": True}, "pooling mean_sqrt_len_tokens is not"),
    ]:
        config.write_text(json.dumps({"embedding_dimension": 32, **written}))
        with pytest.raises(UserError, match=message):
            load_pretrained(str(st_dir))
    config.write_text(json.dumps(pooling_config("lasttoken", 32)))  # our export's layout
    assert load_pretrained(str(st_dir)).model.pooling == "lasttoken"
    # Old layouts keep the Transformer in 0_Transformer/: the pooling is found beside it.
    old = tmp_path / "old"
    shutil.copytree(tiny_hf_dir, old / "0_Transformer")
    shutil.copytree(st_dir / "1_Pooling", old / "1_Pooling")
    (old / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    assert load_pretrained(str(old)).model.pooling == "lasttoken"


def test_train_config_pooling_reaches_the_model(tmp_path, tiny_hf_dir, monkeypatch):
    from trainer.config import TrainConfig
    from trainer.train import startup

    st_dir = str(tmp_path / "st")
    _st_model(tiny_hf_dir, st_dir, "cls")
    assert startup.load_model(TrainConfig(model=st_dir)).model.pooling == "cls"  # auto: the source's
    assert startup.load_model(TrainConfig(model=st_dir, pooling="max")).model.pooling == "max"
    # from_scratch: the random init (its compile is not this test's business) gets the source's mode too.
    monkeypatch.setattr(
        startup, "init_random", lambda config, **kw: SimpleNamespace(config=config, pooling=kw["pooling"])
    )
    assert startup.load_model(TrainConfig(model=st_dir, from_scratch=True)).pooling == "cls"
    assert startup.load_model(TrainConfig(model=st_dir, from_scratch=True, pooling="lasttoken")).pooling == "lasttoken"
