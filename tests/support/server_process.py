"""A real `python -m whisper_api` process on a free loopback port, its log read as it is written:
for what only a whole process shows (signals, exit codes, its memory, its start-up)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.support.live_server import wait_until_healthy

REPOSITORY = Path(__file__).resolve().parents[2]
API_KEY = "process-key"
PATH = "/openai/deployments/whisper/audio/transcriptions?api-version=2024-06-01"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(directory: Path, model: str, port: int, server: str = "", model_extra: str = "",
                 api_keys: str = API_KEY, host: str = "127.0.0.1") -> Path:
    path = directory / "server.ini"
    path.write_text(
        f"[server]\nhost = {host}\nport = {port}\n{server}"
        f"[auth]\napi_keys = {api_keys}\n"
        f"[model]\nname = {model}\ndevice = cpu\nwarmup = false\n{model_extra}"
        f"[deployment:whisper]\n",
        encoding="utf-8",
    )
    return path


def _default_interrupt() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class ServerProcess:
    def __init__(self, config: Path, port: int, host: str = "127.0.0.1") -> None:
        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.host = host
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "whisper_api", "--config", str(config)],
            cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
            # Windows: its own console process group, so that CTRL_BREAK_EVENT reaches it alone
            creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
            # POSIX: Ctrl+C as a terminal gives it. A suite started in the background by a shell
            # without job control runs with SIGINT ignored, which children inherit, and the
            # server keeps a stop signal ignored on purpose (as SIGHUP under nohup)
            preexec_fn=_default_interrupt if os.name == "posix" else None,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def wait(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.process.poll() is None or time.monotonic() < deadline, f"exited without logging {text!r}"
            assert time.monotonic() < deadline, f"{text!r} not logged in {timeout} s:\n{self.output[-3000:]}"
            time.sleep(0.05)

    def post(self, audio: bytes, timeout: float = 300, **fields) -> requests.Response:
        return requests.post(self.url + PATH, headers={"api-key": API_KEY}, files={"file": ("a.flac", audio)},
                             data={"language": "ja", **fields}, timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
            self.process.wait(timeout=30)
        self._reader.join(timeout=10)


@contextmanager
def server_process(directory: Path, model: str | Path, server: str = "", model_extra: str = "",
                   api_keys: str = API_KEY, host: str = "127.0.0.1", healthy: bool = True) -> Iterator[ServerProcess]:
    """A server started from an INI written for it; killed at the end if it is still running."""
    port = free_port()
    config = write_config(directory, str(model), port, server, model_extra, api_keys, host)
    process = ServerProcess(config, port, host)
    try:
        if healthy:
            wait_until_healthy(process.url, timeout_seconds=180)
        yield process
    finally:
        process.stop()


def poll(condition, timeout_seconds: float = 60.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(interval)


def job_status(process: ServerProcess, request_id: str) -> str | None:
    response = requests.get(f"{process.url}/v1/jobs/{request_id}", headers={"api-key": API_KEY}, timeout=10)
    return response.json().get("status") if response.status_code == 200 else None
