#!/usr/bin/env bash
# The whole chain on the bundled sample corpora, offline, on the CPU:
#   set-up (.venv) -> Beam job (DirectRunner) -> demo training of all-MiniLM-L6-v2 with evaluation
#   before and after -> export of a SentenceTransformers model to out/train/export.
# Extra arguments go to train_main.py (e.g. --train_steps=50).
set -euo pipefail
cd "$(dirname "$0")/.."
# Cache the bytecode of what is imported (why: scripts/test.sh).
unset PYTHONDONTWRITEBYTECODE
bash scripts/setup.sh
# The Beam job's TensorFlow logs errors only; train_main.py picks its own level (so no export).
TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python beam_main.py --output_dir=out/data --validation_fraction=0.05 --overwrite \
    --decontaminate=samples/beir/sample_ir  # keep the evaluation set's test queries out of training
rm -rf out/train  # a fresh run; rerunning train_main.py on an existing workdir resumes it instead
sts=()
# The STS benchmark dev split is not bundled (licence); use it when present (STS_DEV=path or the
# developers' ../shared copy).
STS_DEV=${STS_DEV:-../shared/data/stsbenchmark/sts-dev.csv}
[ -f "$STS_DEV" ] && sts=(--sts_dev="$STS_DEV")
.venv/bin/python train_main.py --config=demo --data_dir=out/data --workdir=out/train "${sts[@]}" "$@"
echo "exported model: out/train/export (load it with sentence_transformers.SentenceTransformer('out/train/export'))"
