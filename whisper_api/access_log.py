"""One structured access-log line per request, and the x-request-id header Azure clients expect."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

log = logging.getLogger("whisper_api.access")

# A client may name its request (the test page does, to poll its progress while it runs); an id
# that could upset a log line or a header is replaced by a fresh one.
CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{7,127}$")


def request_id_for(incoming: str | None) -> str:
    """The client's x-request-id when it is a plain token of 8 to 128 characters, else a new UUID."""
    if incoming and CLIENT_REQUEST_ID.match(incoming):
        return incoming
    return str(uuid.uuid4())


def note(**fields) -> None:
    """Add fields (deployment, audio_seconds, ...) to this request's access-log line."""
    g.access_fields.update(fields)


def init_app(app: Flask) -> None:
    @app.before_request
    def start() -> None:
        g.request_id = request_id_for(request.headers.get("x-request-id"))
        g.request_started = time.perf_counter()
        g.access_fields = {}

    @app.after_request
    def finish(response: Response) -> Response:
        request_id = getattr(g, "request_id", None) or str(uuid.uuid4())
        response.headers["x-request-id"] = request_id
        response.headers["apim-request-id"] = request_id
        started = getattr(g, "request_started", time.perf_counter())
        # a job's queue_seconds and processing_seconds among the fields
        write_line(request_id, request.method, request.path, response.status_code, time.perf_counter() - started,
                   **getattr(g, "access_fields", {}))
        return response


def write_line(request_id: str, method: str, path: str, status: int, seconds: float, **fields) -> None:
    """The access-log line of one response, whoever produced it (the app, or Waitress refusing a
    request before the app saw it). `path` never holds the query or headers: keys stay out of logs;
    `seconds` is the whole request (upload, queue, model, response)."""
    line = {"request_id": request_id, "method": method, "path": path, "status": status, **fields,
            "seconds": round(seconds, 3)}
    log.info(json.dumps(line, ensure_ascii=False))
