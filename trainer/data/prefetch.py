"""Items made on a background thread, a bounded queue ahead of the consumer.

The trainer's batches are assembled (and packed) in numpy while the accelerator runs the previous
step; TensorFlow and numpy release the GIL for the heavy parts, so one thread overlaps them well.
An exception on the thread reaches the consumer at its next `get`, with its traceback.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable


class Prefetcher:
    """Calls `make()` on a thread, keeping up to `depth` results ready; `get()` returns them in order.
    `start()` runs once on the thread before the first `make()` (e.g. opening streams concurrently)."""

    def __init__(
        self, make: Callable[[], Any], depth: int, start: Callable[[], None] | None = None, name: str = "prefetch"
    ):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._make, self._start = make, start
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            if self._start is not None:
                self._start()
            while not self._stop.is_set():
                self._put(self._make())
        except BaseException as e:  # handed to the consumer
            self._put(_Failure(e))

    def get(self) -> Any:
        if self._error is not None:
            raise self._error
        item = self._queue.get()
        if isinstance(item, _Failure):
            self._error = item.error
            raise item.error
        return item

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout)


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error
