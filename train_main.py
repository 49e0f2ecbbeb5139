"""Train a sentence-embedding model on the Beam job's output.

  python train_main.py --data_dir=out/data --workdir=out/train --config=demo
  python train_main.py --data_dir=gs://B/data --workdir=gs://B/run --config=reference

Every TrainConfig field (trainer/config.py) is a flag that overrides the preset. Rerunning the same
command with the same workdir resumes from its latest checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import typing

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides our log

from trainer.config import PRESETS, TrainConfig, get_preset


def _field_parser(tp):
    """A flag parser for a TrainConfig field's type: tuples are comma-separated, `X | None` takes 'none'."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is tuple:
        return lambda s: tuple(args[0](x) for x in s.split(",") if x)
    if tp is bool:
        return lambda s: s.lower() in ("1", "true", "yes", "y")
    if type(None) in typing.get_args(tp):
        return lambda s: None if s.lower() in ("", "none") else args[0](s)
    return tp


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src.xla_bridge"):  # orbax logs every file it renames at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from trainer.mesh import initialize_distributed

    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    cfg = config_from_args(args)
    from trainer.preflight import PreflightError
    from trainer.train_loop import NonFiniteLossError, train

    try:
        result = train(cfg, args.data_dir, args.workdir, progress=not args.no_progress,
                       stop_at_step=args.stop_at_step)
    except NonFiniteLossError as e:
        logging.getLogger("trainer").error("%s", e)
        return 3
    except PreflightError as e:  # the plan does not fit: a user's fix, not a bug
        print(f"train_main.py: error: {e}", file=sys.stderr)
        return 2
    logging.getLogger("trainer").info("done: %s", {k: v for k, v in result.items() if k != "evaluation_before"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
