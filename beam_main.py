"""Beam preprocessing job: JSON-lines corpora -> per-corpus TFRecord shards + manifest.json.

    python beam_main.py                     # the bundled samples, DirectRunner, out/data
    python beam_main.py --data_config=data_config.json --input_root=gs://bucket/corpora \
        --output_dir=gs://bucket/data --runner=DataflowRunner --project=P --region=R ...

See docs/pipeline.md. Flags not defined by pipeline/options.py are Beam pipeline options.
"""

import sys

from pipeline.job import run


def main(argv: list[str] | None = None) -> int:
    """The job (console script `set-preprocess`): exit status 0, 1 when the pipeline failed, 2 for a
    user's mistake (one line on stderr)."""
    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
