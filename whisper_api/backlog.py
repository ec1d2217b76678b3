"""How long the model's backlog takes to clear: the audio queued and running, times the measured
seconds of work per audio second (recent jobs weighted most). Retry-After comes from here.

A job's cost grows with its audio, so the estimate counts audio, not jobs: after one long file a
burst of short clips is not priced like long files, and an empty queue advertises no wait. The
audio is counted in whole 30 s windows, as the model encodes it: a 12 s clip costs a window, as
do 30 s of a long file, and once long files decode in full batches (a 10-minute lecture in 21
windows) a short clip counted by its seconds was priced at half its time.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# Before any job has been measured: roughly a CPU running the default model (a guess the first
# finished job replaces).
INITIAL_SECONDS_PER_AUDIO_SECOND = 0.3
# Each finished job's share of the rate: the last few jobs decide it (0.5: the previous job
# weighs half as much as the last one, the one before a quarter).
RECENT_WEIGHT = 0.5
# Audio is priced in windows of this many seconds: Whisper encodes every chunk as a full 30 s
# window however little speech it holds, and a job has fixed costs however short its audio.
WINDOW_SECONDS = 30.0


def priced_audio_seconds(audio_seconds: float) -> float:
    """The audio as the model works through it: whole windows, at least one."""
    return max(1, math.ceil(audio_seconds / WINDOW_SECONDS - 1e-9)) * WINDOW_SECONDS


@dataclass(eq=False)  # each entry is its own job, however alike two jobs are
class BacklogEntry:
    audio_seconds: float
    started: float | None = None  # time.monotonic() when the job began on the model

    def start(self) -> None:
        self.started = time.monotonic()


class Backlog:
    """Thread-safe: entries are added by request threads and read by whoever prices a refusal."""

    def __init__(self, seconds_per_audio_second: float = INITIAL_SECONDS_PER_AUDIO_SECOND) -> None:
        self._lock = threading.Lock()
        self._entries: list[BacklogEntry] = []
        # the rate as a ratio of decaying sums: long jobs count by their audio, old jobs fade
        self._work_seconds = seconds_per_audio_second * WINDOW_SECONDS
        self._audio_seconds = WINDOW_SECONDS
        self.jobs_measured = 0

    @property
    def seconds_per_audio_second(self) -> float:
        with self._lock:
            return self._work_seconds / self._audio_seconds

    @contextmanager
    def job(self, audio_seconds: float) -> Iterator[BacklogEntry]:
        """Count the job's audio while it waits and runs; a job that finishes normally (it started
        and raised nothing) updates the rate with its time on the model."""
        entry = BacklogEntry(priced_audio_seconds(audio_seconds))
        with self._lock:
            self._entries.append(entry)
        completed = False
        try:
            yield entry
            completed = True
        finally:
            with self._lock:
                self._entries.remove(entry)
                if completed and entry.started is not None:
                    self._measure(entry.audio_seconds, time.monotonic() - entry.started)

    def _measure(self, audio_seconds: float, work_seconds: float) -> None:
        keep = 1.0 - RECENT_WEIGHT
        if self.jobs_measured == 0:  # the guess goes at once
            keep = 0.0
        self._work_seconds = keep * self._work_seconds + work_seconds
        self._audio_seconds = keep * self._audio_seconds + audio_seconds
        self.jobs_measured += 1

    def wait_seconds(self) -> float:
        """Seconds until the model has worked through everything queued and running now."""
        now = time.monotonic()
        with self._lock:
            rate = self._work_seconds / self._audio_seconds
            total = 0.0
            for entry in self._entries:
                expected = entry.audio_seconds * rate
                if entry.started is not None:
                    # a job running longer than expected needs a little more, never a negative time
                    expected = max(expected - (now - entry.started), 0.1 * expected)
                total += expected
        return total

    def retry_after(self) -> int:
        """Whole seconds for a Retry-After header (at least 1)."""
        return max(1, math.ceil(self.wait_seconds()))
