"""The compile-only TPU planner's command line (console script set-plan): the library is trainer/plan/projection.py.

python -m trainer.plan.planner --topology=v3-8 --config=reference [any train_main.py flag]
python -m trainer.plan.planner --topology=v5litepod-8 --config=reference --chunk_tokens=0 --json=plan.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from pipeline.user_errors import UserError, as_user_errors, prog_name, run_cli
from trainer.plan import tpu
from trainer.plan.length_profiles import corpus_profiles
from trainer.plan.projection import plan, read_model_config


def build_parser() -> argparse.ArgumentParser:
    from trainer import flags

    p = flags.build_parser(program_name(), __doc__)
    p.add_argument("--topology", default="v3-8", choices=sorted(tpu.SLICES), help="the TPU slice to compile for")
    p.add_argument(
        "--shapes",
        default="worst,typical",
        help="which shapes to compile: worst (with the largest "
        "unchunked ones), typical, mix (every program of the simulated run)",
    )
    p.add_argument(
        "--cache",
        default=None,
        help="a JSON-lines file of compiled programs' figures: programs found "
        "there are not compiled again, new ones are added",
    )
    p.add_argument("--sim_steps", type=int, default=10_000, help="schedule steps simulated for the shape mix")
    p.add_argument(
        "--manifest",
        default=None,
        help="length statistics from a Beam job's manifest.json "
        "(default: the length profiles stated in trainer/plan/length_profiles.py)",
    )
    p.add_argument("--data_config", default=None, help="corpora and weights (default: data_config.json)")
    p.add_argument(
        "--efficiency", type=float, default=0.4, help="share of peak reached on the executed FLOPs, for the projection"
    )
    p.add_argument(
        "--no_compile",
        action="store_true",
        help="compile nothing: the --cache's programs only "
        "(the others projected analytically), to re-print a plan from the compiles so far",
    )
    p.add_argument("--json", default=None, help="also write the report as JSON here")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="programs compiled at once")
    return p


def program_name() -> str:
    """python -m trainer.plan.planner, or set-plan when run as that console script."""
    return prog_name("set-plan", "python -m trainer.plan.planner")


def main(argv: list[str] | None = None) -> int:
    """The planner's command line (console script set-plan): exit 0 when every shape fits, 1 when one
    does not, 2 with one line for a user's mistake (a flag, a config value, a missing model or file)."""
    return run_cli(program_name(), _main, argv)


def _main(argv: list[str] | None) -> int:
    from pipeline.manifest import load_manifest
    from trainer.data.shapes import with_effective_length
    from trainer.flags import config_from_args

    args = build_parser().parse_args(argv)
    with as_user_errors(FileNotFoundError):
        manifest = load_manifest(args.manifest) if args.manifest else None
    # The run's batches never exceed the data's cut: plan the shapes training will emit.
    cfg = with_effective_length(config_from_args(args), manifest)
    s = tpu.get_slice(args.topology)
    shapes = [x for x in args.shapes.split(",") if x]
    if set(shapes) - {"worst", "typical", "mix"}:
        raise UserError(f"--shapes={args.shapes}: choose from worst, typical, mix (comma-separated)")
    if cfg.batch_size % s.devices:
        raise UserError(
            f"--batch_size={cfg.batch_size} does not divide over the {s.devices} devices of a "
            f"{s.name}; use a multiple of {s.devices}"
        )
    if args.sim_steps < 1 or args.jobs < 1 or not 0 < args.efficiency <= 1:
        raise UserError("--sim_steps and --jobs must be at least 1, --efficiency in (0, 1]")
    with as_user_errors(FileNotFoundError):  # the model's config.json or the data config named
        read_model_config(cfg.model)
        profiles = corpus_profiles(manifest, args.data_config, cfg.model)
    report = plan(
        cfg,
        s,
        shapes,
        args.sim_steps,
        profiles,
        args.efficiency,
        args.jobs,
        cfg.memory_budget_gib,
        cache=args.cache,
        compile_missing=not args.no_compile,
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0 if report["fits"] else 1


if __name__ == "__main__":
    sys.exit(main())
