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
import logging
import os
import sys

from trainer.tf_log import quiet_tensorflow

quiet_tensorflow()  # before anything imports TensorFlow

from pipeline.model_source import is_hub_name
from pipeline.storage import is_remote
from pipeline.user_errors import UserError, prog_name, run_cli
from trainer import flags
from trainer.config import TrainConfig
from trainer.flags import config_from_args  # noqa: F401 (the tests' and users' import of it)

EXIT_MTEB_FAILED = 4  # trained and exported, but an evaluation of the export (an --mteb_tasks task) failed


def program_name() -> str:
    """train_main.py, or set-train when run as that console script."""
    return prog_name("set-train", "train_main.py")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    return flags.build_parser(prog, __doc__)


def check_inputs(cfg: TrainConfig, data_dir: str) -> None:
    """What the user named, checked before the trainer (and TensorFlow) starts: --model when it is a
    local path, the --loss, what each evaluator of --evaluators needs (trainer/evaluators/suite.py: the
    --ir_eval directories, the --mteb_tasks known to mteb, prompt names in the manifest's table), the
    batch over this run's devices, and the Beam job's manifest in --data_dir."""
    from trainer.evaluators import suite
    from trainer.mesh import check_batch_layout, create_mesh
    from trainer.train.loss import loss_named

    if not (is_remote(cfg.model) or is_hub_name(cfg.model) or os.path.isdir(cfg.model)):
        raise UserError(
            f"--model={cfg.model}: no such directory (give a local or gs:// model directory, or a Hugging Face name)"
        )
    try:
        loss_named(cfg.loss)
    except ValueError as e:
        raise UserError(f"--loss: {e}") from None
    inputs = suite.check_inputs(cfg, data_dir)
    check_batch_layout(cfg.batch_size, create_mesh(), cfg.grad_cache_chunk)
    inputs.manifest  # noqa: B018 -- the Beam job's manifest, read (and checked) once


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
    from trainer.train.train_loop import NonFiniteLossError, train

    try:
        result = train(cfg, args.data_dir, args.workdir, progress=not args.no_progress, stop_at_step=args.stop_at_step)
    except NonFiniteLossError as e:
        logging.getLogger("trainer").error("%s", e)
        return 3
    if result.finished:
        logging.getLogger("trainer").info("done at step %d; exported to %s", result.step, result.export_dir)
    if result.export_failures:
        logging.getLogger("trainer").error(
            "training finished and the model is exported to %s, but %s failed (above); rerun the "
            "same command to run them again (the training is not repeated)",
            result.export_dir,
            "; ".join(result.export_failures),
        )
        return EXIT_MTEB_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
