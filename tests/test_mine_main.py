"""mine_main.py: one-line user errors, and mine -> Beam job -> train_main.py on the mined corpus."""

import gzip
import json
import os

import pytest

import mine_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_QA = os.path.join(REPO, "samples", "corpora", "sample_qa-0.jsonl.gz")


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.rstrip("\n")


@pytest.mark.parametrize(
    "lines,flags,message",
    [
        (None, [], "--input={input}: no such file"),
        ([b""], [], "--input={input}: no usable pair line: 1 line(s) read, all rejected (empty_line: 1)"),
        (
            [b"{oops", b'["a"]'],
            [],
            "--input={input}: no usable pair line: 2 line(s) read, all rejected (bad_json: 1, wrong_format: 1)",
        ),
        ([b'["q", "a"]'], ["--output={tmp}/out.txt"], "--output={tmp}/out.txt: name it OUT.jsonl.gz (or OUT.jsonl)"),
        ([b'["q", "a"]'], ["--num_negatives=0"], "--num_negatives must be at least 1, got 0"),
        ([b'["q", "a"]'], ["--range_max=2", "--range_min=2"], "--range_min=2 must be smaller than --range_max=2"),
        ([b'["q", "a"]'], ["--model={tmp}/no_model"], "model directory '{tmp}/no_model' does not exist"),
    ],
)
def test_user_mistakes_are_one_line(tmp_path, capsys, lines, flags, message):
    path = str(tmp_path / "in.jsonl.gz")
    if lines is not None:
        with gzip.open(path, "wb") as f:
            f.write(b"\n".join(lines) + b"\n")
    fill = dict(input=path, tmp=tmp_path)
    flags = [f.format(**fill) for f in flags]
    argv = [f"--input={path}", f"--output={tmp_path}/out.jsonl.gz", "--no_progress"] + flags
    assert mine_main.main(argv) == 2
    assert _one_line(capsys) == f"mine_main.py: error: {message.format(**fill)}"
    assert not os.path.exists(tmp_path / "out.jsonl.gz")


def test_a_file_that_cannot_be_read_fails_in_one_line(tmp_path, capsys):
    """Never mining part of a file: a truncated input is exit status 1 and one line."""
    whole = open(SAMPLE_QA, "rb").read()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    assert mine_main.main([f"--input={cut}", f"--output={tmp_path}/out.jsonl.gz", "--no_progress"]) == 1
    line = _one_line(capsys)
    assert line.startswith(f"mine_main.py: error: cannot read {cut} (after line ") and line.endswith(
        "3 attempt(s)): EOFError: Compressed file ended before the end-of-stream marker was reached"
    )
    assert not os.path.exists(tmp_path / "out.jsonl.gz")


def test_bad_flags_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        mine_main.main(["--input=x", "--output=y.jsonl.gz", "--sampling_strategy=best"])
    assert e.value.code == 2
    assert _one_line(capsys).startswith("mine_main.py: error: argument --sampling_strategy: invalid choice: 'best'")
    with pytest.raises(SystemExit) as e:
        mine_main.main(["--input=x", "--output=y.jsonl.gz", "--cpu_devices=-1"])
    assert e.value.code == 2
    assert _one_line(capsys).startswith(
        "mine_main.py: error: argument --cpu_devices: expected an integer >= 0, got '-1'"
    )


@pytest.mark.slow  # 1-2 min on 2 cores: mining, the Beam job and a short training run
def test_mined_corpus_goes_through_the_beam_job_and_trains(tmp_path, tiny_st_model, tiny_bert_dir):
    import train_main
    from pipeline.job import run as beam_run
    from pipeline.manifest import load_manifest

    mined = str(tmp_path / "mined" / "qa_mined.jsonl.gz")
    assert (
        mine_main.main(
            [
                f"--input={SAMPLE_QA}",
                f"--output={mined}",
                f"--model={tiny_st_model}",
                "--num_negatives=2",
                "--range_min=1",
                "--no_progress",
            ]
        )
        == 0
    )
    report = json.load(open(str(tmp_path / "mined" / "qa_mined.report.json")))
    entry = report["data_config_entry"]
    assert report["counts"]["anchors_written"] == report["counts"]["anchors"] == 668
    config = str(tmp_path / "data_config.json")
    with open(config, "w") as f:
        json.dump({"corpora": [entry]}, f)
    data = str(tmp_path / "data")
    assert beam_run(
        [
            f"--data_config={config}",
            f"--output_dir={data}",
            f"--tokenizer={tiny_bert_dir}",
            "--max_seq_length=32",
            "--validation_fraction=0.1",
        ]
    ) in (0, None)
    corpus = load_manifest(data).corpus("qa_mined")
    assert corpus.record_format == "query_with_negatives" and corpus.description == entry["description"]
    assert corpus.train_examples + corpus.validation_examples == 668
    workdir = str(tmp_path / "train")
    assert (
        train_main.main(
            [
                f"--data_dir={data}",
                f"--workdir={workdir}",
                f"--model={tiny_bert_dir}",
                "--from_scratch=true",
                "--batch_size=8",
                "--train_steps=3",
                "--warmup_steps=1",
                "--eval_every=0",
                "--checkpoint_every=1000",
                "--bucket_lengths=16,32",
                "--max_seq_length=32",
                "--sts_dev=none",
                "--no_progress",
            ]
        )
        == 0
    )
    card = open(os.path.join(workdir, "export", "README.md")).read()
    assert "qa_mined" in card and report["model"]["fingerprint"] in card
    assert report["output"]["sha256"][:16] in card
