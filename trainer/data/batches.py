"""The trainer's input: per-corpus streams -> one host's batches, with an exact, small position.

  manifest (pipeline/manifest.py, read once) -> this host's CorpusStreams
  -> per corpus a CorpusReader over records.corpus_chunks (opened lazily, on first use)
  -> per step: CorpusSchedule(seed).corpus_at(step) picks the corpus (or every corpus by weight for a
     mixed batch); B examples are taken, skipping in-batch duplicate texts, padded to a bucket length
  -> optional `transform` (the trainer packs batches here) -> Prefetcher thread -> the loop.

`state()` = step + per-corpus (epoch, offset): a stream built from it continues with exactly the
batches an uninterrupted run would have produced. Resume cost: re-reading (gunzip + shuffle, no
parse) the records already consumed in each corpus's current epoch on this host.

Every host builds its own batches from its own files; hosts agree on array shapes in the loop
(trainer/multihost.py), not here.
"""

from __future__ import annotations

import json
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pipeline.manifest import CorpusEntry, Manifest, load_manifest
from pipeline.user_errors import UserError
from trainer.config import TrainConfig
from trainer.data import padding, records
from trainer.data.corpus_schedule import MIXED, CorpusSchedule
from trainer.data.prefetch import Prefetcher
from trainer.data.reader import CorpusReader
from trainer.data.records import CorpusStream, StreamOptions
from trainer.data.shapes import with_effective_length

STATE_VERSION = 1


class DataError(UserError):
    """A data directory, corpus selection or saved position that the batch stream cannot use."""


class BatchStream:
    """Iterator of per-host training batches (numpy dicts) with an exact, small, JSON-able position.

    Batch keys: anchor_ids, anchor_mask, positive_ids, positive_mask (int32 [B, L]), anchor_fp,
    positive_fp (int32 [B], folded text fingerprints), + negative_ids / negative_mask / negative_fp
    for triplet formats (not in mixed batches), and `corpus` (name, or "mixed").

    `data` is the typed manifest or its directory. B = batch_size (default cfg.batch_size //
    process_count). L = the smallest bucket length that fits the batch's longest text.
    `prefetch_batches` > 0 assembles batches on a background thread; state() still describes the
    batches returned so far. `transform` (batch without `corpus` -> batch) runs where batches are
    assembled, so on that thread it overlaps the training step.
    """

    def __init__(
        self,
        data: Manifest | str,
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
        transform: Callable[[dict], dict] | None = None,
    ):
        if not 0 <= process_index < process_count:
            raise DataError(f"process_index {process_index} not in [0, {process_count})")
        if batch_size is None:
            if cfg.batch_size % process_count:
                raise DataError(f"global batch {cfg.batch_size} is not divisible by {process_count} hosts")
            batch_size = cfg.batch_size // process_count
        if batch_size < 1:
            raise DataError(f"per-host batch size must be >= 1, got {batch_size}")
        records.hide_accelerators_from_tensorflow()
        self.manifest = data if isinstance(data, Manifest) else load_manifest(data)
        self.process_index, self.process_count = process_index, process_count
        self.batch_size = int(batch_size)
        self.seed = int(cfg.seed)
        self.dedup = dedup
        self.pad_id = self.manifest.pad_token_id
        job_len = self.manifest.max_seq_length
        self.max_seq_length = with_effective_length(cfg, self.manifest).max_seq_length
        self.buckets = padding.effective_buckets(cfg.bucket_lengths, self.max_seq_length)
        self.corpora = [self._stream(i, c) for i, c in enumerate(self._select(corpora))]
        self.names = [c.name for c in self.corpora]
        self.schedule = CorpusSchedule([c.weight for c in self.corpora], self.seed, cfg.mixed_batch_share)
        self._stream_options = StreamOptions(
            self.seed,
            process_index,
            process_count,
            cfg.shuffle_buffer,
            self.manifest.compression,
            # Cut again only when this run wants shorter texts than the job wrote.
            None if job_len is not None and job_len <= self.max_seq_length else self.max_seq_length,
            max(1, int(read_parallelism)),
            # Keep about two batches of each corpus ready, so a step that picks it rarely waits.
            max(2, -(-2 * self.batch_size // records.CHUNK)),
        )
        self._step = 0
        self._positions = {c.name: (0, 0) for c in self.corpora}
        self._skipped = 0
        self._resumed = state is not None
        if state is not None:
            self._restore(state)
        self._readers: dict[int, CorpusReader] = {}
        self._state = self._snapshot()
        self._transform = transform
        self._prefetch_depth = int(prefetch_batches)
        self._prefetcher: Prefetcher | None = None

    # -- construction

    def _select(self, names: Sequence[str] | None) -> tuple[CorpusEntry, ...]:
        missing = [n for n in names or () if n not in self.manifest.names]
        if missing:
            raise DataError(f"corpora {missing} are not in the manifest (it has {sorted(self.manifest.names)})")
        return self.manifest.select(names)

    def _stream(self, index: int, c: CorpusEntry) -> CorpusStream:
        if not c.train_files or c.train_examples == 0:
            raise DataError(f"corpus {c.name!r} has no training examples in the manifest; drop it from the data config")
        shard_records = len(c.train_files) < self.process_count
        if shard_records and c.train_examples < self.process_count:
            raise DataError(
                f"corpus {c.name!r} has {c.train_examples} training examples, fewer than the "
                f"{self.process_count} hosts; drop it or run with fewer hosts"
            )
        files = c.train_files if shard_records else c.train_files[self.process_index :: self.process_count]
        return CorpusStream(
            index, c.name, c.format, c.weight, c.symmetric, tuple(files), shard_records, zlib.crc32(c.name.encode())
        )

    def _restore(self, state: Mapping[str, Any]) -> None:
        if "hosts" in state:  # every host's position, as saved by a multi-host run (see merge_states)
            hosts = state["hosts"]
            if not isinstance(hosts, list) or len(hosts) != self.process_count:
                raise DataError(
                    f"input state holds {len(hosts) if isinstance(hosts, list) else '?'} "
                    f"host positions, this run has {self.process_count} hosts"
                )
            state = hosts[self.process_index]
        if state.get("version") != STATE_VERSION or state.get("chunk") != records.CHUNK:
            raise DataError(
                f"input state has version {state.get('version')} / chunk {state.get('chunk')}; "
                f"this pipeline writes {STATE_VERSION} / {records.CHUNK}"
            )
        for key, mine in (
            ("seed", self.seed),
            ("process_index", self.process_index),
            ("process_count", self.process_count),
            ("batch_size", self.batch_size),
        ):
            if state.get(key) != mine:
                raise DataError(
                    f"input state was saved with {key}={state.get(key)!r}, "
                    f"this run has {mine!r}: the saved position does not apply"
                )
        saved = state.get("corpora", {})
        if sorted(saved) != sorted(self.names):
            raise DataError(f"input state covers corpora {sorted(saved)}, this run reads {sorted(self.names)}")
        self._step = int(state["step"])
        self._positions = {n: (int(saved[n][0]), int(saved[n][1])) for n in self.names}
        self._skipped = int(state.get("duplicates_skipped", 0))

    # -- corpus readers

    def _reader(self, ci: int) -> CorpusReader:
        reader = self._readers.get(ci)
        if reader is None:
            corpus = self.corpora[ci]
            # An epoch without records would make the repeated stream spin forever: fail clearly instead
            # (record-sharded corpora were checked against train_examples at construction).
            if not corpus.shard_records and not records.has_records(corpus.files, self.manifest.compression):
                raise DataError(
                    f"corpus {corpus.name!r}: host {self.process_index}'s train files "
                    f"{list(corpus.files)} hold no records"
                )
            epoch, offset = self._positions[corpus.name]

            def open_chunks(start_epoch: int, skip: int, corpus=corpus):
                return records.corpus_chunks(corpus, start_epoch, skip, self._stream_options)

            reader = self._readers[ci] = CorpusReader(corpus, open_chunks, epoch, offset)
        return reader

    def warm_up(self) -> None:
        """Opens every corpus stream and waits for its first chunk, all concurrently (TF releases the
        GIL). After a restore this runs the raw-record skips of all corpora in parallel instead of one
        by one at each corpus's first batch; a resumed pipeline does it before its first batch."""
        if self._prefetcher is not None:
            return  # the producer thread owns the readers now
        readers = [self._reader(ci) for ci in range(len(self.corpora))]
        with ThreadPoolExecutor(max_workers=min(8, len(readers))) as pool:
            list(pool.map(CorpusReader.current_chunk, readers))

    # -- batches

    def _take(self, ci: int, k: int, columns: Sequence[str], seen: set | None):
        reader = self._reader(ci)
        parts, skipped = reader.take(k, columns, seen, max_skips=self.batch_size)
        self._positions[reader.corpus.name] = reader.position
        return parts, skipped

    def _make_batch(self) -> dict:
        step, size = self._step, self.batch_size
        ci = self.schedule.corpus_at(step)
        seen = set() if self.dedup else None
        if ci != MIXED:
            columns = self.corpora[ci].columns
            parts, skipped = self._take(ci, size, columns, seen)
            slots, name = [(parts, np.arange(size))], self.corpora[ci].name
        else:
            columns = padding.ID_KEYS[:2]
            choices = self.schedule.mixed_choices(step, size)
            slots, skipped = [], 0
            for c in np.unique(choices):
                where = np.flatnonzero(choices == c)
                parts, skipped_here = self._take(int(c), where.size, columns, seen)
                slots.append((parts, where))
                skipped += skipped_here
            name = "mixed"
        self._skipped += skipped
        longest = max(
            int(chunk.columns[col][2][rows].max(initial=0))
            for parts, _ in slots
            for chunk, rows in parts
            for col in columns
        )
        batch = padding.assemble(slots, columns, size, padding.bucket_length(longest, self.buckets), self.pad_id)
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
            "chunk": records.CHUNK,
            "process_index": self.process_index,
            "process_count": self.process_count,
            "batch_size": self.batch_size,
            "corpora": {n: list(self._positions[n]) for n in self.names},
            "duplicates_skipped": self._skipped,
        }

    def _next_with_state(self) -> tuple[dict, dict]:
        return self._make_batch(), self._snapshot()

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._prefetch_depth <= 0:
            if self._resumed and not self._readers:
                self.warm_up()
            batch, self._state = self._next_with_state()
        else:
            if self._prefetcher is None:
                self._prefetcher = Prefetcher(
                    self._next_with_state,
                    self._prefetch_depth,
                    start=self.warm_up if self._resumed else None,
                    name="input-pipeline",
                )
            batch, self._state = self._prefetcher.get()
        return batch

    def state(self) -> dict:
        """The position after the last batch returned: small, JSON-able; pass as `state=` to resume."""
        return json.loads(json.dumps(self._state))

    def close(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
