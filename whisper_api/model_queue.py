"""Admission to the model's scheduler, with a bounded line of waiting jobs.

Up to `max_running` jobs are admitted to the scheduler at once (`[server] max_concurrent_jobs`:
they share its batches). Up to `max_waiting` more may wait; the next one is refused at once
(QueueFull) instead of timing out later. A waiting job whose client has gone away leaves the
line (Cancelled), so abandoned requests never run the model.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

POLL_SECONDS = 0.2


class QueueFull(RuntimeError):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(f"the model queue is full; retry after {retry_after_seconds} s")
        self.retry_after_seconds = retry_after_seconds


class Cancelled(RuntimeError):
    """The job's client disconnected (while it waited, or while it ran)."""


class ModelQueue:
    """First come, first served: jobs are admitted in the order they arrived (a plain lock
    lets a newcomer overtake a job that has waited for minutes)."""

    def __init__(self, max_waiting: int, max_running: int = 1) -> None:
        self.max_waiting = max_waiting
        self.max_running = max(1, max_running)
        self._condition = threading.Condition()
        self._line: deque[object] = deque()  # tickets of waiting jobs, oldest first
        self._running = 0
        self.average_job_seconds = 5.0  # updated from real jobs

    @property
    def waiting(self) -> int:
        return len(self._line)

    @property
    def running(self) -> int:
        return self._running

    @contextmanager
    def turn(self, cancelled: Callable[[], bool] | None = None) -> Iterator[None]:
        """Wait for a place among the running jobs (or be refused at once), then hold it for the block."""
        ticket = object()
        with self._condition:
            if self._running >= self.max_running and len(self._line) >= self.max_waiting:
                raise QueueFull(self.retry_after())
            self._line.append(ticket)
            try:
                while self._running >= self.max_running or self._line[0] is not ticket:
                    self._condition.wait(POLL_SECONDS)
                    if cancelled is not None and cancelled():
                        raise Cancelled()
            except BaseException:
                self._line.remove(ticket)
                self._condition.notify_all()  # the job behind may now be first
                raise
            self._line.popleft()
            self._running += 1
            self._condition.notify_all()  # the job behind may be admitted too
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            with self._condition:
                self.average_job_seconds = 0.8 * self.average_job_seconds + 0.2 * elapsed
                self._running -= 1
                self._condition.notify_all()

    def retry_after(self) -> int:
        return max(1, round(self.average_job_seconds * (len(self._line) + 1) / self.max_running))

    def busy(self) -> bool:
        return self._running > 0
