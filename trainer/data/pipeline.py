"""The trainer's input: manifest-driven tf.data streams per corpus -> padded numpy batches.

Layout (one host):

  per corpus c (created lazily, one tf.data iterator each):
    this host's train files (round-robin by process_index; all files + record sharding when the
    corpus has fewer files than hosts), file order shuffled per epoch from (seed, c, epoch)
    -> parallel deterministic interleave of gzip TFRecords -> shuffle buffer seeded per epoch
    -> [resume: skip raw records] -> chunks of CHUNK serialized records
    -> vectorised parse (the shared record schema) + draw of (anchor, positive[, negative]) with
       stateless random numbers keyed on (seed, corpus, host, epoch, chunk) + symmetric swap + cut
       at max_seq_length -> flat int32 token ids + lengths + int64 fingerprints
  per step s (python, numpy):
    CorpusSchedule(seed).corpus_at(s) -> take B examples of that corpus (or of every corpus by
    weight for a mixed batch), skipping in-batch duplicate texts -> pad to a bucket length.

Exact position: every example is named by (epoch, index within this host's shuffled epoch), so a
corpus's position is two integers. `state()` = step + per-corpus (epoch, offset); a pipeline built
from it re-creates each stream, skips `offset` raw records of `epoch` (no parsing) and continues with
exactly the batches an uninterrupted run would have produced. Resume cost: re-reading (gunzip +
shuffle, no parse) the records already consumed in each corpus's current epoch on this host.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import zlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pipeline import record_schema
from pipeline.record_schema import RECORD_FORMATS, TRIPLET_FORMATS
from trainer.data import batching
from trainer.config import TrainConfig
from trainer.data.corpus_schedule import MIXED, CorpusSchedule

log = logging.getLogger(__name__)

# Records parsed (and drawn) together: large, because every chunk crossing into python costs ~1 ms.
# Part of the data order (the stateless draws are keyed per chunk); `state()` records it.
CHUNK = 1024
STATE_VERSION = 1
_MAX_EPOCHS = 1 << 40


class InputPipelineError(ValueError):
    """A manifest, data directory or saved position that the input pipeline cannot use."""


# --------------------------------------------------------------------------------------- manifest


def _join(data_dir: str, rel: str) -> str:
    if rel.startswith("gs://") or rel.startswith("/"):
        return rel
    return data_dir.rstrip("/") + "/" + rel


def read_manifest(data_dir: str) -> dict:
    """The Beam job's manifest.json as a dict, checked for what the trainer needs.

    Local and gs:// directories go through the job's own reader (`pipeline.manifest.read_manifest`);
    other tf.io.gfile schemes (ram://, s3:// with the plugin, ...) are read with tf.io.gfile."""
    path = data_dir if data_dir.endswith(".json") else _join(data_dir, "manifest.json")
    if "://" not in data_dir or data_dir.startswith(("gs://", "file://")):
        from pipeline import manifest as manifest_lib

        try:
            manifest = manifest_lib.read_manifest(data_dir)
        except manifest_lib.ManifestError as e:
            raise InputPipelineError(str(e)) from None
    else:
        import tensorflow as tf

        try:
            with tf.io.gfile.GFile(path, "r") as f:
                manifest = json.load(f)
        except tf.errors.NotFoundError:
            raise InputPipelineError(f"no manifest at {path}: run the Beam job (beam_main.py) first") from None
    _check_manifest(manifest, path)
    return manifest


def _check_manifest(m: Any, path: str) -> None:
    if not isinstance(m, dict) or m.get("schema_version") != record_schema.SCHEMA_VERSION:
        raise InputPipelineError(
            f"{path}: schema_version {m.get('schema_version') if isinstance(m, dict) else None!r}, "
            f"this trainer reads {record_schema.SCHEMA_VERSION}"
        )
    if not isinstance(m.get("corpora"), list) or not m["corpora"]:
        raise InputPipelineError(f"{path}: 'corpora' must be a non-empty list")
    if not isinstance(m.get("tokenizer"), dict) or not isinstance(m["tokenizer"].get("pad_token_id"), int):
        raise InputPipelineError(f"{path}: tokenizer.pad_token_id is missing")
    for c in m["corpora"]:
        name = c.get("name")
        for key in ("name", "record_format", "weight", "train_files"):
            if key not in c:
                raise InputPipelineError(f"{path}: corpus {name!r} lacks field {key!r}")
        if c["record_format"] not in RECORD_FORMATS:
            raise InputPipelineError(f"{path}: corpus {name!r} has unknown shape {c['record_format']!r}")


# ------------------------------------------------------------------------------------ per corpus


@dataclasses.dataclass(frozen=True)
class _Corpus:
    index: int
    name: str
    shape: str
    weight: float
    symmetric: bool
    files: tuple[str, ...]  # this host's files (absolute)
    shard_records: bool  # fewer files than hosts: every host reads all files and keeps 1 record in P
    key: int  # stable per-name stream key (crc32), so dropping a corpus does not reshuffle the others

    @property
    def has_negative(self) -> bool:
        return self.shape in TRIPLET_FORMATS


def _fold(key, *values):
    import tensorflow as tf

    for v in values:
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(v, tf.int64))
    return key


def _cut(rt, max_len: int):
    """Ragged token rows cut to max_len, keeping the final ([SEP] / </s>) token as HF truncation does.
    Returns (flat values int32, lengths int32)."""
    import tensorflow as tf

    lens = rt.row_lengths()
    new = tf.minimum(lens, max_len)
    pos = tf.ragged.range(new)
    row = pos.value_rowids()
    flat = pos.flat_values
    is_last_of_cut = tf.logical_and(flat == tf.gather(new, row) - 1, tf.gather(lens, row) > max_len)
    src = tf.where(is_last_of_cut, tf.gather(lens, row) - 1, flat) + tf.gather(rt.row_starts(), row)
    return tf.cast(tf.gather(rt.flat_values, src), tf.int32), tf.cast(new, tf.int32)


def _draw_chunk(corpus: _Corpus, raw, draw_key, max_len: int | None):
    """Parses a chunk of serialized records and draws one (anchor, positive[, negative]) per record;
    texts are cut at max_len unless it is None (the job already cut them at least that short).

    u[:, 0..3] are per-record uniforms: first member / positive / negative choice / swap coin."""
    import tensorflow as tf

    # The shared schema's features, batched, with int64 row splits to match the int64 lengths.
    spec = {k: tf.io.RaggedFeature(v.dtype, row_splits_dtype=tf.int64) for k, v in record_schema.tf_feature_spec().items()}
    p = tf.io.parse_example(raw, spec)
    ids, lengths, roles, fps = (p[k] for k in record_schema.FEATURE_NAMES)
    n_texts = lengths.row_lengths()
    checks = [
        tf.debugging.assert_equal(
            tf.reduce_sum(lengths, axis=1), ids.row_lengths(),
            message=f"corpus {corpus.name}: corrupt record (lengths do not add up to input_ids)"),
        tf.debugging.assert_equal(roles.row_lengths(), n_texts, message=f"corpus {corpus.name}: corrupt record (roles)"),
        tf.debugging.assert_equal(fps.row_lengths(), n_texts, message=f"corpus {corpus.name}: corrupt record (fingerprints)"),
    ]
    n = tf.shape(raw)[0]
    u = tf.random.stateless_uniform([n, 4], seed=draw_key, dtype=tf.float32)

    def pick(u_col, count):  # floor(u * count) in [0, count)
        count = tf.cast(count, tf.int64)
        return tf.minimum(tf.cast(u_col * tf.cast(count, tf.float32), tf.int64), tf.maximum(count - 1, 0))

    zero = tf.zeros([n], tf.int64)
    n_pos = tf.reduce_sum(tf.cast(roles == record_schema.ROLE_POSITIVE, tf.int64), axis=1)
    n_neg = tf.reduce_sum(tf.cast(roles == record_schema.ROLE_NEGATIVE, tf.int64), axis=1)
    neg = None
    if corpus.record_format in ("pair", "triplet"):
        anc, pos = zero, zero + 1
        need = 3 if corpus.record_format == "triplet" else 2
        checks.append(tf.debugging.assert_greater_equal(n_texts, tf.cast(need, tf.int64),
                                                        message=f"corpus {corpus.name}: a {corpus.record_format} record has too few texts"))
        if corpus.record_format == "triplet":
            neg = zero + 2
    elif corpus.record_format == "set":
        checks.append(tf.debugging.assert_greater_equal(n_texts, tf.constant(2, tf.int64),
                                                        message=f"corpus {corpus.name}: a set record has fewer than 2 members"))
        anc = pick(u[:, 0], n_texts)
        pos = pick(u[:, 1], n_texts - 1)
        pos = pos + tf.cast(pos >= anc, tf.int64)  # two distinct members
    else:  # query, query_with_negatives: [ANCHOR, POSITIVE..., NEGATIVE...]
        checks.append(tf.debugging.assert_positive(n_pos, message=f"corpus {corpus.name}: a query record has no positive"))
        anc = zero
        pos = 1 + pick(u[:, 1], n_pos)
        if corpus.record_format == "query_with_negatives":
            checks.append(tf.debugging.assert_positive(
                n_neg, message=f"corpus {corpus.name}: a query_with_negatives record has no negative"))
            neg = 1 + n_pos + pick(u[:, 2], n_neg)
    if corpus.symmetric:
        swap = u[:, 3] < 0.5
        anc, pos = tf.where(swap, pos, anc), tf.where(swap, anc, pos)

    with tf.control_dependencies(checks):
        first = tf.identity(lengths.row_starts())  # index of each record's first text among all texts
    texts = tf.RaggedTensor.from_row_lengths(ids.flat_values, lengths.flat_values, validate=False)
    flat_fps, flat_roles = fps.flat_values, roles.flat_values
    out = []  # flat (values, lengths, fingerprints) per column: cheaper to hand to python than a dict
    expected = {
        "pair": (record_schema.ROLE_ANCHOR, record_schema.ROLE_POSITIVE, None),
        "triplet": (record_schema.ROLE_ANCHOR, record_schema.ROLE_POSITIVE, record_schema.ROLE_NEGATIVE),
        "query": (record_schema.ROLE_ANCHOR, record_schema.ROLE_POSITIVE, None),
        "query_with_negatives": (record_schema.ROLE_ANCHOR, record_schema.ROLE_POSITIVE, record_schema.ROLE_NEGATIVE),
        "set": (record_schema.ROLE_MEMBER, record_schema.ROLE_MEMBER, None),
    }[corpus.record_format]
    role_checks = []
    for col, local, role in zip(batching.ID_KEYS, (anc, pos, neg), expected):
        if local is None:
            out += [tf.zeros([0], tf.int32), tf.zeros([n], tf.int32), tf.zeros([n], tf.int64)]
            continue
        idx = first + local
        if not corpus.symmetric or col == "negative":
            role_checks.append(tf.debugging.assert_equal(
                tf.gather(flat_roles, idx), tf.constant(role, tf.int64),
                message=f"corpus {corpus.name}: record roles do not match shape {corpus.record_format}"))
        picked = tf.gather(texts, idx)
        if max_len is None:
            out += [tf.cast(picked.flat_values, tf.int32), tf.cast(picked.row_lengths(), tf.int32)]
        else:
            out += list(_cut(picked, max_len))
        out.append(tf.gather(flat_fps, idx))
    with tf.control_dependencies(role_checks):
        return tuple(tf.identity(t) for t in out)


class _Chunk:
    """One processed chunk on the python side: per column flat ids, row starts, lengths, fingerprints."""

    __slots__ = ("epoch", "first", "n", "cols", "fps")

    def __init__(self, epoch: int, chunk_no: int, out: Sequence[Any]):
        self.epoch = epoch
        self.first = chunk_no * CHUNK
        self.cols, self.fps = {}, {}
        for i, col in enumerate(batching.ID_KEYS):
            values, lengths, fps = (t.numpy() for t in out[3 * i : 3 * i + 3])
            starts = np.zeros_like(lengths, dtype=np.int64)
            np.cumsum(lengths[:-1], out=starts[1:])
            self.cols[col] = (values, starts, lengths)
            self.fps[col] = fps
        self.n = int(self.fps["anchor"].shape[0])


class _CorpusReader:
    """This host's stream of one corpus, positioned at (epoch, offset) of its shuffled epochs."""

    def __init__(self, pipe: "InputPipeline", corpus: _Corpus, epoch: int, offset: int):
        self.corpus = corpus
        self.position = (int(epoch), int(offset))  # of the next example to consume
        self._start = self.position
        self._aligned = offset - offset % CHUNK
        self._iter = iter(pipe._corpus_dataset(corpus, epoch, self._aligned))
        self._chunk: _Chunk | None = None
        self._cursor = 0

    def _front(self) -> _Chunk:
        while self._chunk is None or self._cursor >= self._chunk.n:
            epoch, chunk_no, *out = next(self._iter)
            self._chunk = _Chunk(int(epoch), int(chunk_no), out)
            start_epoch, start_offset = self._start
            same = self._chunk.epoch == start_epoch and self._chunk.first == self._aligned
            self._cursor = start_offset - self._aligned if same else 0
        return self._chunk

    def take(self, k: int, keys: Sequence[str], seen: set | None, max_skips: int):
        """Consumes examples until k are accepted; returns ([(chunk, rows)], skipped).

        With `seen` (fingerprints already in the batch), examples repeating a text are skipped
        (consumed, not used), about `max_skips` of them at most: a corpus with too few distinct texts
        then yields duplicates rather than spinning forever; the loss masks them by fingerprint."""
        parts, skipped = [], 0
        while k > 0:
            chunk = self._front()
            hi = min(chunk.n, self._cursor + k)
            rows = np.arange(self._cursor, hi)
            if seen is not None and skipped < max_skips:
                # The budget may be overshot by one window; it only has to guarantee progress.
                keep = batching.select_unique(np.stack([chunk.fps[c][rows] for c in keys], axis=1), seen)
                skipped += int(rows.size - keep.sum())
                rows = rows[keep]
            parts.append((chunk, rows))
            k -= rows.size
            self._cursor = hi
            self.position = (chunk.epoch, chunk.first + hi)
        return parts, skipped


# ----------------------------------------------------------------------------------- the pipeline


class InputPipeline:
    """Iterator of per-host training batches (numpy dicts) with an exact, small, JSON-able position.

    Batch keys: anchor_ids, anchor_mask, positive_ids, positive_mask (int32 [B, L]), anchor_fp,
    positive_fp (int32 [B], folded text fingerprints), + negative_ids / negative_mask / negative_fp
    for triplet corpora (not in mixed batches), and `corpus` (name, or "mixed").

    B = batch_size (default cfg.batch_size // process_count). L = the smallest bucket length that
    fits the batch's longest text; with several hosts pass `sync_length` (local L -> the max over
    hosts, e.g. via jax.experimental.multihost_utils.process_allgather) so that all hosts agree.
    `prefetch_batches` > 0 assembles batches on a background thread; state() still describes the
    batches returned so far. `transform` (batch without `corpus` -> batch) runs where batches are
    assembled, so on that thread it overlaps the training step (the trainer packs batches there).
    """

    def __init__(
        self,
        data_dir: str,
        cfg: TrainConfig,
        process_index: int = 0,
        process_count: int = 1,
        *,
        batch_size: int | None = None,
        state: Mapping[str, Any] | None = None,
        corpora: Sequence[str] | None = None,
        dedup: bool = True,
        prefetch_batches: int = 2,
        read_parallelism: int = 4,
        sync_length: Callable[[int], int] | None = None,
        transform: Callable[[dict], dict] | None = None,
    ):
        if not 0 <= process_index < process_count:
            raise InputPipelineError(f"process_index {process_index} not in [0, {process_count})")
        if batch_size is None:
            if cfg.batch_size % process_count:
                raise InputPipelineError(f"global batch {cfg.batch_size} is not divisible by {process_count} hosts")
            batch_size = cfg.batch_size // process_count
        if batch_size < 1:
            raise InputPipelineError(f"per-host batch size must be >= 1, got {batch_size}")
        self.data_dir = data_dir
        self.cfg = cfg
        self.process_index, self.process_count = process_index, process_count
        self.batch_size = int(batch_size)
        self.seed = int(cfg.seed)
        self.dedup = dedup
        self.read_parallelism = max(1, int(read_parallelism))
        self.manifest = read_manifest(data_dir)
        self.compression = self.manifest.get("compression", record_schema.COMPRESSION) or ""
        self.pad_id = int(self.manifest["tokenizer"]["pad_token_id"])
        self.max_seq_length = min(int(cfg.max_seq_length), int(self.manifest.get("max_seq_length", cfg.max_seq_length)))
        self.buckets = batching.effective_buckets(cfg.bucket_lengths, self.max_seq_length)
        self.corpora = self._select_corpora(corpora)
        self.names = [c.name for c in self.corpora]
        self.schedule = CorpusSchedule([c.weight for c in self.corpora], self.seed, cfg.mixed_batch_share)
        self._step = 0
        self._resumed = state is not None
        self._positions = {c.name: (0, 0) for c in self.corpora}
        self._skipped = 0
        if state is not None:
            self._restore(state)
        self._readers: dict[int, _CorpusReader] = {}
        self._state = self._snapshot()
        self._prefetch = int(prefetch_batches)
        self._sync_length = sync_length
        self._transform = transform
        self._error: BaseException | None = None
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- construction helpers

    def _select_corpora(self, names: Sequence[str] | None) -> list[_Corpus]:
        entries = self.manifest["corpora"]
        if names:
            by_name = {c["name"]: c for c in entries}
            missing = [n for n in names if n not in by_name]
            if missing:
                raise InputPipelineError(f"corpora {missing} are not in the manifest (it has {sorted(by_name)})")
            entries = [by_name[n] for n in names]
        out = []
        for i, c in enumerate(entries):
            files = [_join(self.data_dir, f) for f in c["train_files"]]
            name = c["name"]
            if not files or c.get("train_examples", 1) == 0:
                raise InputPipelineError(
                    f"corpus {name!r} has no training examples in the manifest; drop it from the data config")
            shard_records = len(files) < self.process_count
            if shard_records:
                if c.get("train_examples", self.process_count) < self.process_count:
                    raise InputPipelineError(
                        f"corpus {name!r} has {c.get('train_examples')} training examples, fewer than the "
                        f"{self.process_count} hosts; drop it or run with fewer hosts")
            else:
                files = files[self.process_index :: self.process_count]
            out.append(_Corpus(i, name, c["record_format"], float(c["weight"]), bool(c.get("symmetric", False)),
                               tuple(files), shard_records, zlib.crc32(name.encode())))
        return out

    def _restore(self, state: Mapping[str, Any]) -> None:
        if "hosts" in state:  # every host's position, as saved by a multi-host run (see merge_states)
            hosts = state["hosts"]
            if not isinstance(hosts, list) or len(hosts) != self.process_count:
                raise InputPipelineError(f"input state holds {len(hosts) if isinstance(hosts, list) else '?'} "
                                         f"host positions, this run has {self.process_count} hosts")
            state = hosts[self.process_index]
        if state.get("version") != STATE_VERSION or state.get("chunk") != CHUNK:
            raise InputPipelineError(f"input state has version {state.get('version')} / chunk {state.get('chunk')}; "
                                     f"this pipeline writes {STATE_VERSION} / {CHUNK}")
        for key, mine in (("seed", self.seed), ("process_index", self.process_index),
                          ("process_count", self.process_count), ("batch_size", self.batch_size)):
            if state.get(key) != mine:
                raise InputPipelineError(f"input state was saved with {key}={state.get(key)!r}, "
                                         f"this run has {mine!r}: the saved position does not apply")
        saved = state.get("corpora", {})
        if sorted(saved) != sorted(self.names):
            raise InputPipelineError(f"input state covers corpora {sorted(saved)}, this run reads {sorted(self.names)}")
        self._step = int(state["step"])
        self._positions = {n: (int(saved[n][0]), int(saved[n][1])) for n in self.names}
        self._skipped = int(state.get("duplicates_skipped", 0))

    def _corpus_dataset(self, corpus: _Corpus, start_epoch: int, skip: int):
        """(epoch, chunk_no, drawn chunk) forever, from `skip` (a multiple of CHUNK) into `start_epoch`."""
        import tensorflow as tf

        files = tf.constant(list(corpus.files))
        n_files = len(corpus.files)
        host = 0 if corpus.shard_records else self.process_index  # record sharding needs one file order
        base = tf.constant([self.seed, corpus.key], tf.int64)
        cycle = min(n_files, self.read_parallelism)
        # Cut again only when this run wants shorter texts than the job wrote.
        job_len = self.manifest.get("max_seq_length")
        max_len = None if isinstance(job_len, int) and job_len <= self.max_seq_length else self.max_seq_length

        no_autograph = tf.autograph.experimental.do_not_convert  # plain graph code; skips slow conversion

        @no_autograph
        def epoch_records(epoch):
            order = tf.argsort(tf.random.stateless_uniform([n_files], seed=_fold(base, 1, epoch, host)))
            parallel = dict(num_parallel_calls=cycle, deterministic=True) if cycle > 1 else {}
            records = tf.data.Dataset.from_tensor_slices(tf.gather(files, order)).interleave(
                no_autograph(lambda f: tf.data.TFRecordDataset(f, compression_type=self.compression, buffer_size=1 << 20)),
                cycle_length=cycle, block_length=1, **parallel)
            if corpus.shard_records:
                records = records.shard(self.process_count, self.process_index)
            shuffle_seed = _fold(base, 2, epoch, self.process_index)[0]
            records = records.shuffle(self.cfg.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
            first = tf.where(epoch == start_epoch, tf.constant(skip, tf.int64), tf.constant(0, tf.int64))
            chunks = records.skip(first).batch(CHUNK).enumerate(start=first // CHUNK)
            return chunks.map(no_autograph(lambda k, raw: (epoch, k, raw)))

        @no_autograph
        def process(epoch, chunk_no, raw):
            key = _fold(base, 3, self.process_index, epoch, chunk_no)
            return (epoch, chunk_no) + _draw_chunk(corpus, raw, key, max_len)

        ds = tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(epoch_records)
        # Keep about two batches of this corpus ready, so a step that picks it rarely waits.
        depth = max(2, -(-2 * self.batch_size // CHUNK))
        ds = ds.map(process, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(depth)
        opts = tf.data.Options()
        opts.deterministic = True
        return ds.with_options(opts)

    def _check_host_has_records(self, corpus: _Corpus) -> None:
        """An epoch without records would make the repeated stream spin forever: fail clearly instead."""
        import tensorflow as tf

        if corpus.shard_records:
            return  # checked against train_examples at construction
        for f in corpus.files:
            for _ in tf.data.TFRecordDataset(f, compression_type=self.compression).take(1):
                return
        raise InputPipelineError(
            f"corpus {corpus.name!r}: host {self.process_index}'s train files {list(corpus.files)} hold no records")

    def _reader(self, ci: int) -> _CorpusReader:
        r = self._readers.get(ci)
        if r is None:
            corpus = self.corpora[ci]
            self._check_host_has_records(corpus)
            epoch, offset = self._positions[corpus.name]
            r = self._readers[ci] = _CorpusReader(self, corpus, epoch, offset)
        return r

    def warm_up(self) -> None:
        """Opens every corpus stream and waits for its first chunk, all concurrently (TF releases the
        GIL). After a restore this runs the raw-record skips of all corpora in parallel instead of one
        by one at each corpus's first batch; the producer calls it before the first batch of a resumed
        pipeline. Calling it before iterating is optional otherwise."""
        if self._thread is not None:
            return  # the producer owns the readers now
        self._warm_up_readers()

    def _warm_up_readers(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        readers = [self._reader(ci) for ci in range(len(self.corpora))]
        with ThreadPoolExecutor(max_workers=min(8, len(readers))) as pool:
            list(pool.map(lambda r: r._front(), readers))

    # -- batches

    def _make_batch(self) -> dict:
        step = self._step
        ci = self.schedule.corpus_at(step)
        B = self.batch_size
        seen = set() if self.dedup else None
        if ci != MIXED:
            corpus = self.corpora[ci]
            keys = batching.ID_KEYS if corpus.has_negative else batching.ID_KEYS[:2]
            reader = self._reader(ci)
            parts, skipped = reader.take(B, keys, seen, max_skips=B)
            self._positions[corpus.name] = reader.position
            slots = [(parts, np.arange(B))]
            name = corpus.name
        else:
            keys = batching.ID_KEYS[:2]
            choices = self.schedule.mixed_choices(step, B)
            slots, skipped = [], 0
            for c in np.unique(choices):
                reader = self._reader(int(c))
                where = np.flatnonzero(choices == c)
                parts, sk = reader.take(where.size, keys, seen, max_skips=B)
                self._positions[self.corpora[int(c)].name] = reader.position
                slots.append((parts, where))
                skipped += sk
            name = "mixed"
        self._skipped += skipped
        longest = max(int(chunk.cols[k][2][rows].max(initial=0)) for parts, _ in slots for chunk, rows in parts for k in keys)
        L = batching.bucket_length(longest, self.buckets)
        batch: dict[str, Any] = {}
        for k in keys:
            ids = np.empty((B, L), np.int32)
            mask = np.empty((B, L), np.int32)
            fp = np.empty((B,), np.int64)
            for parts, where in slots:
                i = 0
                for chunk, rows in parts:
                    values, starts, lengths = chunk.cols[k]
                    dst = where[i : i + rows.size]
                    ids[dst], mask[dst] = batching.pad_rows(values, starts[rows], lengths[rows], L, self.pad_id)
                    fp[dst] = chunk.fps[k][rows]
                    i += rows.size
            batch[f"{k}_ids"], batch[f"{k}_mask"], batch[f"{k}_fp"] = ids, mask, batching.fold_fingerprint(fp)
        if self._transform is not None:
            batch = self._transform(batch)
        batch["corpus"] = name
        self._step = step + 1
        return batch

    def _snapshot(self) -> dict:
        return {
            "version": STATE_VERSION,
            "step": self._step,
            "seed": self.seed,
            "chunk": CHUNK,
            "process_index": self.process_index,
            "process_count": self.process_count,
            "batch_size": self.batch_size,
            "corpora": {n: list(self._positions[n]) for n in self.names},
            "duplicates_skipped": self._skipped,
        }

    def _produce(self) -> None:
        try:
            if self._resumed:
                self._warm_up_readers()
            while not self._stop.is_set():
                item = (self._make_batch(), self._snapshot())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # hand the error to the consumer
            self._queue.put(e)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._error is not None:
            raise self._error
        if self._prefetch <= 0:
            if self._resumed and not self._readers:
                self._warm_up_readers()
            batch, self._state = self._make_batch(), self._snapshot()
        else:
            if self._thread is None:
                self._queue = queue.Queue(maxsize=self._prefetch)
                self._thread = threading.Thread(target=self._produce, name="input-pipeline", daemon=True)
                self._thread.start()
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._error = item
                raise item
            batch, self._state = item
        if self._sync_length is not None:
            # Called here, on the caller's thread, once per batch on every host: safe for a collective.
            length = int(self._sync_length(batch["anchor_ids"].shape[1]))
            batch = batching.repad(batch, length, self.pad_id)
        return batch

    def state(self) -> dict:
        """The position after the last batch returned: small, JSON-able; pass as `state=` to resume."""
        return json.loads(json.dumps(self._state))

    @property
    def step(self) -> int:
        return int(self._state["step"])

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def merge_states(host_states: Sequence[Mapping[str, Any]]) -> dict:
    """One checkpointable position for a multi-host run: every host's `state()`, by process index.
    Each host resumes from its own entry when given the merged dict as `state=`."""
    hosts = sorted((dict(s) for s in host_states), key=lambda s: s["process_index"])
    if [s["process_index"] for s in hosts] != list(range(len(hosts))):
        raise InputPipelineError("merge_states needs exactly one state per host, process indices 0..P-1")
    if len({s["step"] for s in hosts}) != 1:
        raise InputPipelineError(f"hosts are at different steps: {[s['step'] for s in hosts]}")
    return {"hosts": hosts}


# ------------------------------------------------------------------------------------ validation


def _cut_list(ids: list[int], max_len: int | None) -> list[int]:
    if max_len is None or len(ids) <= max_len:
        return list(ids)
    return list(ids[: max_len - 1]) + [ids[-1]]


def validation_pairs(data_dir: str, corpus: str, max_examples: int, max_seq_length: int | None = None):
    """A corpus's validation split as (anchors, positives): lists of token-id lists, in file order.

    Deterministic: the first positive of query shapes, the first two members of sets."""
    import tensorflow as tf

    manifest = read_manifest(data_dir)
    entry = next((c for c in manifest["corpora"] if c["name"] == corpus), None)
    if entry is None:
        raise InputPipelineError(f"corpus {corpus!r} is not in the manifest of {data_dir}")
    compression = manifest.get("compression", record_schema.COMPRESSION) or ""
    anchors, positives = [], []
    files = [_join(data_dir, f) for f in entry.get("validation_files", [])]
    if not files or max_examples <= 0:
        return anchors, positives
    for raw in tf.data.TFRecordDataset(files, compression_type=compression):
        rec = record_schema.decode_record(raw.numpy())
        texts, roles = rec["texts"], rec["roles"]
        if entry["record_format"] == "set":
            if len(texts) < 2:
                continue
            a, p = texts[0], texts[1]
        else:
            try:
                a = texts[roles.index(record_schema.ROLE_ANCHOR)]
                p = texts[roles.index(record_schema.ROLE_POSITIVE)]
            except ValueError:
                raise InputPipelineError(f"corpus {corpus!r}: a validation record lacks an anchor or positive") from None
        anchors.append(_cut_list(a, max_seq_length))
        positives.append(_cut_list(p, max_seq_length))
        if len(anchors) >= max_examples:
            break
    return anchors, positives
