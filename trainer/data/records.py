"""The tf.data side of the input: one corpus's TFRecords -> shuffled chunks of drawn examples.

Per corpus, on one host:
  this host's train files (round-robin by process index; every file plus record sharding when the
  corpus has fewer files than hosts), file order shuffled per epoch from (seed, corpus, epoch)
  -> parallel deterministic interleave of gzip TFRecords -> shuffle buffer seeded per epoch
  -> [resume: skip raw records] -> chunks of CHUNK serialized records
  -> vectorised parse (the shared record schema) + draw of (anchor, positive[, negative]) by the
     record format's rule (pipeline/record_schema.FORMATS), with stateless random numbers keyed on
     (seed, corpus, host, epoch, chunk) + symmetric swap + cut at max_seq_length
  -> flat int32 token ids + lengths + int64 fingerprints per column.

Everything here is a pure function of (seed, corpus, host, epoch, position): the data order repeats
exactly, and a resumed run re-creates a stream from two integers (trainer/data/reader.py).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

from pipeline import record_schema
from pipeline.record_schema import RecordFormat
from pipeline.tensorflow_import import import_tensorflow
from trainer.data.padding import ID_KEYS

tf = import_tensorflow()

# Records parsed (and drawn) together: large, because every chunk crossing into python costs ~1 ms.
# Part of the data order (the stateless draws are keyed per chunk); saved positions record it.
CHUNK = 1024
_MAX_EPOCHS = 1 << 40


def hide_accelerators_from_tensorflow() -> None:
    """tf.data runs on the CPU; left alone, TensorFlow would reserve GPU memory that JAX needs."""
    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):  # already initialised, or no such device type: nothing to hide
        pass


@dataclasses.dataclass(frozen=True)
class CorpusStream:
    """What this host reads of one corpus."""

    index: int
    name: str
    format: RecordFormat
    weight: float
    symmetric: bool
    files: tuple[str, ...]  # this host's files (absolute)
    shard_records: bool  # fewer files than hosts: every host reads all files and keeps 1 record in P
    key: int  # stable per-name stream key (crc32), so dropping a corpus does not reshuffle the others

    @property
    def columns(self) -> tuple[str, ...]:
        return ID_KEYS if self.format.has_negative else ID_KEYS[:2]


def _fold(key, *values):
    for v in values:
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(v, tf.int64))
    return key


def cut_rows(rt, max_len: int):
    """Ragged token rows cut to max_len, keeping the final ([SEP] / </s>) token as HF truncation does.
    Returns (flat values int32, lengths int32)."""
    lens = rt.row_lengths()
    new = tf.minimum(lens, max_len)
    pos = tf.ragged.range(new)
    row = pos.value_rowids()
    flat = pos.flat_values
    is_last_of_cut = tf.logical_and(flat == tf.gather(new, row) - 1, tf.gather(lens, row) > max_len)
    src = tf.where(is_last_of_cut, tf.gather(lens, row) - 1, flat) + tf.gather(rt.row_starts(), row)
    return tf.cast(tf.gather(rt.flat_values, src), tf.int32), tf.cast(new, tf.int32)


def _pick(u_col, count):
    """floor(u * count) in [0, count): a uniform index from a uniform number."""
    count = tf.cast(count, tf.int64)
    return tf.minimum(tf.cast(u_col * tf.cast(count, tf.float32), tf.int64), tf.maximum(count - 1, 0))


def draw_chunk(corpus: CorpusStream, raw, draw_key, max_len: int | None):
    """Parses a chunk of serialized records and draws one (anchor, positive[, negative]) per record;
    texts are cut at max_len unless it is None (the job already cut them at least that short).

    Returns per column (anchor, positive, negative) flat values, lengths and fingerprints; a format
    without negatives gets empty ones. u[:, 0..3] are per-record uniforms: first member / positive /
    negative choice / swap coin; each positive (negative) of a record is drawn with equal chance."""
    fmt, name = corpus.format, corpus.name
    spec = {
        k: tf.io.RaggedFeature(v.dtype, row_splits_dtype=tf.int64) for k, v in record_schema.tf_feature_spec().items()
    }
    p = tf.io.parse_example(raw, spec)
    ids, lengths, roles, fingerprints = (p[k] for k in record_schema.FEATURE_NAMES)
    n_texts = lengths.row_lengths()
    checks = [
        tf.debugging.assert_equal(
            tf.reduce_sum(lengths, axis=1),
            ids.row_lengths(),
            message=f"corpus {name}: corrupt record (lengths do not add up to input_ids)",
        ),
        tf.debugging.assert_equal(roles.row_lengths(), n_texts, message=f"corpus {name}: corrupt record (roles)"),
        tf.debugging.assert_equal(
            fingerprints.row_lengths(), n_texts, message=f"corpus {name}: corrupt record (fingerprints)"
        ),
    ]
    n = tf.shape(raw)[0]
    u = tf.random.stateless_uniform([n, 4], seed=draw_key, dtype=tf.float32)
    zero = tf.zeros([n], tf.int64)
    neg = None
    if fmt.selection == "two_members":  # set: two distinct members
        checks.append(
            tf.debugging.assert_greater_equal(
                n_texts, tf.constant(2, tf.int64), message=f"corpus {name}: a set record has fewer than 2 members"
            )
        )
        anc = _pick(u[:, 0], n_texts)
        pos = _pick(u[:, 1], n_texts - 1)
        pos = pos + tf.cast(pos >= anc, tf.int64)
    else:  # [ANCHOR, POSITIVE..., NEGATIVE...], one positive[, one negative] drawn: a pair or triplet
        # record from a list line has one of each (texts 0, 1[, 2]); from an object line, maybe more
        n_pos = tf.reduce_sum(tf.cast(roles == fmt.positive_role, tf.int64), axis=1)
        checks.append(
            tf.debugging.assert_positive(n_pos, message=f"corpus {name}: a {fmt.name} record has no positive")
        )
        anc = zero
        pos = 1 + _pick(u[:, 1], n_pos)
        if fmt.has_negative:
            n_neg = tf.reduce_sum(tf.cast(roles == fmt.negative_role, tf.int64), axis=1)
            checks.append(
                tf.debugging.assert_positive(n_neg, message=f"corpus {name}: a {fmt.name} record has no negative")
            )
            neg = 1 + n_pos + _pick(u[:, 2], n_neg)
    if corpus.symmetric:
        swap = u[:, 3] < 0.5
        anc, pos = tf.where(swap, pos, anc), tf.where(swap, anc, pos)

    with tf.control_dependencies(checks):
        first = tf.identity(lengths.row_starts())  # index of each record's first text among all texts
    texts = tf.RaggedTensor.from_row_lengths(ids.flat_values, lengths.flat_values, validate=False)
    out = []  # flat (values, lengths, fingerprints) per column: cheaper to hand to python than a dict
    role_checks = []
    for col, local, role in zip(ID_KEYS, (anc, pos, neg), (fmt.anchor_role, fmt.positive_role, fmt.negative_role)):
        if local is None:
            out += [tf.zeros([0], tf.int32), tf.zeros([n], tf.int32), tf.zeros([n], tf.int64)]
            continue
        idx = first + local
        if not corpus.symmetric or col == "negative":
            role_checks.append(
                tf.debugging.assert_equal(
                    tf.gather(roles.flat_values, idx),
                    tf.constant(role, tf.int64),
                    message=f"corpus {name}: record roles do not match record format {fmt.name}",
                )
            )
        picked = tf.gather(texts, idx)
        if max_len is None:
            out += [tf.cast(picked.flat_values, tf.int32), tf.cast(picked.row_lengths(), tf.int32)]
        else:
            out += list(cut_rows(picked, max_len))
        out.append(tf.gather(fingerprints.flat_values, idx))
    with tf.control_dependencies(role_checks):
        return tuple(tf.identity(t) for t in out)


@dataclasses.dataclass(frozen=True)
class StreamOptions:
    """What every corpus stream of one host shares."""

    seed: int
    process_index: int
    process_count: int
    shuffle_buffer: int
    compression: str
    max_len: int | None  # cut texts to this; None: the job's cut is short enough
    read_parallelism: int = 4
    prefetch_chunks: int = 2


def corpus_chunks(corpus: CorpusStream, start_epoch: int, skip: int, opts: StreamOptions):
    """(epoch, chunk number, drawn chunk...) forever, from `skip` (a multiple of CHUNK) into `start_epoch`."""
    files = tf.constant(list(corpus.files))
    n_files = len(corpus.files)
    host = 0 if corpus.shard_records else opts.process_index  # record sharding needs one file order
    base = tf.constant([opts.seed, corpus.key], tf.int64)
    cycle = min(n_files, opts.read_parallelism)
    no_autograph = tf.autograph.experimental.do_not_convert  # plain graph code; skips slow conversion

    @no_autograph
    def epoch_records(epoch):
        order = tf.argsort(tf.random.stateless_uniform([n_files], seed=_fold(base, 1, epoch, host)))
        parallel = dict(num_parallel_calls=cycle, deterministic=True) if cycle > 1 else {}
        records = tf.data.Dataset.from_tensor_slices(tf.gather(files, order)).interleave(
            no_autograph(lambda f: tf.data.TFRecordDataset(f, compression_type=opts.compression, buffer_size=1 << 20)),
            cycle_length=cycle,
            block_length=1,
            **parallel,
        )
        if corpus.shard_records:
            records = records.shard(opts.process_count, opts.process_index)
        shuffle_seed = _fold(base, 2, epoch, opts.process_index)[0]
        records = records.shuffle(opts.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
        first = tf.where(epoch == start_epoch, tf.constant(skip, tf.int64), tf.constant(0, tf.int64))
        chunks = records.skip(first).batch(CHUNK).enumerate(start=first // CHUNK)
        return chunks.map(no_autograph(lambda k, raw: (epoch, k, raw)))

    @no_autograph
    def process(epoch, chunk_no, raw):
        key = _fold(base, 3, opts.process_index, epoch, chunk_no)
        return (epoch, chunk_no) + draw_chunk(corpus, raw, key, opts.max_len)

    ds = tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(epoch_records)
    ds = ds.map(process, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(opts.prefetch_chunks)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


def has_records(files: Sequence[str], compression: str) -> bool:
    """Whether any of the files holds a record (an empty epoch would make a repeated stream spin)."""
    for f in files:
        for _ in tf.data.TFRecordDataset(f, compression_type=compression).take(1):
            return True
    return False


def read_records(files: Sequence[str], compression: str) -> Iterator[bytes]:
    """The serialized records of the files, in file order."""
    for raw in tf.data.TFRecordDataset(list(files), compression_type=compression):
        yield raw.numpy()
