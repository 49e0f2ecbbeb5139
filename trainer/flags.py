"""The trainer's command-line flags: every TrainConfig field is a flag that overrides the preset.

Shared by train_main.py and the planning tools (trainer/plan), which take the same flags so that a plan
describes the run it plans; nothing here imports an entry point.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from pipeline.user_errors import ArgumentParser
from trainer.config import PRESETS, TrainConfig, get_preset

BOOLEANS = {"1": True, "true": True, "yes": True, "y": True, "0": False, "false": False, "no": False, "n": False}
TYPE_NAMES = {int: "an integer", float: "a number", str: "a string"}


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
        return _expecting(
            lambda s: tuple(args[0](x) for x in s.split(",") if x),
            f"comma-separated values, each {TYPE_NAMES[args[0]]}",
        )
    if tp is bool:
        return _parse_bool
    if type(None) in typing.get_args(tp):
        return _expecting(lambda s: None if s.lower() in ("", "none") else args[0](s), f"{TYPE_NAMES[args[0]]} or none")
    return _expecting(tp, TYPE_NAMES[tp])


def build_parser(prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """The flags; `prog` names the program in messages (argparse's default: the script's file name)."""
    p = ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default="out/data", help="the Beam job's output_dir (with manifest.json)")
    p.add_argument("--workdir", default="out/train", help="checkpoints, metrics, TensorBoard; resumes if present")
    p.add_argument("--config", default="demo", choices=sorted(PRESETS), help="preset; flags override its fields")
    p.add_argument("--coordinator_address", default=None, help="multi-host (not TPU pods): host:port of process 0")
    p.add_argument("--num_processes", type=int, default=None)
    p.add_argument("--process_id", type=int, default=None)
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--stop_at_step",
        type=int,
        default=None,
        help="checkpoint and stop after this step, as a preemption would (time-boxed jobs)",
    )
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        p.add_argument(
            f"--{f.name}",
            type=_field_parser(hints[f.name]),
            default=None,
            help=f"(default from the preset; reference: {f.default!r})",
        )
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = get_preset(args.config)
    overrides = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name) is not None
    }
    return cfg.replace(**overrides)
