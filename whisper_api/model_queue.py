"""The lock in front of the model, with a bounded line of waiting jobs.

One job runs at a time. Up to `max_waiting` more may wait; the next one is refused at once
(QueueFull) instead of timing out later. A waiting job whose client has gone away leaves the
line (Cancelled), so abandoned requests never run the model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

POLL_SECONDS = 0.2


class QueueFull(RuntimeError):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(f"the model queue is full; retry after {retry_after_seconds} s")
        self.retry_after_seconds = retry_after_seconds


class Cancelled(RuntimeError):
    """The job's client disconnected while it waited."""


class ModelQueue:
    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._state = threading.Lock()  # guards the counters below
        self.waiting = 0
        self.average_job_seconds = 5.0  # updated from real jobs

    @contextmanager
    def turn(self, cancelled: Callable[[], bool] | None = None) -> Iterator[None]:
        """Wait for the model (or be refused at once), then hold it for the block."""
        with self._state:
            if self._lock.locked() and self.waiting >= self.max_waiting:
                raise QueueFull(self.retry_after())
            self.waiting += 1
        try:
            while not self._lock.acquire(timeout=POLL_SECONDS):
                if cancelled is not None and cancelled():
                    raise Cancelled()
        finally:
            with self._state:
                self.waiting -= 1
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.average_job_seconds = 0.8 * self.average_job_seconds + 0.2 * elapsed
            self._lock.release()

    def retry_after(self) -> int:
        return max(1, round(self.average_job_seconds * (self.waiting + 1)))

    def busy(self) -> bool:
        return self._lock.locked()
