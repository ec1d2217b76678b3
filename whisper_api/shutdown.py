"""Graceful shutdown: the state the app consults (refuse new work, cancel what waits, give the
running job its grace period) and the jobs it can cancel. No web framework, no Waitress here:
server.py drives it from the signals, the routes consult it."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .cancellation import SHUTTING_DOWN, Cancellation

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 30.0


class ShuttingDown(RuntimeError):
    """The server stopped accepting work; the request gets 503 with Retry-After."""

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__("the server is shutting down")
        self.retry_after_seconds = retry_after_seconds


class ShutdownState:
    """Jobs in flight, and whether the server still takes new ones. Thread-safe."""

    def __init__(self, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> None:
        self.grace_seconds = grace_seconds
        self._condition = threading.Condition()
        self._jobs: set[Cancellation] = set()
        self._deadline: float | None = None  # time.monotonic() when the running job is cancelled

    @property
    def draining(self) -> bool:
        return self._deadline is not None

    @property
    def jobs(self) -> int:
        with self._condition:
            return len(self._jobs)

    def retry_after(self) -> int:
        """Whole seconds until this process is gone at the latest (a restarted server, or another
        instance, can take the request then)."""
        if self._deadline is None:
            return 1
        return max(1, math.ceil(self._deadline - time.monotonic()))

    def refuse_if_draining(self) -> None:
        if self.draining:
            raise ShuttingDown(self.retry_after())

    @contextmanager
    def job(self, cancellation: Cancellation) -> Iterator[None]:
        """Count a job in flight for the block; refused with ShuttingDown once draining."""
        with self._condition:
            if self.draining:
                raise ShuttingDown(self.retry_after())
            self._jobs.add(cancellation)
        try:
            yield
        finally:
            with self._condition:
                self._jobs.discard(cancellation)
                self._condition.notify_all()

    def begin(self) -> None:
        """Stop taking work: jobs not yet on the model are cancelled now, the running one may
        finish within the grace period."""
        with self._condition:
            if self._deadline is None:
                self._deadline = time.monotonic() + self.grace_seconds
            waiting = [job for job in self._jobs if not job.running]
        for job in waiting:
            job.cancel(SHUTTING_DOWN)

    def cancel_all(self) -> int:
        """Cancel every job still in flight (the grace period ran out, or a second signal came);
        returns how many there were."""
        with self._condition:
            if self._deadline is None:
                self._deadline = time.monotonic()
            jobs = list(self._jobs)
        for job in jobs:
            job.cancel(SHUTTING_DOWN)
        return len(jobs)

    def wait_for_jobs(self, until: float) -> bool:
        """Wait until no job is in flight or time.monotonic() passes `until`; True when none is."""
        with self._condition:
            while self._jobs:
                left = until - time.monotonic()
                if left <= 0:
                    return False
                self._condition.wait(min(left, 0.5))
            return True

    def grace_deadline(self) -> float:
        with self._condition:
            return self._deadline if self._deadline is not None else time.monotonic() + self.grace_seconds
