#!/usr/bin/env bash
# Set-up (if needed) and the test suite. Slow and GPU checks are skipped; run them with
#   .venv/bin/python -m pytest -m slow   /   -m gpu
set -euo pipefail
cd "$(dirname "$0")/.."
# scripts/setup.sh installs without byte-compiling; let the first process that imports a module
# cache its bytecode in .venv. Where PYTHONDONTWRITEBYTECODE is set (as on this project's CI
# machines) every process would otherwise compile TensorFlow, Beam, torch... from source again
# (import tensorflow: 25 s instead of 8 s, measured).
unset PYTHONDONTWRITEBYTECODE
bash scripts/setup.sh
# Three workers on 2 cores, each test file on one (module fixtures such as a Beam run are built once per
# file), handed out slowest file first (tests/conftest.py: SLOWEST_FIRST). A third worker fills the time
# a worker spends waiting (subprocess start-ups, TensorFlow's input threads): from a fresh clone
# 455 s against 491 s with two (BENCHMARKS.md, "Test suite time").
exec .venv/bin/python -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder "$@"
