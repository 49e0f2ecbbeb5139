"""One form for mistakes a user can fix (a bad flag, a missing file, a config value out of range).

Every entry point prints such an error as one line, `<prog>: error: <message>`, and exits with
status 2, as argparse does for a bad flag; anything else is a bug and keeps its traceback.
Errors of this kind subclass `UserError` where they are raised (data config, manifest, options,
tokenizer, train config, input pipeline, preflight), so entry points need not list them.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Callable, Iterator, Sequence

EXIT_USER_ERROR = 2


class UserError(ValueError):
    """A mistake in what the user asked for; the message names the flag, field or file."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a bad flag in the same one-line form (the usage stays behind --help)."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def prog_name(script: str, module_form: str) -> str:
    """The program's name in messages: the console script (pyproject.toml) when run as one, else
    how it is run from a checkout (`train_main.py`, `python -m trainer.cli export`)."""
    return script if os.path.basename(sys.argv[0]) == script else module_form


@contextlib.contextmanager
def as_user_errors(*types: type[BaseException]) -> Iterator[None]:
    """Re-raise `types` as UserError: only at a tool's boundary, where they can only be about the
    files and names the user gave (a missing model directory or input file)."""
    try:
        yield
    except types as e:
        raise UserError(str(e)) from e


def run_cli(prog: str, main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """`main(argv)`, with a UserError turned into one line on stderr and exit status 2."""
    try:
        return main(argv)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
