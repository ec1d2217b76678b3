"""`stream=true`: the job decodes on a thread of its own while the request's Waitress thread
writes its events as server-sent events, each the moment it is made (Waitress sends every write
at once), with a heartbeat comment through long silent stretches.

The HTTP status is settled before the first byte: the request waits, as a non-streamed one does,
until its job runs on the model, so a full queue or a bad language is an ordinary 429 or 400. A
failure after that is one `error` event in Azure's envelope, then the end of the stream. A client
that hangs up frees the request's thread within a poll and stops the job at its next batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from flask import Flask, g

from .cancellation import CLIENT_DISCONNECTED, JobCancelled
from .errors import ApiError
from .formats import HEARTBEAT, EventWriter, error_event, server_sent_event
from .jobs import JobRunner
from .transcript import Segment, Transcript, TranscriptionJob

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
POLL_SECONDS = 0.25  # how often the writer looks for a client that has gone
END = None  # the last item on the event queue

CONTENT_TYPE = "text/event-stream; charset=utf-8"
# no cache, and no buffering in a reverse proxy (nginx reads X-Accel-Buffering)
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def internal_error() -> ApiError:
    return ApiError(500, "internal_error", "The server had an error while processing your request.", type="server_error")


class EventStream:
    """One streamed job: `start()` in the request, then `body()` as the response."""

    def __init__(self, app: Flask, runner: JobRunner, job: TranscriptionJob, writer: EventWriter,
                 log_fields: dict[str, Any], client_disconnected: Callable[[], bool] | None = None,
                 heartbeat_seconds: float | None = None) -> None:
        self.app = app  # the job's thread works in the app's context (the speaker model lives there)
        self.runner = runner
        self.job = job
        self.writer = writer
        self.log_fields = log_fields  # the access-log line's fields, written when the stream ends
        self.client_disconnected = client_disconnected or (lambda: False)
        self.heartbeat_seconds = HEARTBEAT_SECONDS if heartbeat_seconds is None else heartbeat_seconds
        self.events: queue.Queue[bytes | None] = queue.Queue()
        self.running = threading.Event()  # the job has the model
        self.ended = threading.Event()  # the job is over, one way or another
        self.gone = threading.Event()  # the client will read no more
        self.early_error: ApiError | None = None
        self.thread = threading.Thread(target=self.work, name="whisper-api-stream", daemon=True)

    # the request's side

    def start(self) -> None:
        """Start the job; return once it runs on the model, or raise the error that ended it
        before (429, 400, 499: answered as ordinary HTTP errors)."""
        self.thread.start()
        while not (self.running.wait(POLL_SECONDS) or self.ended.is_set()):
            pass
        if self.early_error is not None:
            raise self.early_error

    def body(self) -> Iterator[bytes]:
        try:
            for event in self.writer.opening():
                yield server_sent_event(event)
            last_write = time.monotonic()
            while True:
                try:
                    item = self.events.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    if self.client_disconnected():
                        return
                    if time.monotonic() - last_write >= self.heartbeat_seconds:
                        last_write = time.monotonic()
                        yield HEARTBEAT
                    continue
                if item is END:
                    return
                last_write = time.monotonic()
                yield item
        finally:
            # the stream is over: written to the end, or the client hung up (Waitress closes us)
            if not self.ended.is_set():
                self.gone.set()
                self.log_fields.update(stream_status=499, error_code="client_closed_request")

    # the job's side

    def cancelled(self) -> bool:
        return self.gone.is_set() or self.client_disconnected()

    def check_client(self) -> None:
        if self.cancelled():
            raise JobCancelled(CLIENT_DISCONNECTED)

    def on_progress(self, done: int, total: int) -> None:
        self.running.set()
        self.check_client()

    def on_segments(self, segments: list[Segment]) -> None:
        self.check_client()
        self.send(self.writer.segments(segments))

    def send(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.events.put(server_sent_event(event))

    def work(self) -> None:
        with self.app.app_context():
            g.access_fields = self.log_fields  # what the job notes goes on the request's line
            self.run()

    def run(self) -> None:
        job = replace(self.job, on_progress=self.on_progress, on_segments=self.on_segments)
        try:
            transcript = self.runner.run(job, disconnected=self.cancelled)
        except ApiError as error:
            self.fail(error)
        except Exception:
            log.exception("unexpected failure while streaming a transcription")
            self.fail(internal_error())
        else:
            self.finish(transcript)
        finally:
            self.ended.set()
            self.events.put(END)

    def finish(self, transcript: Transcript) -> None:
        self.send(self.writer.finish(transcript))
        self.log_fields.update(stream_status=200)

    def fail(self, error: ApiError) -> None:
        if not self.running.is_set():
            self.early_error = error  # no byte sent yet: the request answers it as an HTTP error
            return
        self.log_fields.update(stream_status=error.status, error_code=error.code)
        if error.status != 499:
            self.send([error_event(error.body())])
