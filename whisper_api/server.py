"""Waitress, configured from [server]: limits, timeouts, and errors in Azure's envelope."""

from __future__ import annotations

import json
import logging

import waitress
from flask import Flask
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from .config import ServerSettings
from .errors import ApiError, upload_too_large

log = logging.getLogger(__name__)

# Room for the multipart framing and form fields around a file of exactly max_upload_mb.
FORM_OVERHEAD_BYTES = 64 * 1024


class EnvelopeErrorTask(ErrorTask):
    """Errors Waitress answers itself (body over the limit, bad framing) as Azure's JSON envelope."""

    def execute(self) -> None:
        error = self.request.error
        code = int(getattr(error, "code", 400))
        if code == 413:
            limit = self.channel.server.adj.max_request_body_size - FORM_OVERHEAD_BYTES
            api_error = upload_too_large(limit, None)
        else:
            api_error = ApiError(code, str(code), f"{error.reason}: {error.body}")
        body = json.dumps(api_error.body()).encode("utf-8")
        self.status = f"{code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class EnvelopeChannel(HTTPChannel):
    error_task_class = EnvelopeErrorTask


def create_server(app: Flask, settings: ServerSettings, host: str | None = None, port: int | None = None):
    """A Waitress server for `app`; `host`/`port` override the settings (tests bind port 0)."""
    if settings.threads < settings.max_queue + 2:
        # one thread runs the model, max_queue wait for it; a request beyond them needs a free
        # thread to be refused, else it waits unseen in Waitress' backlog and never gets its 429
        log.warning(
            "[server] threads = %d is less than max_queue + 2 = %d: requests beyond the queue will wait "
            "instead of getting 429, and /health may not answer while the model is busy",
            settings.threads, settings.max_queue + 2,
        )
    elif settings.threads < settings.max_concurrent_jobs + settings.max_queue + 1:
        # each running job waits for the scheduler in a thread of its own
        log.warning(
            "[server] threads = %d is fewer than max_concurrent_jobs + max_queue + 1 = %d: some requests will "
            "wait in Waitress' backlog instead of running or being refused with 429",
            settings.threads, settings.max_concurrent_jobs + settings.max_queue + 1,
        )
    server = waitress.create_server(
        app,
        host=settings.host if host is None else host,
        port=settings.port if port is None else port,
        threads=settings.threads,
        # Waitress refuses oversized bodies from their Content-Length (or while reading a chunked
        # body) before buffering them; Flask's MAX_CONTENT_LENGTH checks again at the form.
        max_request_body_size=settings.max_upload_bytes + FORM_OVERHEAD_BYTES,
        channel_timeout=settings.channel_timeout_seconds,
        # how often Waitress looks for idle channels to close; its default (30 s) would let a
        # short channel_timeout run long
        cleanup_interval=max(1, min(30, settings.channel_timeout_seconds // 2)),
        connection_limit=settings.connection_limit,
        # lets Waitress notice a client that hangs up while its request waits for the model
        channel_request_lookahead=1,
        ident="whisper-api",
    )
    server.channel_class = EnvelopeChannel
    return server
