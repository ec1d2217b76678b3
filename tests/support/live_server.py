"""A real Waitress server on a free loopback port, running an app in a background thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests
from flask import Flask

from whisper_api.server import create_server


@contextmanager
def serve_in_thread(app: Flask) -> Iterator[str]:
    """Yield the base URL of `app` served by Waitress on 127.0.0.1 with the app's [server] settings."""
    settings = app.extensions["whisper_api.settings"].server
    server = create_server(app, settings, host="127.0.0.1", port=0)
    url = f"http://127.0.0.1:{server.effective_port}"
    thread = threading.Thread(target=server.run, name="waitress-test-server", daemon=True)
    thread.start()
    wait_until_healthy(url)
    try:
        yield url
    finally:
        server.close()
        thread.join(timeout=10)


def wait_until_healthy(url: str, timeout_seconds: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or bound but still loading
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not become healthy in {timeout_seconds} s")
        time.sleep(0.1)
