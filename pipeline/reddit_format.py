"""The "reddit_comments" input format: Reddit comment dumps (JSON lines, gz / bz2 / xz / zst; local,
gs://, hf://) or a BigQuery table, paired by thread into (context, response) lines with PolyAI's
filters (pipeline/reddit.py, pipeline/reddit_filters.py, docs/reddit.md)."""

from __future__ import annotations

from pipeline.input_formats import InputFormat, SourceOutputs

# The 2021 training script read a Reddit line as [response, context]: the reply is the anchor.
DEFAULT_FIELDS = {"anchor": "response", "positive": "context"}
# The fields of a comment record as the public dumps and BigQuery publish them.
COMMENT_KEYS = {"id", "parent_id", "link_id", "body"}


def is_comment_record(obj) -> bool:
    return isinstance(obj, dict) and COMMENT_KEYS <= set(obj)


class RedditComments(InputFormat):
    name = "reddit_comments"
    # reddit_options: pipeline/reddit_filters.RedditOptions fields (PolyAI's filters and split by default).
    options = {"reddit_options": {}}
    counts_input_lines = False

    def parse_options(self, options, record_format, fields, files):
        if record_format != "pair":
            raise ValueError("a reddit_comments corpus has record_format 'pair' (context and response)")
        from pipeline.reddit_filters import RedditOptions

        raw = options["reddit_options"]
        try:
            table = RedditOptions(**raw).bigquery_table
            if table:  # Beam's own parser, so a bad reference stops here and not in the graph's construction
                from apache_beam.io.gcp.bigquery_tools import parse_table_reference

                parse_table_reference(table)
        except (TypeError, ValueError) as e:
            raise ValueError(f"field 'reddit_options': {e}") from None
        return {"reddit_options": dict(raw)}, fields or dict(DEFAULT_FIELDS)

    def needs_files(self, options):  # a corpus may read a BigQuery table alone
        return not (isinstance(options["reddit_options"], dict) and options["reddit_options"].get("bigquery_table"))

    def read(self, p, corpus, files, settings) -> SourceOutputs:
        import apache_beam as beam

        from pipeline.reddit import RedditPairs
        from pipeline.reddit_filters import RedditOptions

        name = corpus.name
        got = p | f"Reddit/{name}" >> RedditPairs(
            name,
            files,
            RedditOptions(**corpus.options["reddit_options"]),
            settings.batch_lines,
            settings.on_corrupt_file,
        )
        counts = got.batches | f"Reddit/{name}/CountLines" >> beam.Map(lambda b: (b.corpus, len(b.lines)))
        events = got.events | f"Reddit/{name}/Keyed" >> beam.Map(lambda e, name=name: (name, e))
        return SourceOutputs([got.batches], [counts], [events], [got.rejected], [got.skipped])

    def check_counts(self, counts):
        from pipeline.reddit import check_reddit_counts

        return check_reddit_counts(counts)

    def source_rejected(self, counts):  # its bad comment lines count in the corpus's rejected total
        from pipeline.reddit import rejected_counts

        return rejected_counts(counts)

    def sample_rejections(self, corpus, lines, too_long):
        # Comment records, paired later: the check reads them as comments.
        from pipeline.reddit import Rejection, parse_comment_line
        from pipeline.reddit_filters import RedditOptions

        options = RedditOptions(**corpus.options["reddit_options"])
        results = [parse_comment_line(raw, options) for raw in lines]
        return "Reddit comment records", [r for r in results if isinstance(r, Rejection)]

    def recognise(self, objects):
        comments = sum(map(is_comment_record, objects))
        if comments <= len(objects) / 2:
            return None
        return (
            f"Reddit comment records ({comments} of {len(objects)}): a corpus of them has input_format "
            f"{self.name!r} (paired by thread, docs/reddit.md)"
        )

    def suggest_entry(self, entry):
        return {
            **entry,
            "record_format": "pair",
            "input_format": self.name,
            "weight": 82,
            "description": "Reddit comment records, paired by thread into (context, response) with PolyAI's "
            "filters (docs/reddit.md); weight: the 2021 run's 82 per yearly file",
        }


REDDIT_COMMENTS = RedditComments()
