"""Stopping one job early: why it must stop, asked between decoding steps and chunk batches.

A job carries one Cancellation from the request that made it down to the decoding loop. It is
cancelled explicitly (the server shutting down) or by a check it polls (the client hung up); the
loops call `raise_if_cancelled()` where stopping leaves nothing half-done on the model, and the
one who reads the reason decides the answer (499 for a client that left, 503 for a shutdown).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

CLIENT_DISCONNECTED = "client_disconnected"
SHUTTING_DOWN = "shutting_down"


class JobCancelled(Exception):
    """The job was stopped before it finished; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the job was cancelled: {reason}")
        self.reason = reason


class Cancellation:
    """One job's stop signal: `cancel(reason)` from any thread, or a polled `(reason, check)`
    pair such as the client's disconnect test. Checking costs an attribute read and the checks."""

    def __init__(self, checks: tuple[tuple[str, Callable[[], bool]], ...] = ()) -> None:
        self._checks = checks
        self._reason: str | None = None
        self._lock = threading.Lock()
        self.running = False  # set once the job holds the model

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason

    @property
    def reason(self) -> str | None:
        if self._reason is None:
            for reason, check in self._checks:
                if check():
                    self.cancel(reason)
                    break
        return self._reason

    def is_cancelled(self) -> bool:
        return self.reason is not None

    def raise_if_cancelled(self) -> None:
        reason = self.reason
        if reason is not None:
            raise JobCancelled(reason)


def raise_if_cancelled(cancellation: Cancellation | None) -> None:
    """For loops whose job may carry no Cancellation (benchmarks, the warm-up)."""
    if cancellation is not None:
        cancellation.raise_if_cancelled()
