#!/usr/bin/env bash
# Set-up (if needed) and the test suite. Slow and GPU checks are skipped; run them with
#   .venv/bin/python -m pytest -m slow   /   -m gpu
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
