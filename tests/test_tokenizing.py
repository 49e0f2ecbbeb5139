import pytest

from pipeline.model_source import DEMO_MODEL, demo_model_dir, is_hub_name, resolve_model_source
from pipeline.tokenizing import (
    DEMO_TOKENIZER,
    BatchTokenizer,
    TokenizerError,
    describe,
    load_hf_tokenizer,
    save_for_workers,
    vocab_fingerprint,
)


@pytest.fixture(scope="module")
def hf():
    return load_hf_tokenizer(DEMO_TOKENIZER)


TEXTS = [
    "A man is riding a bicycle.",
    "Café au lait, naïve résumé!",
    "What is the capital of France?",
    "word " * 400,
    "x",
    "Über 東京 ünïcödé   spacing\tand\nnewlines",
]


def test_demo_names_resolve_to_the_bundled_copy(tmp_path):
    assert resolve_model_source(DEMO_TOKENIZER) == resolve_model_source(DEMO_MODEL) == demo_model_dir()
    assert resolve_model_source("bert-base-uncased") == "bert-base-uncased"  # hub names: for the hub client
    assert resolve_model_source(str(tmp_path)) == str(tmp_path)
    assert [is_hub_name(s) for s in ("org/name", "name", "./name", "/abs/dir", "a/b/c", "gs://b/m")] == [
        True,
        True,
        False,
        False,
        False,
        False,
    ]


def test_batch_tokenizer_matches_the_hf_tokenizer(hf, tmp_path):
    path = save_for_workers(hf, str(tmp_path))
    assert path == str(tmp_path / "tokenizer" / "tokenizer.json")
    for max_len in (128, 16):
        bt = BatchTokenizer.from_path(path, max_len)
        ids, truncated = bt.encode(TEXTS)
        assert ids == hf(TEXTS, truncation=True, max_length=max_len)["input_ids"]
        assert all(i[0] == hf.cls_token_id and i[-1] == hf.sep_token_id for i in ids)  # special tokens kept
        assert max(map(len, ids)) == max_len
        full = hf(TEXTS)["input_ids"]
        assert truncated == [len(f) > max_len for f in full]
    # Saved tokenizers may carry a padding setting: the ids stay unpadded.
    assert len(BatchTokenizer.from_path(path, 128).encode(["x"])[0][0]) == 3


def test_huge_texts_are_cut_in_characters_first(hf):
    bt = BatchTokenizer(hf.backend_tokenizer.to_str(), 8)
    assert bt.max_chars == 160
    huge = "a" * 5_000_000  # one 5 MB "word": would be slow to tokenize whole
    ids, truncated = bt.encode([huge, "short text"])
    assert truncated == [True, False]
    assert ids[0] == hf(["a" * 160], truncation=True, max_length=8)["input_ids"][0]


def test_describe_and_vocab_fingerprint(hf):
    info = describe(hf, "name")
    assert info.vocab_size == 30522 and info.pad_token_id == 0 and info.name == "name"
    assert info.vocab_fingerprint == vocab_fingerprint(dict(hf.get_vocab()))
    assert vocab_fingerprint({"a": 0, "b": 1}) == vocab_fingerprint({"b": 1, "a": 0})
    assert vocab_fingerprint({"a": 0, "b": 1}) != vocab_fingerprint({"a": 1, "b": 0})


def test_a_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="cannot load a tokenizer"):
        load_hf_tokenizer(str(tmp_path / "nowhere"))


def test_gs_tokenizer_directory_and_worker_copy(tmp_path, monkeypatch, hf):
    """--tokenizer=gs://... is downloaded on the launcher; the workers' copy is written to and read
    from gs:// (GCS emulator, tests/_gcs_emulator.py)."""
    import os

    from tests._gcs_emulator import GcsEmulator, server_binary

    binary = server_binary()
    if binary is None:
        pytest.skip("fake-gcs-server binary not found (dev extra)")
    emulator = GcsEmulator(binary, str(tmp_path)).start()
    try:
        for k, v in emulator.client_env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("SET_CACHE_DIR", str(tmp_path / "cache"))  # where the launcher's copy goes
        from google.cloud import storage

        bucket = storage.Client().create_bucket("tokenizers")
        src = demo_model_dir()
        for name in os.listdir(src):
            if os.path.isfile(os.path.join(src, name)):
                bucket.blob(f"minilm/{name}").upload_from_filename(os.path.join(src, name))
        bucket.blob("minilm/1_Pooling/config.json").upload_from_string("{}")  # sub-directories are harmless
        tok = load_hf_tokenizer("gs://tokenizers/minilm")
        assert tok(TEXTS)["input_ids"] == hf(TEXTS)["input_ids"]
        assert describe(tok, "x").vocab_fingerprint == describe(hf, "x").vocab_fingerprint
        path = save_for_workers(tok, "gs://tokenizers/out")
        assert path == "gs://tokenizers/out/tokenizer/tokenizer.json"
        ids, _ = BatchTokenizer.from_path(path, 128).encode(TEXTS)
        assert ids == hf(TEXTS, truncation=True, max_length=128)["input_ids"]
    finally:
        emulator.stop()
