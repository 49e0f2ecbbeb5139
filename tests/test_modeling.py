"""The Flax encoder against transformers' PyTorch BertModel / RobertaModel on tiny random configs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from trainer.model.hf_loading import hf_state_dict_to_params
from trainer.model.modeling import Encoder, EncoderConfig, SentenceEncoder, l2_normalize, position_ids
from trainer.model.pooling import mean_pool

TINY = dict(
    vocab_size=120,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=40,
    layer_norm_eps=1e-5,
)


def _torch_model(model_type, **overrides):
    import transformers

    torch.manual_seed(0)
    if model_type == "bert":
        cfg = transformers.BertConfig(**TINY, type_vocab_size=2, pad_token_id=0, **overrides)
        model = transformers.BertModel(cfg, add_pooling_layer=False)
    else:
        cfg = transformers.RobertaConfig(**TINY, type_vocab_size=1, pad_token_id=1, **overrides)
        model = transformers.RobertaModel(cfg, add_pooling_layer=False)
    model.eval()
    # Random init leaves LayerNorms at 1/0 and biases at 0: perturb them so the test sees every tensor.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return cfg, model


def _batch(pad_id, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([17, 3, 9, 1, 12])
    ids = rng.integers(3, TINY["vocab_size"], size=(5, 17)).astype(np.int32)
    mask = (np.arange(17)[None] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask == 1, ids, pad_id)
    return ids, mask


@pytest.mark.parametrize("model_type,act", [("bert", "gelu"), ("roberta", "gelu"), ("roberta", "gelu_new")])
def test_forward_matches_pytorch(model_type, act):
    hf_cfg, tmodel = _torch_model(model_type, hidden_act=act)
    config = EncoderConfig.from_hf_dict(hf_cfg.to_dict())
    params = hf_state_dict_to_params({k: v.numpy() for k, v in tmodel.state_dict().items()}, config)
    ids, mask = _batch(config.pad_token_id)
    with torch.no_grad():
        ref = tmodel(
            input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long)
        ).last_hidden_state.numpy()
    ours = np.asarray(Encoder(config).apply({"params": params["params"]["encoder"]}, ids, mask))
    valid = mask.astype(bool)
    assert np.abs(ours[valid] - ref[valid]).max() <= 1e-5
    # Sentence embeddings: mean pooling + normalisation over the same states.
    m = mask[..., None].astype(np.float32)
    ref_emb = (ref * m).sum(1) / m.sum(1)
    ref_emb /= np.linalg.norm(ref_emb, axis=1, keepdims=True)
    emb = np.asarray(SentenceEncoder(config).apply(params, ids, mask))
    assert np.abs(emb - ref_emb).max() <= 1e-5


def test_roberta_positions_start_after_padding_idx():
    cfg = EncoderConfig(model_type="roberta", pad_token_id=1, **TINY, type_vocab_size=1)
    ids = jnp.array([[0, 5, 6, 2, 1, 1], [0, 2, 1, 1, 1, 1]])
    np.testing.assert_array_equal(position_ids(ids, cfg), [[2, 3, 4, 5, 1, 1], [2, 3, 1, 1, 1, 1]])
    bert = EncoderConfig(model_type="bert", **TINY)
    np.testing.assert_array_equal(position_ids(ids, bert), [[0, 1, 2, 3, 4, 5]] * 2)
    assert cfg.max_input_length == TINY["max_position_embeddings"] - 2


def test_bfloat16_compute_close_to_float32():
    hf_cfg, tmodel = _torch_model("roberta")
    config = EncoderConfig.from_hf_dict(hf_cfg.to_dict())
    params = hf_state_dict_to_params({k: v.numpy() for k, v in tmodel.state_dict().items()}, config)
    ids, mask = _batch(config.pad_token_id, seed=1)
    f32 = np.asarray(SentenceEncoder(config).apply(params, ids, mask))
    bf16_out = SentenceEncoder(config, dtype=jnp.bfloat16).apply(params, ids, mask)
    assert bf16_out.dtype == jnp.float32  # pooled + normalised in float32
    bf16 = np.asarray(bf16_out)
    # Stated tolerance: bfloat16 keeps 8 mantissa bits (~4e-3 relative per op); after 2 layers the
    # unit vectors stay within 3e-2 per coordinate and cosine >= 0.999 of the float32 ones.
    assert np.abs(bf16 - f32).max() <= 3e-2
    assert (bf16 * f32).sum(1).min() >= 0.999
    assert np.abs(bf16 - f32).max() > 0  # it really computed in bfloat16
    # Parameters stay float32 whatever the compute dtype.
    init = SentenceEncoder(config, dtype=jnp.bfloat16).init(jax.random.PRNGKey(0), ids, mask)
    assert {x.dtype for x in jax.tree_util.tree_leaves(init)} == {jnp.dtype(jnp.float32)}


def test_dropout_uses_dropout_rng_and_remat_changes_nothing():
    config = EncoderConfig(**TINY)
    ids, mask = _batch(0)
    model = SentenceEncoder(config)
    params = model.init(jax.random.PRNGKey(0), ids, mask)
    det = model.apply(params, ids, mask)
    # Compiled: the hashed dropout masks are many small ops, slow one by one.
    dropped = jax.jit(lambda p, key: model.apply(p, ids, mask, deterministic=False, rngs={"dropout": key}))
    a = dropped(params, jax.random.PRNGKey(1))
    b = dropped(params, jax.random.PRNGKey(1))
    c = dropped(params, jax.random.PRNGKey(2))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3 and np.abs(a - det).max() > 1e-3

    def loss(m):
        return lambda p: jnp.sum(
            m.apply(p, ids, mask, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)})[:, 0]
        )

    g1 = jax.jit(jax.grad(loss(model)))(params)
    # Every block recomputed; per layer, the attention's forward (dots), and with it the query/key/value
    # matmul (qkv).
    for mode in (True, "dots:1,qkv:1"):
        g2 = jax.jit(jax.grad(loss(SentenceEncoder(config, remat=mode))))(params)
        jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), g1, g2)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("dropout", [False, True])
def test_attention_and_its_gradient_match_the_softmax_formulation(packed, dropout):
    """The fused attention (late normalisation, a custom VJP that recomputes the scores and the dropout
    mask) against autodiff of softmax(masked scores) -> dropout -> product, with an all-padding row
    (uniform attention) and, packed, a block-diagonal mask."""
    from trainer.model.modeling import attention, attention_keep_mask, dropout_token_ids

    rng = np.random.default_rng(0)
    b, n, l, d, rate, seed = 3, 4, 10, 8, 0.3, jnp.uint32(1234)
    q, k, v, w = (jnp.asarray(rng.standard_normal((b, n, l, d)), jnp.float32) for _ in range(4))
    if packed:  # row 0: texts of 4 and 6 tokens; row 1: 7 tokens and padding; row 2: all padding
        text = jnp.asarray([[0] * 4 + [1] * 6, [0] * 7 + [-1] * 3, [-1] * 10])
        keep = ((text[:, :, None] == text[:, None, :]) & (text[:, None, :] >= 0))[:, None]
    else:
        mask = np.ones((b, l), bool)
        mask[1, 6:] = mask[2] = False
        keep = jnp.asarray(mask)[:, None, None, :]
    tok = dropout_token_ids(
        jnp.broadcast_to(jnp.arange(b)[:, None], (b, l)), jnp.broadcast_to(jnp.arange(l), (b, l)), num_texts=b, length=l
    )

    def ref(q, k, v):
        p = jax.nn.softmax(jnp.where(keep, jnp.einsum("bnqd,bnkd->bnqk", q, k), jnp.finfo(jnp.float32).min), -1)
        if dropout:
            p = jnp.where(attention_keep_mask(seed, tok, n, rate), p / (1 - rate), 0.0)
        return jnp.einsum("bnqk,bnkd->bnqd", p, v)

    def ours(q, k, v):
        return attention(q, k, v, keep, rate, seed, tok) if dropout else attention(q, k, v, keep)

    np.testing.assert_allclose(ours(q, k, v), ref(q, k, v), atol=2e-6)
    g_ref = jax.grad(lambda *a: jnp.sum(ref(*a) * w), argnums=(0, 1, 2))(q, k, v)
    g_ours = jax.jit(jax.grad(lambda *a: jnp.sum(ours(*a) * w), argnums=(0, 1, 2)))(q, k, v)
    for x, y in zip(g_ours, g_ref):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert float(jnp.abs(g_ref[2][2]).max()) > 0.1  # the all-padding row attends uniformly, with a gradient
    with pytest.raises(ValueError, match="dropout identities"):
        attention(q, k, v, keep, rate, seed)


def test_mask_as_a_bias_is_the_where_bit_for_bit():
    """Masked scores are the float32 minimum exactly (an added bias, not a `where`): scores up to
    1e30 in size are absorbed, none overflows to -inf."""
    from trainer.model.modeling import _scores

    rng = np.random.default_rng(2)
    q = jnp.asarray(rng.standard_normal((2, 3, 5, 4)) * np.array([1.0, 1e3, 1e29, -1e29]), jnp.float32)
    k = jnp.asarray(rng.standard_normal((2, 3, 5, 4)), jnp.float32)
    keep = jnp.asarray(rng.random((2, 1, 5, 5)) < 0.5)
    s = jnp.einsum("bnqd,bnkd->bnqk", q, k)
    assert float(jnp.abs(s).max()) > 1e28
    np.testing.assert_array_equal(_scores(q, k, keep), jnp.where(keep, s, jnp.finfo(jnp.float32).min))


@pytest.mark.parametrize("packed", [False, True])
def test_blocked_inference_attention_equals_the_fused_one(packed):
    """Inference on CPU splits the queries into blocks once the scores outgrow max_block_scores: the
    same numbers as one fusion (each query still reduces over all its keys), the loop really in the
    program, and the gradient (the custom VJP, unblocked) unchanged."""
    from trainer.model.modeling import attention, query_blocks

    rng = np.random.default_rng(1)
    b, n, l, d = 2, 3, 64, 8
    q, k, v, w = (jnp.asarray(rng.standard_normal((b, n, l, d)), jnp.float32) for _ in range(4))
    if packed:  # row 0: texts of 20 and 44 tokens; row 1: 50 tokens and padding
        text = jnp.asarray([[0] * 20 + [1] * 44, [0] * 50 + [-1] * 14])
        keep = ((text[:, :, None] == text[:, None, :]) & (text[:, None, :] >= 0))[:, None]
    else:
        keep = jnp.asarray(np.arange(l) < np.array([[l], [37]]))[:, None, None, :]
    small = 16 * l  # four blocks of 16 queries
    assert query_blocks(q.shape, small) == 4 and query_blocks(q.shape) == 1
    assert [query_blocks((8, 12, length, 32)) for length in (128, 256, 384, 512)] == [1, 1, 4, 4]

    blocked = jax.jit(lambda q, k, v: attention(q, k, v, keep, max_block_scores=small))
    fused = jax.jit(lambda q, k, v: attention(q, k, v, keep))
    assert "while" in blocked.lower(q, k, v).as_text() and "while" not in fused.lower(q, k, v).as_text()
    np.testing.assert_allclose(blocked(q, k, v), fused(q, k, v), atol=1e-6)
    grads = [jax.grad(lambda *a, f=f: jnp.sum(f(*a) * w), argnums=(0, 1, 2))(q, k, v) for f in (blocked, fused)]
    for x, y in zip(*grads):
        np.testing.assert_array_equal(x, y)


def test_padding_rows_and_pooling():
    config = EncoderConfig(**TINY)
    ids, mask = _batch(0)
    mask[3] = 0  # an all-padding filler row must not produce NaN
    model = SentenceEncoder(config)
    params = model.init(jax.random.PRNGKey(0), ids, mask)
    out = np.asarray(model.apply(params, ids, mask))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[3], 0)
    np.testing.assert_allclose(np.linalg.norm(np.delete(out, 3, 0), axis=1), 1, atol=1e-6)
    h = jnp.arange(12.0).reshape(1, 3, 4)
    np.testing.assert_allclose(mean_pool(h, jnp.array([[1, 1, 0]])), [[2, 3, 4, 5]])
    np.testing.assert_allclose(l2_normalize(jnp.array([[3.0, 4.0]])), [[0.6, 0.8]])


def test_config_from_and_to_hf_dict():
    d = {
        "model_type": "xlm-roberta",
        "vocab_size": 250002,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "max_position_embeddings": 514,
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-5,
        "architectures": ["XLMRobertaForMaskedLM"],
    }
    cfg = EncoderConfig.from_hf_dict(d)
    assert cfg.pad_token_id == 1 and cfg.roberta_like and cfg.max_input_length == 512
    assert EncoderConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
    with pytest.raises(ValueError, match="unsupported model_type 'gpt2'; supported: bert, roberta, xlm-roberta"):
        EncoderConfig.from_hf_dict({"model_type": "gpt2"})
    with pytest.raises(ValueError, match="position_embedding_type 'relative_key'"):
        EncoderConfig.from_hf_dict({"model_type": "bert", "position_embedding_type": "relative_key"})
    with pytest.raises(ValueError, match="unsupported hidden_act"):
        EncoderConfig(hidden_act="mish")
    with pytest.raises(ValueError, match="exceeds"):
        Encoder(EncoderConfig(**TINY)).init(jax.random.PRNGKey(0), jnp.ones((1, 41), jnp.int32), jnp.ones((1, 41)))


def _corr_ok(x, y):
    return abs(np.corrcoef(np.ravel(x), np.ravel(y))[0, 1]) < 4 / np.sqrt(np.size(x))


def test_dropout_masks_keep_the_rate_and_are_independent():
    from trainer.model.modeling import Dropout, attention_keep_mask, dropout_token_ids, hidden_keep_mask

    rate = 0.1
    text = np.repeat(np.arange(50), 10).reshape(50, 10)
    tok = dropout_token_ids(
        jnp.asarray(text),
        jnp.asarray(np.tile(np.arange(10), (50, 1))),  # 50 texts x 10
        num_texts=50,
        length=10,
    )
    seed, other = jnp.uint32(12345), jnp.uint32(12346)
    a = np.asarray(hidden_keep_mask(seed, tok, 400, rate))  # [50, 10, 400]
    b = np.asarray(hidden_keep_mask(other, tok, 400, rate))
    sigma = np.sqrt(rate * (1 - rate) / a.size)
    assert abs(a.mean() - 0.9) < 3 * sigma and abs(b.mean() - 0.9) < 3 * sigma
    # across seeds (sites, steps), neighbouring units, neighbouring positions, neighbouring texts
    for x, y in ((a, b), (a[..., 1:], a[..., :-1]), (a[:, 1:], a[:, :-1]), (a[1:], a[:-1])):
        assert _corr_ok(x, y)
    np.testing.assert_array_equal(np.asarray(hidden_keep_mask(seed, tok, 400, rate)), a)  # same inputs, same mask
    assert np.asarray(hidden_keep_mask(seed, tok, 400, 0.0)).all()

    att = np.asarray(attention_keep_mask(seed, tok, 12, rate))  # [50, 12 heads, 10, 10]
    sigma = np.sqrt(rate * (1 - rate) / att.size)
    assert abs(att.mean() - 0.9) < 3 * sigma
    off = ~np.eye(10, dtype=bool)  # (q, k) against (k, q): off the diagonal, which maps to itself
    for x, y in (
        (att[:, 1:], att[:, :-1]),
        (att[..., 1:], att[..., :-1]),
        (att[:, :, 1:], att[:, :, :-1]),
        (att[:, :, off], np.swapaxes(att, 2, 3)[:, :, off]),
        (att, np.asarray(attention_keep_mask(other, tok, 12, rate))),
    ):
        assert _corr_ok(x, y)  # heads, keys, queries, (q, k) vs (k, q), seeds

    # A token's mask follows its identity: the same texts in another order give the same masks, moved.
    perm = np.random.default_rng(0).permutation(50)
    moved = np.asarray(hidden_keep_mask(seed, tok[perm], 400, rate))
    np.testing.assert_array_equal(moved, a[perm])

    x = jnp.ones((50, 10, 400))
    y = Dropout(rate).apply({}, x, tok, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 1 / 0.9], rtol=1e-6)  # inverted dropout
    np.testing.assert_array_equal(Dropout(rate).apply({}, x, tok, deterministic=True), x)


def test_dropout_identities_refuse_what_would_alias():
    from trainer.model.modeling import dropout_token_ids

    # Why: (text, position) packs into 20 + 12 bits, so one position past the limit is the next text's.
    ids = lambda t, p, **bounds: int(dropout_token_ids(jnp.asarray(t), jnp.asarray(p), **bounds))
    assert ids(2, 4096, num_texts=4, length=4096) == ids(3, 0, num_texts=4, length=4096)  # spills into text 3
    ids(2**20 - 1, 4095, num_texts=2**20, length=4096)  # the limits themselves are accepted
    with pytest.raises(ValueError, match=r"at most 1,048,576 texts .* got 1,048,577"):
        dropout_token_ids(jnp.zeros(2), jnp.zeros(2), num_texts=2**20 + 1, length=8)
    with pytest.raises(ValueError, match=r"at most 4,096 positions .* got a sequence length of 4,097"):
        dropout_token_ids(jnp.zeros(2), jnp.zeros(2), num_texts=2, length=4097)
    # A model with more positions than the hash holds is refused when dropout is traced, not at inference.
    long = SentenceEncoder(EncoderConfig(**{**TINY, "max_position_embeddings": 8192}))
    x = jax.ShapeDtypeStruct((1, 4097), jnp.int32)
    params = jax.eval_shape(long.init, jax.random.PRNGKey(0), x, x)  # without dropout: accepted
    with pytest.raises(ValueError, match="4,097"):
        jax.eval_shape(
            lambda p, i: long.apply(p, i, i, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)}), params, x
        )


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_packed_rows_give_the_embeddings_of_padded_rows(model_type):
    from trainer.data.packing import pack_batch

    pad = 1 if model_type == "roberta" else 0
    cfg = EncoderConfig(model_type=model_type, pad_token_id=pad, **TINY)
    model = SentenceEncoder(cfg)
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 17, size=(2, 6))
    mask = (np.arange(16)[None, None] < lengths[..., None]).astype(np.int32)
    ids = np.where(mask == 1, rng.integers(3, 120, size=(2, 6, 16)), pad).astype(np.int32)
    params = model.init(jax.random.PRNGKey(1), ids[0], mask[0])
    batch = {
        "anchor_ids": ids[0],
        "anchor_mask": mask[0],
        "anchor_fp": np.arange(6, dtype=np.int32),
        "positive_ids": ids[1],
        "positive_mask": mask[1],
        "positive_fp": np.arange(6, 12, dtype=np.int32),
    }
    packed = pack_batch(batch, 2, (8, 16, 32), 8, pad_id=pad)
    got = model.apply(
        params, packed["packed_ids"], packed["packed_positions"], packed["packed_text"], 6, method="packed"
    )  # [2 shards, 2 columns * 3 texts, H]
    want = [model.apply(params, ids[c], mask[c]) for c in range(2)]
    for s in range(2):
        for c in range(2):
            np.testing.assert_allclose(got[s, c * 3 : (c + 1) * 3], want[c][s * 3 : (s + 1) * 3], atol=2e-6)


def test_a_remat_mix_names_each_layers_mode():
    from trainer.model.modeling import layer_modes, remat_mix

    assert layer_modes("dots:2,qkv:1", 3) == ("dots", "dots", "qkv") and layer_modes("qkv", 2) == ("qkv", "qkv")
    assert layer_modes(True, 2) == ("full", "full") and layer_modes("auto", 1) == ("none",)
    assert remat_mix({"none": 0, "dots": 3}) == "dots" and remat_mix({"dots": 1, "qkv": 2}) == "dots:1,qkv:2"
    with pytest.raises(ValueError, match="covers 2 layers"):
        layer_modes("dots:1,qkv:1", 3)
    with pytest.raises(ValueError, match="remat must be"):
        layer_modes("fast:3", 3)
