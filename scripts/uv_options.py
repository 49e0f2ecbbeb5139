"""uv's options for what pip is configured with (indexes, find-links, constraints), one per
line, so that scripts/setup.sh's `uv pip install` takes the same packages from the same places pip
would. pip's settings come from `pip config list` (files and PIP_* variables; a later line wins, as
the environment overrides files in pip). uv reads only its own settings, hence the translation.

  .venv/bin/python scripts/uv_options.py   ->   --index-strategy / unsafe-best-match / --find-links / ...
"""

from __future__ import annotations

import subprocess
import sys

# pip setting -> uv option; values are space-separated lists in pip's configuration.
LIST_OPTIONS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
}


def pip_settings(listing: str) -> dict[str, str]:
    """{setting: value} from `pip config list` output (`scope.name='value'` lines; later ones win)."""
    settings = {}
    for line in listing.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            settings[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    return settings


def uv_options(settings: dict[str, str]) -> list[str]:
    """uv pip install's options for pip's settings. pip picks the best version over all its indexes;
    uv by default stops at the first index that has a package, hence unsafe-best-match (pip's rule)."""
    options = ["--index-strategy", "unsafe-best-match"]
    for name, flag in LIST_OPTIONS.items():
        for value in settings.get(name, "").split():
            options += [flag, value]
    return options


def main() -> int:
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    print("\n".join(uv_options(pip_settings(listing))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
