"""One request's job on the engine: its progress on the board under the request's id, its figures
in the metrics once it succeeds, and the engine's refusals as Azure errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .errors import ApiError, invalid_field, too_many_requests
from .languages import UnsupportedLanguage, UnsupportedTask
from .metrics import Metrics
from .model_queue import Cancelled, QueueFull
from .progress import ProgressBoard
from .transcript import Transcript, TranscriptionJob

if TYPE_CHECKING:  # the HTTP side never imports torch; the engine arrives through the app
    from .engine import Engine


def client_closed() -> ApiError:
    return ApiError(499, "client_closed_request", "The client closed the connection while waiting.")


@dataclass(frozen=True)
class JobRunner:
    """What a job needs from the app, taken while the request's context is there: a stream runs
    its job on a thread of its own."""

    engine: "Engine"
    board: ProgressBoard
    metrics: Metrics
    request_id: str
    deployment: str

    def run(self, job: TranscriptionJob, cancelled: Callable[[], bool] | None = None) -> Transcript:
        """The transcript, or an ApiError: 400 for a language or task the model lacks, 429 when the queue
        is full, 499 when the client went away (`cancelled()` while queued, or a hook raising
        Cancelled while decoding)."""
        reporter = self.board.start(self.request_id, self.deployment, job.duration)
        also = job.on_progress

        def report(done: int, total: int) -> None:
            reporter(done, total)
            if also is not None:
                also(done, total)

        succeeded = False
        try:
            transcript = self.engine.transcribe(replace(job, on_progress=report), cancelled=cancelled)
            succeeded = True
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
        except Cancelled:
            raise client_closed() from None
        finally:
            record = self.board.finish(self.request_id, succeeded)
            if succeeded and record is not None:
                self.metrics.observe_job(record)
        return transcript
