"""The python side of one corpus's stream: drawn chunks -> examples taken for batches, with an exact
position.

Every example is named by (epoch, index within this host's shuffled epoch), so a corpus's position
is two integers. A reader made from a saved position re-creates the tf.data stream at the chunk
holding it (trainer/data/records.py skips the raw records before it, without parsing them) and
continues with exactly the examples an uninterrupted run would have taken.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np

from trainer.data import padding, records
from trainer.data.padding import ID_KEYS
from trainer.data.records import CorpusStream


class Chunk:
    """One drawn chunk: per column flat token ids, row starts, lengths, and fingerprints."""

    __slots__ = ("epoch", "first", "n", "columns", "fingerprints")

    def __init__(self, epoch: int, chunk_no: int, tensors: Sequence[Any]):
        self.epoch = epoch
        self.first = chunk_no * records.CHUNK  # index of its first example within the epoch
        self.columns, self.fingerprints = {}, {}
        for i, col in enumerate(ID_KEYS):
            values, lengths, fingerprints = (t.numpy() for t in tensors[3 * i : 3 * i + 3])
            starts = np.zeros_like(lengths, dtype=np.int64)
            np.cumsum(lengths[:-1], out=starts[1:])
            self.columns[col] = (values, starts, lengths)
            self.fingerprints[col] = fingerprints
        self.n = int(self.fingerprints["anchor"].shape[0])


class CorpusReader:
    """This host's stream of one corpus, positioned at (epoch, offset) of its shuffled epochs.

    `open_chunks(start_epoch, skip)` yields (epoch, chunk_no, *tensors) from `skip` (a multiple of
    records.CHUNK) into `start_epoch`: records.corpus_chunks, bound to this corpus and host."""

    def __init__(self, corpus: CorpusStream, open_chunks: Callable[[int, int], Iterator], epoch: int, offset: int):
        self.corpus = corpus
        self.position = (int(epoch), int(offset))  # of the next example to consume
        self._start = self.position
        self._aligned = offset - offset % records.CHUNK
        self._chunks = iter(open_chunks(epoch, self._aligned))
        self._chunk: Chunk | None = None
        self._cursor = 0

    def current_chunk(self) -> Chunk:
        """The chunk holding the next example (waits for the stream)."""
        while self._chunk is None or self._cursor >= self._chunk.n:
            epoch, chunk_no, *tensors = next(self._chunks)
            self._chunk = Chunk(int(epoch), int(chunk_no), tensors)
            start_epoch, start_offset = self._start
            resumed_chunk = self._chunk.epoch == start_epoch and self._chunk.first == self._aligned
            self._cursor = start_offset - self._aligned if resumed_chunk else 0
        return self._chunk

    def take(self, k: int, columns: Sequence[str], seen: set | None, max_skips: int):
        """Consumes examples until k are accepted; returns ([(chunk, rows)], skipped).

        With `seen` (fingerprints already in the batch), examples repeating a text are skipped
        (consumed, not used), about `max_skips` of them at most: a corpus with too few distinct texts
        then yields duplicates rather than spinning forever; the loss masks them by fingerprint."""
        parts, skipped = [], 0
        while k > 0:
            chunk = self.current_chunk()
            hi = min(chunk.n, self._cursor + k)
            rows = np.arange(self._cursor, hi)
            if seen is not None and skipped < max_skips:
                # The budget may be overshot by one window; it only has to guarantee progress.
                window = np.stack([chunk.fingerprints[c][rows] for c in columns], axis=1)
                keep = padding.select_unique(window, seen)
                skipped += int(rows.size - keep.sum())
                rows = rows[keep]
            parts.append((chunk, rows))
            k -= rows.size
            self._cursor = hi
            self.position = (chunk.epoch, chunk.first + hi)
        return parts, skipped
