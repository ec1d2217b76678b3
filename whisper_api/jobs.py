"""One request's job on the engine: its progress on the board under the request's id, its place
in a shutdown, the speakers when asked, its figures in the metrics and the access log, and the
engine's refusals as Azure errors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import speakers
from .cancellation import CLIENT_DISCONNECTED, Cancellation, JobCancelled
from .errors import ApiError, client_closed_request, invalid_field, service_unavailable, too_many_requests
from .languages import UnsupportedLanguage, UnsupportedTask
from .metrics import Metrics
from .model_queue import QueueFull
from .progress import DIARIZING, ProgressBoard
from .shutdown import ShutdownState, ShuttingDown
from .transcript import Transcript, TranscriptionJob

if TYPE_CHECKING:  # the HTTP side never imports torch; the engine arrives through the app
    from .engine import Engine

log = logging.getLogger(__name__)


def shutting_down(retry_after_seconds: int) -> ApiError:
    return service_unavailable("The server is shutting down and takes no new work; retry later.", retry_after_seconds)


@dataclass(frozen=True)
class JobRunner:
    """What a job needs from the app, taken while the request's context is there: a stream runs
    its job on a thread of its own."""

    engine: "Engine"
    board: ProgressBoard
    metrics: Metrics
    shutdown: ShutdownState
    request_id: str
    deployment: str
    log_fields: dict[str, Any]  # the request's access-log line

    def announce(self, job: TranscriptionJob) -> None:
        """The job on the progress board (queued) before its transcription is asked for: the page
        polls it while the speaker model loads for a first diarized request."""
        self.board.start(self.request_id, self.deployment, job.duration)

    def abandon(self) -> None:
        """An announced job that will not run (its request failed before it): failed on the board."""
        self.board.finish(self.request_id, succeeded=False)

    def run(self, job: TranscriptionJob, disconnected: Callable[[], bool] | None = None) -> Transcript:
        """The transcript, or an ApiError: 400 for a language or task the model lacks, 429 when the
        queue is full, 499 when the client went away (`disconnected()` turns true, while queued or
        between decoding steps), 503 when the server shuts down."""
        cancellation = Cancellation(((CLIENT_DISCONNECTED, disconnected),) if disconnected is not None else ())
        try:
            with self.shutdown.job(cancellation):
                return self.transcribe(job, cancellation)
        except UnsupportedLanguage as error:
            if error.english_only:
                raise invalid_field("language", f"The model {self.engine.info.model} is English-only: language "
                                    f"{error.language!r} is not supported; send 'en' or leave language out.") from None
            raise invalid_field("language", f"The model does not support language {error}.") from None
        except UnsupportedTask:
            raise invalid_field("model", f"The model {self.engine.info.model} is English-only: it transcribes English "
                                "but cannot translate. Use a multilingual model for translations.") from None
        except QueueFull as error:
            self.metrics.observe_rejection(self.deployment)
            raise too_many_requests(self.deployment, error.retry_after_seconds) from None
        except ShuttingDown as error:
            raise shutting_down(error.retry_after_seconds) from None
        except JobCancelled as error:
            if error.reason == CLIENT_DISCONNECTED:
                log.info("request %s: the client closed the connection; its job was %s", self.request_id,
                         "stopped on the model" if cancellation.running else "taken out of the queue")
                raise client_closed_request(
                    "The client closed the connection before the transcription finished.") from None
            log.warning("request %s: answered 503, the server is shutting down (%s)", self.request_id,
                        "its job was stopped after the grace period" if cancellation.running else "it was still queued")
            raise shutting_down(self.shutdown.retry_after()) from None

    def transcribe(self, job: TranscriptionJob, cancellation: Cancellation) -> Transcript:
        board, request_id = self.board, self.request_id
        reporter = board.start(request_id, self.deployment, job.duration)
        also = job.on_progress

        def report(done: int, total: int) -> None:
            reporter(done, total)
            if also is not None:
                also(done, total)

        succeeded = False
        try:
            transcript = self.engine.transcribe(replace(
                job, on_progress=report, on_start=lambda: board.mark_running(request_id), cancellation=cancellation))
            if job.diarize:  # after the transcription, on the CPU: the model is free for the next job
                board.set_stage(request_id, DIARIZING)
                transcript, seconds = speakers.label_speakers(transcript, job)
                self.metrics.observe_diarization(self.deployment, seconds)
            succeeded = True
            self.metrics.observe_model_time(self.deployment, transcript.model_seconds)
            return transcript
        finally:
            record = board.finish(request_id, succeeded)
            if record is not None and record.started is not None:
                self.log_fields.update(queue_seconds=round(record.queue_seconds, 3),
                                       processing_seconds=round(record.processing_seconds or 0.0, 3))
            if succeeded and record is not None:
                self.metrics.observe_job(record)
