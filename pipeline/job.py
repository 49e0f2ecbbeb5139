"""The Beam job: assembles the pipeline and runs it (the entry point of beam_main.py).

  sources (pipeline/sources.py: JSON lines, Parquet, BEIR joins)
    -+-> line batches -> Reshuffle -> ProcessLineBatch -+-> <corpus>/train-*.tfrecord.gz
     |                                                  +-> <corpus>/validation-*.tfrecord.gz
     |                                                  +-> rejected/rejected-*.jsonl  <- a source's own rejects
     |                                                  +-> stats -> CombinePerKey ---+
     +-> lines per source -> CombinePerKey(sum) --------------------------------------+
     +-> source events (BEIR accounting) -> Count.PerElement -------------------------+
  manifest.json <- WriteManifest (side inputs: stats, counts, every write's finalised files) <--+
  (and the files --on_corrupt_file=skip left out: a side input of Process, which drops their batches,
  and of WriteManifest, which records them)

With --deduplicate (the default) or --decontaminate, the records go through the cleaning stages
(pipeline/cleaning.py: grouped by tuple, joined with the evaluation sets' texts by key) between
ProcessLineBatch and the writers; removed tuples are counted, and contaminated ones written to
decontaminated/.

Every file is written by pipeline/writing.py's WriteShards: items dealt to shards by their hash and
sorted within a shard, so two runs (any runner, any number of workers) write the same bytes.

WriteManifest runs once, after everything else; it refuses (fails the job) when the lines counted
by the reader differ from the lines the processing step accounted for, and when a corpus of files
read line by line (input_format "lines") read another number of lines than its data config's
`expected_lines` (within --expected_lines_tolerance, a fraction of it). A file that cannot be read
fails the job (pipeline/lines.py) or, with --on_corrupt_file=skip, is left out whole and recorded.
A failure of either kind reaches the launcher as one line, exit status 1.

Everything that can be wrong with the configuration (data config, files, output directory,
tokenizer, flags) is checked on the launcher before the pipeline starts.
"""

from __future__ import annotations

import logging
import math
import sys

import apache_beam as beam
from apache_beam.runners.runner import PipelineState

from pipeline import cleaning as cleaning_lib
from pipeline import format_check, hf_filesystem, processing, splitting, stats, tokenizing, writing
from pipeline import manifest as manifest_lib
from pipeline import options as options_lib
from pipeline.data_config import DataConfig, LeftOut, check_file_sizes, load_data_config, resolve_corpora
from pipeline.eval_texts import EvalSet, resolve_eval_sets
from pipeline.sources import check_source_counts, read_sources
from pipeline.user_errors import EXIT_JOB_FAILURE, JobFailure, find_job_failure, job_failure_in_text, run_cli

log = logging.getLogger("beam_main")

REJECTED_DIR = "rejected"


def train_shards(corpus, opts: options_lib.JobOptions) -> int:
    if opts.train_shards:
        return opts.train_shards
    if corpus.expected_lines:
        return max(1, math.ceil(corpus.expected_lines / opts.records_per_shard))
    return 0  # counted: ceil(records / records_per_shard) (pipeline/writing.py)


class CountMismatch(JobFailure):
    """A corpus whose lines read differ from its data config's expected_lines."""


def check_expected_lines(corpus, read: int, tolerance: float) -> None:
    """Raises CountMismatch when `read` is further from corpus.expected_lines than tolerance (a
    fraction of expected_lines) allows. Only corpora read line by line: a joined source's records
    (Reddit's pairs, BEIR's queries) are built by the job, and expected_lines only sizes their shards."""
    expected = corpus.expected_lines
    if expected is None or not corpus.reader.counts_input_lines:
        return
    if abs(read - expected) > tolerance * expected:
        within = f" (more than --expected_lines_tolerance={tolerance:g} of it)" if tolerance else ""
        raise CountMismatch(
            f"corpus {corpus.name!r}: expected {expected} lines (data config expected_lines) but "
            f"read {read}{within}; no manifest was written: check the files (an incomplete "
            "copy?) or the data config, or allow a difference with --expected_lines_tolerance"
        )


class CombineStats(beam.CombineFn):
    """Sums pipeline/stats.py accumulators per corpus across workers."""

    def __init__(self, max_seq_length: int):
        self._max_seq_length = max_seq_length

    def create_accumulator(self):
        return stats.new_stats(self._max_seq_length)

    def add_input(self, acc, part):
        return stats.merge_into(acc, part)

    def merge_accumulators(self, accs):
        out = self.create_accumulator()  # a fresh one: never alias an accumulator the runner may still hold
        for a in accs:
            stats.merge_into(out, a)
        return out

    def extract_output(self, acc):
        return acc


class WriteManifest(beam.DoFn):
    """Runs once, after every write is finalised (its side inputs force that order)."""

    def __init__(
        self,
        config: DataConfig,
        files: dict,
        tokenizer: dict,
        opts: options_lib.JobOptions,
        left_out: list[LeftOut] = (),
        hf_revisions: dict | None = None,
        eval_sets: tuple[EvalSet, ...] = (),
    ):
        self._config, self._files, self._tokenizer, self._opts = config, files, tokenizer, opts
        self._left_out = list(left_out)
        self._hf_revisions = dict(hf_revisions or {})
        self._eval_sets = tuple(eval_sets)

    def process(self, _, combined_stats, line_counts, events, written_files, skipped_files, eval_counts=None):
        opts = self._opts
        entries = []
        for corpus in self._config.corpora:
            acc = combined_stats.get(corpus.name) or stats.new_stats(opts.max_seq_length)
            read = line_counts.get(corpus.name, 0)
            if read != acc["lines_read"]:
                # Counted by the reader before the shuffle vs. by the processing step after it: a
                # difference is lost (or duplicated) data. Fail the job rather than write a manifest.
                raise manifest_lib.ManifestError(
                    f"corpus {corpus.name!r}: {read} lines were read but {acc['lines_read']} processed"
                )
            skipped = [s for name, s in skipped_files if name == corpus.name]
            if not skipped:  # a skipped file is recorded instead: the user asked for the corpus without it
                check_expected_lines(corpus, read, opts.expected_lines_tolerance)
            shard_files = {
                split: writing.list_files(opts.output_dir, f"{corpus.name}/{split}-*-of-*{manifest_lib.FILE_SUFFIX}")
                for split in splitting.SPLITS
            }
            source = rejected_by_source = None
            if corpus.reader.has_events:
                counts = {e: n for (name, e), n in sorted(events.items()) if name == corpus.name}
                failed = check_source_counts(corpus, counts)
                if failed:
                    raise manifest_lib.ManifestError(
                        f"corpus {corpus.name!r}: source counts do not reconcile ({'; '.join(failed)}): {counts}"
                    )
                source = {"input_format": corpus.input_format, "counts": counts}
                rejected_by_source = corpus.reader.source_rejected(counts) or None
            entries.append(
                manifest_lib.corpus_entry(
                    corpus,
                    self._files[corpus.name],
                    acc,
                    shard_files[splitting.TRAIN],
                    shard_files[splitting.VALIDATION],
                    source,
                    rejected_by_source,
                    skipped,
                )
            )
        cleaning = cleaning_lib.manifest_record(
            opts.deduplicate, self._eval_sets, opts.decontaminate_documents, eval_counts or {}, entries
        )
        manifest = manifest_lib.build_manifest(
            entries,
            self._tokenizer,
            opts.max_seq_length,
            opts.validation_fraction,
            prompts=self._config.prompts,
            default_prompt_name=self._config.default_prompt_name,
            left_out=self._left_out,
            hf_revisions=self._hf_revisions,
            cleaning=cleaning,
        )
        yield manifest_lib.write_manifest(opts.output_dir, manifest)


def build_pipeline(
    p: beam.Pipeline,
    config: DataConfig,
    files: dict,
    tokenizer_json: str,
    tokenizer_info: dict,
    opts: options_lib.JobOptions,
    left_out: list[LeftOut] = (),
    hf_revisions: dict | None = None,
    eval_sets: tuple[EvalSet, ...] = (),
):
    join = beam.io.filesystems.FileSystems.join
    tags = [processing.output_tag(c.name, s) for c in config.corpora for s in splitting.SPLITS]
    sources = read_sources(p, config, files, opts.batch_lines, opts.max_line_bytes, opts.on_corrupt_file)
    skipped = (sources.skipped or [p | "NoSkipped" >> beam.Create([])]) | "AllSkipped" >> beam.Flatten()
    line_counts = sources.line_counts | "AllLineCounts" >> beam.Flatten() | "CountLines" >> beam.CombinePerKey(sum)
    events = (
        (sources.events or [p | "NoEvents" >> beam.Create([])])
        | "AllEvents" >> beam.Flatten()
        | "CountEvents" >> beam.combiners.Count.PerElement()
    )
    prompts = {c.name: c.role_prompts() for c in config.corpora if c.prompts}  # plain data for the workers
    clean = cleaning_lib.spec(config, opts.deduplicate, eval_sets, opts.clean_bucket_tuples)
    results = (
        sources.batches
        | "AllBatches" >> beam.Flatten()
        | "Spread" >> beam.Reshuffle()
        | "Process"
        >> beam.ParDo(
            processing.ProcessLineBatch(
                {c.name: c.line_format for c in config.corpora},
                tokenizer_json,
                opts.max_seq_length,
                opts.validation_fraction,
                prompts,
                clean,
            ),
            beam.pvalue.AsList(skipped),
        ).with_outputs(processing.REJECTED, processing.STATS, processing.TUPLES, processing.KEYS, *tags)
    )
    records, stats_parts, extra = results, [results[processing.STATS]], []
    written = []
    if clean:
        cleaned = cleaning_lib.clean(p, results, clean, eval_sets, tags, opts.max_seq_length)
        records = cleaned.outputs
        stats_parts.append(cleaned.outputs[processing.STATS])
        if eval_sets:
            extra = [beam.pvalue.AsDict(cleaned.eval_counts)]
            written.append(
                cleaned.outputs[cleaning_lib.DECONTAMINATED]
                | "Write/decontaminated"
                >> writing.WriteShards(
                    join(opts.output_dir, cleaning_lib.DECONTAMINATED_DIR, "decontaminated"),
                    writing.JSON_LINES,
                    per_shard=writing.LINES_PER_SHARD,
                )
            )
    for c in config.corpora:
        for split in splitting.SPLITS:
            shards = train_shards(c, opts) if split == splitting.TRAIN else 0  # 0: counted
            written.append(
                records[processing.output_tag(c.name, split)]
                | f"Write/{c.name}/{split}"
                >> writing.WriteShards(
                    join(opts.output_dir, c.name, split), writing.TFRECORDS, shards, opts.records_per_shard
                )
            )
    written.append(
        [results[processing.REJECTED], *sources.rejected]
        | "AllRejected" >> beam.Flatten()
        | "Write/rejected"
        >> writing.WriteShards(
            join(opts.output_dir, REJECTED_DIR, "rejected"), writing.JSON_LINES, per_shard=writing.LINES_PER_SHARD
        )
    )
    combined = (
        stats_parts
        | "AllStats" >> beam.Flatten()
        | "CombineStats" >> beam.CombinePerKey(CombineStats(opts.max_seq_length))
    )
    all_written = written | "AllWritten" >> beam.Flatten()
    return (
        p
        | "ManifestTrigger" >> beam.Create([None])
        | "WriteManifest"
        >> beam.ParDo(
            WriteManifest(config, files, tokenizer_info, opts, left_out, hf_revisions, eval_sets),
            beam.pvalue.AsDict(combined),
            beam.pvalue.AsDict(line_counts),
            beam.pvalue.AsDict(events),
            beam.pvalue.AsList(all_written),
            beam.pvalue.AsList(skipped),
            *extra,
        )
    )


def new_pipeline(pipeline_options) -> beam.Pipeline:
    """The Beam pipeline; Beam's own refusals (an unknown runner, options the runner requires, such
    as Dataflow's --project and --region) become an OptionsError."""
    try:
        return beam.Pipeline(options=pipeline_options)
    except ValueError as e:  # "Unexpected pipeline runner: ...", "Pipeline has validations errors: ..."
        lines = "; ".join(line.strip().rstrip(".") for line in str(e).splitlines() if line.strip())
        raise options_lib.OptionsError(f"Beam pipeline options: {lines.replace(':;', ':')}") from None


def prepare(argv):
    """Launcher-side checks and set-up; raises a UserError with a clear message (flags and pipeline
    options first, before anything is written)."""
    opts, beam_args = options_lib.parse_args(argv)
    pipeline = new_pipeline(options_lib.pipeline_options(beam_args))
    config, files, left_out = resolve_corpora(
        load_data_config(opts.data_config).select(opts.corpora), opts.input_root, opts.skip_missing_corpora
    )
    if left_out:
        log.warning("%s", manifest_lib.left_out_summary(left_out, config))
    check_file_sizes(config, files)
    files, hf_revisions = hf_filesystem.pin_revisions(files)  # every worker reads the same commit
    eval_sets = resolve_eval_sets(opts.decontaminate, opts.decontaminate_documents)
    if opts.format_check:
        format_check.check_before_start(config, files)
    writing.prepare_output_dir(opts.output_dir, opts.overwrite)
    tok = tokenizing.load_hf_tokenizer(opts.tokenizer)
    info = tokenizing.describe(tok, opts.tokenizer).to_json()
    tokenizer_json = tokenizing.save_for_workers(tok, opts.output_dir)
    return opts, pipeline, config, files, tokenizer_json, info, left_out, hf_revisions, eval_sets


def run(argv=None) -> int:
    """The job; a user's mistake (flags, data config, files, output directory, tokenizer) is one
    line on stderr and exit status 2, before any work."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:  # Beam logs a failed DoFn's traceback: ours is one line
        handler.addFilter(_no_job_failure_traceback)
    return run_cli(options_lib.program_name(), _run, argv)


def _no_job_failure_traceback(record: logging.LogRecord) -> bool:
    """Drops Beam's error records of a JobFailure (with its traceback, or a worker process's relayed
    as text): the launcher prints it as one line."""
    if not record.name.startswith("apache_beam") or record.levelno < logging.ERROR:
        return True
    exc = record.exc_info[1] if record.exc_info else None
    return not ((exc is not None and find_job_failure(exc)) or job_failure_in_text(record.getMessage()))


def _run(argv) -> int:
    opts, p, config, files, tokenizer_json, info, left_out, hf_revisions, eval_sets = prepare(argv)
    log.info("%d corpora, %d files -> %s", len(config.corpora), sum(map(len, files.values())), opts.output_dir)
    build_pipeline(p, config, files, tokenizer_json, info, opts, left_out, hf_revisions, eval_sets)
    prog = options_lib.program_name()
    try:
        state = p.run().wait_until_finish()
    except Exception as e:  # a failed pipeline: runners raise from run() or wait_until_finish()
        failure = find_job_failure(e)
        if failure:  # a file that cannot be read, counts that differ: one line, no traceback
            print(f"{prog}: error: {failure}", file=sys.stderr)
            return EXIT_JOB_FAILURE
        log.exception("the pipeline failed")
        print(
            f"{prog}: error: the pipeline failed ({type(e).__name__}: {str(e)[-2000:]}); no manifest was written",
            file=sys.stderr,
        )
        return 1
    if state != PipelineState.DONE:
        print(f"{prog}: error: the pipeline ended in state {state}; no manifest was written", file=sys.stderr)
        return 1
    manifest = manifest_lib.read_manifest(opts.output_dir)
    t = manifest["totals"]
    skipped = [s for c in manifest["corpora"] for s in c.get("skipped_files", ())]
    left_out = (
        (
            f", {len(skipped)} file(s) skipped (--on_corrupt_file=skip): "
            + "; ".join(f"{s['file']} ({s['cause']})" for s in skipped)
        )
        if skipped
        else ""
    )
    log.info(
        "done: %d lines read, %d train, %d validation, %d rejected, %s%s; manifest %s",
        t["lines_read"],
        t["train_examples"],
        t["validation_examples"],
        t["rejected"],
        manifest_lib.cleaning_summary(manifest),
        left_out,
        beam.io.filesystems.FileSystems.join(opts.output_dir, manifest_lib.MANIFEST_NAME),
    )
    return 0
