import os

import pytest

from pipeline.options import SAMPLE_CONFIG, SAMPLE_INPUT_ROOT, OptionsError, parse_args, pipeline_options


def test_defaults_are_the_bundled_samples():
    opts, beam_args = parse_args([])
    assert opts.data_config == SAMPLE_CONFIG and opts.input_root == SAMPLE_INPUT_ROOT
    assert opts.output_dir == os.path.abspath("out/data") and opts.max_seq_length == 128
    assert opts.validation_fraction == 0.01 and opts.corpora == () and not opts.overwrite and beam_args == []
    assert os.path.isfile(opts.data_config) and os.path.isdir(opts.input_root)


def test_beam_flags_pass_through_untouched(tmp_path):
    argv = [
        "--data_config",
        str(tmp_path / "cfg.json"),
        "--corpora=a, b",
        "--output_dir=gs://bucket/out",
        "--runner=DataflowRunner",
        "--project=p",
        "--region=europe-west4",
        "--temp_location=gs://bucket/tmp",
        "--setup_file=./pyproject.toml",
        "--max_seq_length=256",
    ]
    opts, beam_args = parse_args(argv)
    assert opts.corpora == ("a", "b") and opts.max_seq_length == 256 and opts.output_dir == "gs://bucket/out"
    assert opts.input_root == str(tmp_path)  # default: beside the config
    assert beam_args == argv[4:9]
    po = pipeline_options(beam_args).get_all_options()
    assert po["runner"] == "DataflowRunner" and po["project"] == "p" and po["region"] == "europe-west4"
    assert po["direct_num_workers"] == 1  # local defaults are not applied to other runners


def test_local_runner_defaults_and_overrides():
    po = pipeline_options([]).get_all_options()
    assert (po["runner"], po["direct_num_workers"], po["direct_running_mode"]) == ("FnApiRunner", 1, "in_memory")
    po = pipeline_options(["--runner=DirectRunner", "--direct_running_mode=multi_processing"]).get_all_options()
    assert (po["runner"], po["direct_num_workers"], po["direct_running_mode"]) == ("FnApiRunner", 2, "multi_processing")
    po = pipeline_options(["--direct_running_mode=multi_threading", "--direct_num_workers", "3"]).get_all_options()
    assert (po["direct_num_workers"], po["direct_running_mode"]) == (3, "multi_threading")


@pytest.mark.parametrize(
    "flag",
    [
        "--max_seq_length=1",
        "--validation_fraction=1.0",
        "--validation_fraction=-0.1",
        "--batch_lines=0",
        "--train_shards=-1",
    ],
)
def test_bad_values(flag):
    with pytest.raises(OptionsError):
        parse_args([flag])


def test_cleaning_flags():
    opts, _ = parse_args([])
    assert (opts.deduplicate, opts.decontaminate, opts.decontaminate_documents, opts.clean_bucket_tuples) == (
        True,
        "",
        False,
        1_000_000,
    )
    opts, _ = parse_args(
        ["--no_deduplicate", "--decontaminate=a,b", "--decontaminate_documents", "--clean_bucket_tuples=5"]
    )
    assert (opts.deduplicate, opts.decontaminate, opts.decontaminate_documents, opts.clean_bucket_tuples) == (
        False,
        "a,b",
        True,
        5,
    )
    with pytest.raises(OptionsError, match="--decontaminate_documents needs --decontaminate"):
        parse_args(["--decontaminate_documents"])
    with pytest.raises(OptionsError, match="--clean_bucket_tuples must be positive"):
        parse_args(["--clean_bucket_tuples=0"])
