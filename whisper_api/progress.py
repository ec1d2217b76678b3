"""How far each transcription job is, by request id: for `GET /v1/jobs/<id>` and the log.

The decoders report `(units done, units total)` through `TranscriptionJob.on_progress`; a unit
is whatever the strategy counts (windows, chunks, mel frames). A report is one dictionary
update under a lock, so it never slows decoding. Finished jobs stay readable for a while, so a
page that polls a little late still sees the end.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
# what a running job is doing: the model's decoding, then (when speakers were asked for) diarization
TRANSCRIBING, DIARIZING = "transcribing", "diarizing"
# jobs on audio at least this long log their progress every LOG_STEP of the way
LONG_JOB_AUDIO_SECONDS = 120.0
LOG_STEP = 0.1
KEEP_FINISHED_JOBS = 256


@dataclass
class JobProgress:
    request_id: str
    deployment: str
    audio_seconds: float
    submitted: float  # time.monotonic() when the job joined the model's queue
    status: str = QUEUED
    units_done: int = 0
    units_total: int = 0
    started: float | None = None  # when it took the model (the engine's first report, before speech detection)
    finished: float | None = None
    logged_step: int = 0  # tenths already logged
    stage: str = TRANSCRIBING
    stage_started: float | None = None

    @property
    def fraction(self) -> float:
        if self.status == SUCCEEDED:
            return 1.0
        if self.units_total <= 0:
            return 0.0
        return min(1.0, self.units_done / self.units_total)

    @property
    def queue_seconds(self) -> float:
        """Seconds waiting for the model (until now while it still waits)."""
        end = self.started if self.started is not None else (self.finished or time.monotonic())
        return max(0.0, end - self.submitted)

    @property
    def processing_seconds(self) -> float | None:
        """Seconds on the model (queue wait excluded); None until it starts."""
        if self.started is None:
            return None
        return (self.finished or time.monotonic()) - self.started

    def as_json(self) -> dict:
        now = time.monotonic()
        return {
            "id": self.request_id,
            "object": "transcription.job",
            "status": self.status,
            "deployment": self.deployment,
            "audio_seconds": round(self.audio_seconds, 2),
            "units_done": self.units_done,
            "units_total": self.units_total,
            "progress": round(self.fraction, 4),
            "elapsed_seconds": round((self.finished or now) - self.submitted, 2),
            "queue_seconds": round(self.queue_seconds, 2),
            "processing_seconds": None if self.processing_seconds is None else round(self.processing_seconds, 2),
            "stage": self.stage,
            "diarization_seconds": self.diarization_seconds_now(now),
        }

    def diarization_seconds_now(self, now: float) -> float | None:
        if self.stage != DIARIZING or self.stage_started is None:
            return None
        return round((self.finished or now) - self.stage_started, 2)


class ProgressBoard:
    """Thread-safe table of jobs by request id: running ones plus the last KEEP_FINISHED_JOBS."""

    def __init__(self, keep_finished: int = KEEP_FINISHED_JOBS) -> None:
        self.keep_finished = keep_finished
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, JobProgress] = OrderedDict()

    def is_active(self, request_id: str) -> bool:
        with self._lock:
            job = self._jobs.get(request_id)
            return job is not None and job.finished is None

    def start(self, request_id: str, deployment: str, audio_seconds: float) -> Callable[[int, int], None]:
        """Register a job (an announced one keeps its record and its submission time); returns the
        reporter to set as the job's `on_progress`."""
        with self._lock:
            announced = self._jobs.get(request_id)
            if announced is None or announced.finished is not None:
                self._jobs[request_id] = JobProgress(request_id, deployment, audio_seconds, time.monotonic())
                self._jobs.move_to_end(request_id)
                self._forget_old()
        return lambda done, total: self.report(request_id, done, total)

    def mark_running(self, request_id: str) -> None:
        """The job holds the model from now (its first report comes after speech detection)."""
        with self._lock:
            job = self._jobs.get(request_id)
            if job is not None and job.finished is None and job.started is None:
                job.started = time.monotonic()
                job.status = RUNNING

    def report(self, request_id: str, done: int, total: int) -> None:
        with self._lock:
            job = self._jobs.get(request_id)
            if job is None or job.finished is not None:
                return
            if job.started is None:
                job.started = time.monotonic()
                job.status = RUNNING
            job.units_done, job.units_total = max(0, done), max(0, total)
            step = int(job.fraction / LOG_STEP + 1e-9)
            if job.audio_seconds < LONG_JOB_AUDIO_SECONDS or step <= job.logged_step:
                return
            job.logged_step = step
            line = (job.request_id, job.fraction * 100, job.audio_seconds, job.processing_seconds or 0.0)
        log.info("job %s: %.0f%% of %.0f s of audio after %.1f s", *line)

    def set_stage(self, request_id: str, stage: str) -> None:
        """The job moved on (transcribing -> diarizing); its units stay as the model left them."""
        with self._lock:
            job = self._jobs.get(request_id)
            if job is not None and job.finished is None:
                job.stage, job.stage_started = stage, time.monotonic()
                job.status = RUNNING

    def finish(self, request_id: str, succeeded: bool) -> JobProgress | None:
        """Mark the job done; returns its final record (None if it was never started)."""
        with self._lock:
            job = self._jobs.get(request_id)
            if job is None or job.finished is not None:
                return job
            job.finished = time.monotonic()
            job.status = SUCCEEDED if succeeded else FAILED
            return job

    def get(self, request_id: str) -> dict | None:
        with self._lock:
            job = self._jobs.get(request_id)
            return None if job is None else job.as_json()

    def _forget_old(self) -> None:
        finished = [key for key, job in self._jobs.items() if job.finished is not None]
        for key in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._jobs[key]
