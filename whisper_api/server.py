"""Waitress, configured from [server]: limits, timeouts, errors in Azure's envelope (with a request
id, logged and counted like the app's own), and the serving loop that stops gracefully."""

from __future__ import annotations

import json
import logging
import threading
import time

import waitress
from flask import Flask
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from . import access_log
from .config import ServerSettings
from .errors import ApiError, upload_too_large
from .metrics import route_of
from .shutdown import ShutdownState

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
        headers = getattr(self.request, "headers", None) or {}
        request_id = access_log.request_id_for(headers.get("X_REQUEST_ID"))
        self.status = f"{code} {error.reason}"
        self.response_headers.extend([
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("x-request-id", request_id), ("apim-request-id", request_id),
        ])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)
        self.record(request_id, code)

    def record(self, request_id: str, status: int) -> None:
        """One access-log line and one count, as for the app's responses."""
        method = getattr(self.request, "command", None) or "-"
        path = getattr(self.request, "path", None) or "-"
        seconds = time.time() - self.start_time if self.start_time else 0.0
        access_log.write_line(request_id, method, path, status, seconds, refused_by="waitress")
        slot = getattr(self.channel.server, "app_slot", None)
        app = slot.app if slot is not None else None
        extensions = getattr(app, "extensions", {})
        if "whisper_api.metrics" in extensions:
            extensions["whisper_api.metrics"].observe_request(route_of(app, path, method), method, "", status, seconds)


class EnvelopeChannel(HTTPChannel):
    error_task_class = EnvelopeErrorTask


class CannotListen(OSError):
    """The configured address cannot be bound (the port is taken, or not ours to use)."""


class AppSlot:
    """The WSGI application Waitress calls: the app once attached (the port is bound before the
    model loads), a 503 until then."""

    def __init__(self, app: Flask | None) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        if self.app is None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Retry-After", "10")])
            return [b"loading the model"]
        return self.app(environ, start_response)


def create_server(app: Flask | None, settings: ServerSettings, host: str | None = None, port: int | None = None):
    """A Waitress server bound to its port; `app` may come later (attach_app), so that a busy port
    is found before the model loads. `host`/`port` override the settings (tests bind port 0)."""
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
    host = settings.host if host is None else host
    port = settings.port if port is None else port
    slot = AppSlot(app)
    try:
        server = _create_waitress_server(slot, settings, host, port)
    except OSError as error:
        raise CannotListen(
            f"cannot listen on {host}:{port} ({error.strerror or error}): another program (or another whisper-api) "
            f"is using that port, or it is not available to this user; stop that program or choose another "
            f"[server] port"
        ) from None
    server.channel_class = EnvelopeChannel
    server.app_slot = slot
    return server


def _create_waitress_server(slot: AppSlot, settings: ServerSettings, host: str, port: int):
    return waitress.create_server(
        slot,
        host=host,
        port=port,
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


def attach_app(server, app: Flask) -> None:
    server.app_slot.app = app


# The serving loop wakes this often to see whether a shutdown has finished.
LOOP_SECONDS = 0.1
# After the grace period a job stops at its next decoding step or chunk batch (an encoder pass over
# a batch can take seconds on a slow CPU); its 503 gets this long to reach the client.
UNWIND_SECONDS = 20.0
FORCED_UNWIND_SECONDS = 2.0


class GracefulServer:
    """Runs Waitress' loop until a shutdown has finished. `request_stop` (from a signal handler
    or another thread) only records the request; the loop does the work, so a signal arriving
    while the loop holds a lock cannot deadlock it.

    First request: stop taking work (503 with Retry-After), cancel what waits, let the running
    job finish within the grace period, then cancel it; once every answer is sent, close. A
    second request cancels everything and closes after FORCED_UNWIND_SECONDS at most."""

    def __init__(self, server, state: ShutdownState) -> None:
        self.server = server
        self.state = state
        self.requests = 0
        self._handled = 0
        self._lock = threading.Lock()
        self._grace_over = False
        self._give_up_at: float | None = None
        self.finished = threading.Event()
        self._why = "stop requested"

    def request_stop(self, why: str) -> None:
        with self._lock:
            self.requests += 1
            self._why = why
        try:
            self.server.pull_trigger()  # wake the loop now rather than at its next timeout
        except Exception:  # the trigger may be closed already
            pass

    def run(self) -> bool:
        """Serve until stopped; True when every worker thread finished (a clean exit is safe)."""
        socket_map = self.server._map if hasattr(self.server, "_map") else self.server.map
        adjustments = self.server.adj
        try:
            while True:
                wasyncore.loop(timeout=LOOP_SECONDS, map=socket_map, use_poll=adjustments.asyncore_use_poll, count=1)
                if self.requests and self._advance(socket_map):
                    break
        finally:
            clean = self._close()
            self.finished.set()
        return clean

    def _advance(self, socket_map: dict) -> bool:
        """One look at the shutdown; True when the server can close."""
        now = time.monotonic()
        if self._handled < self.requests:
            self._handled += 1
            if self._handled == 1:
                log.warning("%s: shutting down: new requests get 503, queued ones are answered 503 now, the "
                            "running transcription has %g s to finish ([server] shutdown_grace_seconds); "
                            "press Ctrl+C again to stop at once", self._why, self.state.grace_seconds)
                self.state.begin()
            elif self._handled == 2:
                cancelled = self.state.cancel_all()
                log.warning("%s again: stopping now (%d job(s) cancelled)", self._why, cancelled)
                self._give_up_at = now + FORCED_UNWIND_SECONDS
        if not self._grace_over and now >= self.state.grace_deadline() and self.state.jobs:
            self._grace_over = True
            cancelled = self.state.cancel_all()
            log.warning("shutdown: the grace period is over: cancelling %d running job(s)", cancelled)
            self._give_up_at = min(self._give_up_at or now + UNWIND_SECONDS, now + UNWIND_SECONDS)
        if self.state.jobs == 0 and self._idle(socket_map):
            return True
        if self._give_up_at is not None and now >= self._give_up_at:
            log.warning("shutdown: %d job(s) did not stop in time; closing anyway", self.state.jobs)
            return True
        return False

    def _idle(self, socket_map: dict) -> bool:
        """No worker busy and every answer sent."""
        dispatcher = self.server.task_dispatcher
        if dispatcher.active_count or dispatcher.queue:
            return False
        return not any(getattr(channel, "total_outbufs_len", 0) for channel in list(socket_map.values()))

    def _close(self) -> bool:
        dispatcher = self.server.task_dispatcher
        busy = dispatcher.active_count
        dispatcher.shutdown(cancel_pending=True, timeout=0.5 if busy else 5)
        wasyncore.close_all(self.server._map if hasattr(self.server, "_map") else self.server.map)
        clean = not dispatcher.threads
        log.info("server stopped%s", "" if clean else f" ({len(dispatcher.threads)} worker thread(s) still busy)")
        return clean
