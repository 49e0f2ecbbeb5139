"""Train a sentence-embedding model on the Beam job's output.

  python train_main.py --data_dir=out/data --workdir=out/train --config=demo
  python train_main.py --data_dir=gs://B/data --workdir=gs://B/run --config=reference

Every TrainConfig field (trainer/config.py) is a flag that overrides the preset. Rerunning the same
command with the same workdir resumes from its latest checkpoint. Exit status: 0; 2 for a user's
mistake (a bad flag or value, a missing manifest or model, an --mteb_tasks entry that mteb does not
know), said in one line; 3 when the loss went non-finite; 4 when training finished and the model was
exported but a task of --mteb_tasks failed (the log names it and the cause; rerunning the same command
runs the final evaluation, the export and the tasks again, not the training).
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import logging
import os
import sys
import typing


def cuda_driver_installed() -> bool:
    """Whether TensorFlow could start CUDA here: it loads the driver by this name."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


# TensorFlow's start-up chatter hides our log: its C++ log shows errors only. And TensorFlow (the input
# pipeline's tf.data, on the CPU) probes CUDA when its runtime starts: with no driver (every CPU
# machine) it logs `failed call to cuInit: ... CUDA error` as an error, and no option skips the probe.
# Without a driver it can start no GPU, so there it logs fatal errors only (its failures reach us as
# Python exceptions anyway); with one, errors as before. JAX's devices are untouched either way.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if cuda_driver_installed() else "3")

from pipeline.model_source import is_hub_name
from pipeline.storage import is_remote
from pipeline.user_errors import ArgumentParser, UserError, prog_name, run_cli
from trainer.config import PRESETS, TrainConfig, get_preset

BOOLEANS = {"1": True, "true": True, "yes": True, "y": True, "0": False, "false": False, "no": False, "n": False}
TYPE_NAMES = {int: "an integer", float: "a number", str: "a string"}
EXIT_MTEB_FAILED = 4  # trained and exported, but an --mteb_tasks task failed


def _parse_bool(s: str) -> bool:
    if s.strip().lower() not in BOOLEANS:
        raise argparse.ArgumentTypeError(f"expected true or false (or 1/0, yes/no), got {s!r}")
    return BOOLEANS[s.strip().lower()]


def _expecting(parse, what: str):
    """`parse`, with a value it refuses reported as `expected <what>` (argparse names the flag)."""
    def parser(s: str):
        try:
            return parse(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
    return parser


def _field_parser(tp):
    """A flag parser for a TrainConfig field's type: booleans are strict, tuples comma-separated,
    `X | None` takes 'none'."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is tuple:
        return _expecting(lambda s: tuple(args[0](x) for x in s.split(",") if x),
                          f"comma-separated values, each {TYPE_NAMES[args[0]]}")
    if tp is bool:
        return _parse_bool
    if type(None) in typing.get_args(tp):
        return _expecting(lambda s: None if s.lower() in ("", "none") else args[0](s), f"{TYPE_NAMES[args[0]]} or none")
    return _expecting(tp, TYPE_NAMES[tp])


def program_name() -> str:
    """train_main.py, or set-train when run as that console script."""
    return prog_name("set-train", "train_main.py")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The flags; `prog` names the program in messages (argparse's default: the script's file name)."""
    p = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default="out/data", help="the Beam job's output_dir (with manifest.json)")
    p.add_argument("--workdir", default="out/train", help="checkpoints, metrics, TensorBoard; resumes if present")
    p.add_argument("--config", default="demo", choices=sorted(PRESETS), help="preset; flags override its fields")
    p.add_argument("--coordinator_address", default=None, help="multi-host (not TPU pods): host:port of process 0")
    p.add_argument("--num_processes", type=int, default=None)
    p.add_argument("--process_id", type=int, default=None)
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument("--stop_at_step", type=int, default=None,
                   help="checkpoint and stop after this step, as a preemption would (time-boxed jobs)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        p.add_argument(f"--{f.name}", type=_field_parser(hints[f.name]), default=None,
                       help=f"(default from the preset; reference: {f.default!r})")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = get_preset(args.config)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if getattr(args, f.name) is not None}
    return cfg.replace(**overrides)


def check_inputs(cfg: TrainConfig, data_dir: str) -> None:
    """What the user named, checked before the trainer (and TensorFlow) starts: --model when it is a
    local path, the --ir_eval directories, the --mteb_tasks (mteb importable, each task known), the
    batch over this run's devices, and the Beam job's manifest in --data_dir (with the IR and STS prompt
    names in its prompt table)."""
    from pipeline import storage
    from pipeline.manifest import load_manifest
    from trainer.evaluators.ir import training_ir_prompts
    from trainer.evaluators.mteb_tasks import resolve_tasks
    from trainer.evaluators.sts import training_sts_prompt
    from trainer.mesh import check_batch_layout, create_mesh

    if not (is_remote(cfg.model) or is_hub_name(cfg.model) or os.path.isdir(cfg.model)):
        raise UserError(f"--model={cfg.model}: no such directory (give a local or gs:// model directory, "
                        "or a Hugging Face name)")
    for d in cfg.ir_eval:
        if not storage.exists(storage.join(d, "corpus.jsonl")):
            raise UserError(f"--ir_eval={d}: no corpus.jsonl there (a BEIR-format directory: corpus.jsonl, "
                            "queries.jsonl, qrels/test.tsv)")
    resolve_tasks(cfg.mteb_tasks)
    check_batch_layout(cfg.batch_size, create_mesh(), cfg.grad_cache_chunk)
    manifest = load_manifest(data_dir)
    training_ir_prompts(cfg, manifest)  # the prompt names in the manifest's table
    training_sts_prompt(cfg, manifest)


def main(argv: list[str] | None = None) -> int:
    """Train (console script `set-train`); a user's mistake is one line on stderr and exit status 2."""
    return run_cli(program_name(), _train, argv)


def _train(argv: list[str] | None) -> int:
    args = build_parser(program_name()).parse_args(argv)
    cfg = config_from_args(args)  # every value checked (trainer/config.py) before anything starts
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src.xla_bridge"):  # orbax logs every file it renames at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from trainer.mesh import initialize_distributed

    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    check_inputs(cfg, args.data_dir)
    from trainer.train_loop import NonFiniteLossError, train

    try:
        result = train(cfg, args.data_dir, args.workdir, progress=not args.no_progress,
                       stop_at_step=args.stop_at_step)
    except NonFiniteLossError as e:
        logging.getLogger("trainer").error("%s", e)
        return 3
    if result.finished:
        logging.getLogger("trainer").info("done at step %d; exported to %s", result.step, result.export_dir)
    if result.mteb is not None and result.mteb.failures:
        logging.getLogger("trainer").error(
            "training finished and the model is exported to %s, but MTEB task(s) %s failed (above); rerun the "
            "same command to run them again (the training is not repeated)", result.export_dir,
            ", ".join(result.mteb.failures))
        return EXIT_MTEB_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
