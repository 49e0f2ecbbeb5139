"""One form for mistakes a user can fix (a bad flag, a missing file, a config value out of range).

Every entry point prints such an error as one line, `<prog>: error: <message>`, and exits with
status 2, as argparse does for a bad flag; anything else is a bug and keeps its traceback.
Errors of this kind subclass `UserError` where they are raised (data config, manifest, options,
tokenizer, train config, input pipeline, preflight), so entry points need not list them.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

EXIT_USER_ERROR = 2


class UserError(ValueError):
    """A mistake in what the user asked for; the message names the flag, field or file."""


def run_cli(prog: str, main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """`main(argv)`, with a UserError turned into one line on stderr and exit status 2."""
    try:
        return main(argv)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
