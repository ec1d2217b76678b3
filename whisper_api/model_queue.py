"""Admission to the model's scheduler, with a bounded line of waiting jobs.

Up to `max_running` jobs are admitted to the scheduler at once (`[server] max_concurrent_jobs`:
they share its batches). Up to `max_waiting` more may wait; the next one is refused at once
(QueueFull) instead of timing out later. A waiting job whose client has gone away leaves the
line (Cancelled), so abandoned requests never run the model.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

POLL_SECONDS = 0.2


class QueueFull(RuntimeError):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(f"the model queue is full; retry after {retry_after_seconds} s")
        self.retry_after_seconds = retry_after_seconds


class Cancelled(RuntimeError):
    """The job was cancelled (its client disconnected, the server is stopping) while it waited."""


class ModelQueue:
    """First come, first served: jobs are admitted in the order they arrived (a plain lock
    lets a newcomer overtake a job that has waited for minutes)."""

    def __init__(self, max_waiting: int, retry_after: Callable[[], int] = lambda: 1, max_running: int = 1) -> None:
        self.max_waiting = max_waiting
        self.max_running = max(1, max_running)
        self.retry_after = retry_after  # seconds a refused client should wait (the engine's backlog)
        self._condition = threading.Condition()
        self._line: deque[object] = deque()  # tickets of waiting jobs, oldest first
        self._running = 0  # jobs admitted now

    @property
    def waiting(self) -> int:
        return len(self._line)

    @contextmanager
    def turn(self, cancelled: Callable[[], bool] | None = None) -> Iterator[None]:
        """Wait for the model (or be refused at once), then hold it for the block."""
        ticket = object()
        with self._condition:
            if self._running >= self.max_running and len(self._line) >= self.max_waiting:
                raise QueueFull(self.retry_after())
            self._line.append(ticket)
            try:
                if cancelled is not None and cancelled():  # cancelled before it even queued
                    raise Cancelled()
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
        try:
            yield
        finally:
            with self._condition:
                self._running -= 1
                self._condition.notify_all()

    @property
    def running(self) -> int:
        return self._running

    def busy(self) -> bool:
        return self._running > 0
