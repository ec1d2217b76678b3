"""A real Waitress server on a free loopback port, running an app in a background thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests
import waitress
from flask import Flask


@contextmanager
def serve_in_thread(app: Flask, threads: int = 4, **options) -> Iterator[str]:
    """Yield the base URL of `app` served by Waitress on 127.0.0.1; stop it afterwards."""
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=threads, **options)
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
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not become healthy in {timeout_seconds} s")
        time.sleep(0.1)
