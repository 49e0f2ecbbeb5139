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
import re
import sys
from typing import Callable, Iterator, Sequence

EXIT_USER_ERROR = 2


class UserError(ValueError):
    """A mistake in what the user asked for; the message names the flag, field or file."""


class JobFailure(Exception):
    """A failure of a running job that the user must hear about in one line, not a traceback: a file
    that cannot be read, counts that differ from the data config. Raised on a worker, it reaches the
    launcher wrapped by the runner (in_memory: in the exception's chain; worker processes and
    Dataflow: as text in the error message), where `find_job_failure` digs it out."""


def job_failure_names() -> list[str]:
    """The class names of every JobFailure type defined so far (the worker's traceback names them)."""
    out, todo = [], [JobFailure]
    while todo:
        cls = todo.pop()
        out.append(cls.__name__)
        todo.extend(cls.__subclasses__())
    return out


def find_job_failure(e: BaseException) -> str | None:
    """The message of the JobFailure behind `e`: an instance in its cause/context chain or args, or,
    where the runner kept only text (a worker process's traceback, Dataflow's error), the last
    `SomeFailure: message` line of it. None: `e` is something else (a bug)."""
    seen, todo = set(), [e]
    while todo:
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, JobFailure):
            return _without_step(str(x))
        todo.extend(a for a in (x.__cause__, x.__context__, *x.args) if isinstance(a, BaseException))
    return job_failure_in_text(str(e))


def job_failure_in_text(text: str) -> str | None:
    """The message of the last `SomeFailure: message` line (a JobFailure type's name) in `text`."""
    names = "|".join(map(re.escape, job_failure_names()))
    found = re.findall(rf"\b(?:{names}): ([^\n]+)", text)
    return _without_step(found[-1]) if found else None


def _without_step(message: str) -> str:
    """Beam appends " [while running 'STEP']" to an exception's first argument: the user needs the file."""
    return re.sub(r" \[while running '[^']*'\]", "", message).strip()


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


EXIT_JOB_FAILURE = 1


def run_cli(prog: str, main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """`main(argv)`, with a UserError turned into one line on stderr and exit status 2, a JobFailure
    (e.g. a file that cannot be read) into one line and exit status 1."""
    try:
        return main(argv)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except JobFailure as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_JOB_FAILURE
