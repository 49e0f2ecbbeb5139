#!/usr/bin/env bash
# Creates .venv (Python 3.11) with the project and its test extras. Idempotent: skips the install
# when pyproject.toml has not changed since the last successful one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  # --no-compile: pip would byte-compile every module of TensorFlow, torch, JAX and Beam (184 s of a
  # 319 s install on 2 cores, measured); Python compiles the few it imports when it imports them
  # (and caches them: test.sh and demo.sh unset PYTHONDONTWRITEBYTECODE).
  .venv/bin/pip install -q --no-compile --upgrade pip
  # The CPU build of torch first: sentence-transformers (tests only) would otherwise pull a CUDA build.
  .venv/bin/pip install -q --no-compile torch==2.13.0
  # The rest with uv where it can be had: it resolves and unpacks in parallel (the ~200 packages, 5 GB
  # installed: 69 s with pip, 16 s with uv from an empty cache, measured), from pip's indexes and
  # constraints (scripts/uv_options.py), keeping the torch above. pip where uv cannot be had or fails.
  if .venv/bin/pip install -q uv && uv_opts=$(.venv/bin/python scripts/uv_options.py) \
    && mapfile -t uv_opts <<<"$uv_opts" && .venv/bin/uv pip install -q --python .venv/bin/python "${uv_opts[@]}" -e '.[dev]'; then
    :
  else
    .venv/bin/pip install -q --no-compile -e '.[dev]'
  fi
  # Byte-compile what every job, trainer and test process imports, once, in two processes side by
  # side: pytest's three workers (and the first subprocesses) would otherwise each compile the same
  # TensorFlow, torch and JAX sources at the same time (23 CPU s apiece, measured: BENCHMARKS.md).
  # TensorFlow as the project imports it (pipeline/tensorflow_import.py: no Keras, scikit-learn, pandas).
  warm() { env -u PYTHONDONTWRITEBYTECODE TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python -c "$1" 2>"$2" || { cat "$2"; return 1; }; }
  log=$(mktemp -d)
  warm "from pipeline.tensorflow_import import import_tensorflow; import_tensorflow(); import apache_beam" "$log/a" &
  a=$!
  warm "import torch, sentence_transformers, jax, flax, optax, orbax.checkpoint" "$log/b" &
  b=$!
  wait "$a" && wait "$b"
  rm -rf "$log"
  rm -f .venv/.installed-* && touch "$stamp"
fi
