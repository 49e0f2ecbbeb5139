"""The "lines" input format: one record per line of a JSON-lines file (.jsonl, .jsonl.gz; read whole
by pipeline/reading.py, numbering its lines) or per row of a Parquet file (Beam's Parquet IO, split by
row group; each row becomes the JSON object of its cells, which the corpus's `fields` map like any
object line: one rule for both)."""

from __future__ import annotations

from pipeline.format_check import is_parquet
from pipeline.input_formats import InputFormat, ReadSettings, SourceOutputs


class LineFiles(InputFormat):
    name = "lines"

    def parse_options(self, options, record_format, fields, files):
        if not fields and any(is_parquet(f) for f in files):
            raise ValueError(
                "field 'fields' is required for Parquet files: it names the columns of the texts, "
                'e.g. {"anchor": "question", "positive": "answer"} '
                "(python -m pipeline.inspect_files FILE prints an entry)"
            )
        return options, fields

    def read(self, p, corpus, files, settings: ReadSettings) -> SourceOutputs:
        import apache_beam as beam

        from pipeline.reading import LINE_COUNTS, SKIPPED, ParquetTablesToBatches, ReadLineBatches

        out = SourceOutputs([], [], [], [], [])
        json_files = [(corpus.name, f) for f in files if not is_parquet(f)]
        if json_files:
            read = (
                p
                | f"Lines/{corpus.name}/Files" >> beam.Create(json_files, reshuffle=False)
                | f"Lines/{corpus.name}/Read"
                >> beam.ParDo(
                    ReadLineBatches(settings.batch_lines, settings.max_line_bytes, settings.on_corrupt_file)
                ).with_outputs(LINE_COUNTS, SKIPPED, main="batches")
            )
            out.batches.append(read.batches)
            out.line_counts.append(read[LINE_COUNTS])
            out.skipped.append(read[SKIPPED])
        parquet = [f for f in files if is_parquet(f)]
        if parquet:
            # Every column is read: a mapped column that a file lacks becomes a rejected row
            # (wrong_format) instead of a failed read.
            rows = (
                p
                | f"Parquet/{corpus.name}/Files" >> beam.Create(parquet, reshuffle=False)
                | f"Parquet/{corpus.name}/Read" >> beam.io.ReadAllFromParquetBatched(with_filename=True)
                | f"Parquet/{corpus.name}/Rows"
                >> beam.ParDo(ParquetTablesToBatches(corpus.name, settings.batch_lines)).with_outputs(
                    LINE_COUNTS, main="batches"
                )
            )
            out.batches.append(rows.batches)
            out.line_counts.append(rows[LINE_COUNTS])
        return out


LINES = LineFiles()
