"""Beam preprocessing job: JSON-lines corpora -> per-corpus TFRecord shards + manifest.json.

    python beam_main.py                     # the bundled samples, DirectRunner, out/data
    python beam_main.py --data_config=data_config.json --input_root=gs://bucket/corpora \
        --output_dir=gs://bucket/data --runner=DataflowRunner --project=P --region=R ...

See docs/pipeline.md. Flags not defined by pipeline/options.py are Beam pipeline options.
"""
import sys

from pipeline.job import run

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
