"""Stopping a real server process with real signals: the running job finishes within the grace
period (or is cancelled after it and answered 503), queued and new requests get 503 with
Retry-After at once, one log line each, exit code 0; a second Ctrl+C stops at once, still cleanly.
`python -m whisper_api stop` from another process stops it the same way and waits for its exit;
it leaves another program on the port running."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.support.server_process import API_KEY, REPOSITORY, free_port, job_status, poll, server_process, write_config
from whisper_api import stop_command, stop_event
from whisper_api.server import UNWIND_SECONDS
from tests.support.speech import MEETING_SENTENCES, JAPANESE_SENTENCES, concatenate, encode, japanese_speech

posix_signals = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals (Windows: console events below)")

ABORT_MESSAGES = ("terminate called", "Traceback", "thread(s) still running", "Fatal Python error")


@pytest.fixture(scope="module")
def long_speech() -> bytes:
    """About two minutes of meeting speech: several seconds of work for the base model."""
    samples, _ = concatenate(*[japanese_speech(sentence) for sentence in MEETING_SENTENCES * 2], gap_seconds=0.6)
    return encode(samples, "flac")


@pytest.fixture(scope="module")
def short_speech() -> bytes:
    return encode(japanese_speech(JAPANESE_SENTENCES[0]), "wav")


def in_background(function, *arguments, **keywords) -> tuple[threading.Thread, list]:
    results: list = []

    def run() -> None:
        try:
            results.append(function(*arguments, **keywords))
        except Exception as error:  # the assertion names it
            results.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, results


def post_with_id(server, audio: bytes, request_id: str, timeout: float = 300) -> requests.Response:
    return requests.post(server.url + "/openai/deployments/whisper/audio/transcriptions?api-version=2024-06-01",
                         headers={"api-key": API_KEY, "x-request-id": request_id},
                         files={"file": ("a.flac", audio)}, data={"language": "ja"}, timeout=timeout)


def assert_unavailable(response) -> None:
    assert isinstance(response, requests.Response), response
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["x-request-id"] and response.headers["apim-request-id"]
    error = response.json()["error"]
    assert error["code"] == "ServiceUnavailable" and "shutting down" in error["message"]


@posix_signals
def test_ctrl_c_lets_the_running_job_finish_and_answers_the_queued_one_503_at_once(tmp_path, model_dir, long_speech,
                                                                                 short_speech):
    # one job at a time, so that the second request waits in the queue (the scheduler would run it beside)
    with server_process(tmp_path, model_dir, server="max_queue = 2\nmax_concurrent_jobs = 1\nshutdown_grace_seconds = 120\n") as server:
        running, running_result = in_background(post_with_id, server, long_speech, "running-job-0001")
        poll(lambda: job_status(server, "running-job-0001") == "running")
        queued, queued_result = in_background(post_with_id, server, short_speech, "queued-job-0001")
        poll(lambda: job_status(server, "queued-job-0001") == "queued")

        server.signal(signal.SIGINT)
        signalled = time.monotonic()
        queued.join(timeout=30)
        assert_unavailable(queued_result[0])
        assert time.monotonic() - signalled < 5, "the queued request must be answered at once"
        assert running.is_alive(), "the running job was stopped though its grace period had not passed"
        assert_unavailable(post_with_id(server, short_speech, "late-arrival-0001"))  # no new work taken

        running.join(timeout=300)
        assert running_result[0].status_code == 200, running_result[0]
        assert running_result[0].json()["text"]
        assert server.wait(timeout=60) == 0
    output = server.output
    assert "SIGINT: shutting down" in output
    assert "queued-job-0001: answered 503" in output and "it was still queued" in output
    assert "server stopped" in output
    assert not any(message in output for message in ABORT_MESSAGES), output[-3000:]


@posix_signals
def test_sigterm_cancels_the_running_job_after_the_grace_period_and_answers_503(tmp_path, model_dir, long_speech):
    with server_process(tmp_path, model_dir, server="shutdown_grace_seconds = 1\n") as server:
        running, running_result = in_background(post_with_id, server, long_speech, "graceless-job-01")
        poll(lambda: job_status(server, "graceless-job-01") == "running")
        server.signal(signal.SIGTERM)
        signalled = time.monotonic()
        running.join(timeout=60)
        assert_unavailable(running_result[0])
        assert time.monotonic() - signalled < 10, "the job must stop between decoding steps after the grace period"
        assert server.wait(timeout=30) == 0
    output = server.output
    assert "SIGTERM: shutting down" in output
    assert "grace period is over: cancelling 1 running job(s)" in output
    assert "graceless-job-01: answered 503" in output and "stopped after the grace period" in output
    assert not any(message in output for message in ABORT_MESSAGES), output[-3000:]


@posix_signals
def test_a_second_ctrl_c_stops_at_once_and_still_cleanly(tmp_path, model_dir, long_speech):
    with server_process(tmp_path, model_dir, server="shutdown_grace_seconds = 600\n") as server:
        running, running_result = in_background(post_with_id, server, long_speech, "impatient-job-01")
        poll(lambda: job_status(server, "impatient-job-01") == "running")
        server.signal(signal.SIGINT)
        server.wait_for_log("SIGINT: shutting down")
        server.signal(signal.SIGINT)
        signalled = time.monotonic()
        assert server.wait(timeout=30) == 0
        # at once: the job gets two seconds to reach its next decoding step (slack for a loaded CI machine)
        assert time.monotonic() - signalled < 10
        running.join(timeout=30)
        if isinstance(running_result[0], requests.Response):  # a job that stopped in time was answered
            assert_unavailable(running_result[0])
    output = server.output
    assert "SIGINT again: stopping now" in output
    assert not any(message in output for message in ABORT_MESSAGES), output[-3000:]


@posix_signals
def test_ctrl_c_on_an_idle_server_exits_0_with_a_log_line(tmp_path, model_dir):
    with server_process(tmp_path, model_dir) as server:
        server.signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    assert "SIGINT: shutting down" in server.output and "server stopped" in server.output


@pytest.mark.skipif(sys.platform != "win32", reason="Windows console events")
def test_ctrl_break_on_windows_stops_gracefully(tmp_path, model_dir, long_speech):
    """Ctrl+Break (SIGBREAK in Python) is a stop request like Ctrl+C; the running job finishes."""
    with server_process(tmp_path, model_dir, server="shutdown_grace_seconds = 120\n") as server:
        running, running_result = in_background(post_with_id, server, long_speech, "windows-break-01")
        poll(lambda: job_status(server, "windows-break-01") == "running")
        server.signal(signal.CTRL_BREAK_EVENT)
        running.join(timeout=300)
        assert running_result[0].status_code == 200, running_result[0]
        assert server.wait(timeout=60) == 0
    assert "SIGBREAK: shutting down" in server.output
    assert not any(message in server.output for message in ABORT_MESSAGES), server.output[-3000:]


# `python -m whisper_api stop`: SIGTERM on POSIX, the server's stop event on Windows
STOP_REQUEST = "stop command: shutting down" if sys.platform == "win32" else "SIGTERM: shutting down"


def stop_command_process(*arguments: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "whisper_api", "stop", *arguments], cwd=REPOSITORY,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8")


def run_stop_command(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "whisper_api", "stop", *arguments], cwd=REPOSITORY,
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout)


def test_stop_command_lets_the_running_job_finish_and_returns_once_the_server_has_exited(tmp_path, model_dir,
                                                                                       long_speech):
    with server_process(tmp_path, model_dir, server="shutdown_grace_seconds = 120\n") as server:
        running, running_result = in_background(post_with_id, server, long_speech, "stopped-outside-01")
        poll(lambda: job_status(server, "stopped-outside-01") == "running")

        stopper = stop_command_process("--config", str(server.config))
        server.wait_for_log(STOP_REQUEST)
        assert running.is_alive(), "the running job was stopped though its grace period had not passed"
        running.join(timeout=300)
        assert running_result[0].status_code == 200, running_result[0]
        assert running_result[0].json()["text"]
        # the command returns once the server is gone (here an exited child the test has not collected yet)
        output, _ = stopper.communicate(timeout=120)
        assert server.process.poll() is not None, "the stop command returned while the server still ran"
        assert server.wait(timeout=30) == 0
    assert stopper.returncode == 0, output
    line = re.fullmatch(rf"Stopped whisper-api \(process (\d+)\) on port {server.port} gracefully in [\d.]+ s\.\n",
                        output)
    assert line, output
    if sys.platform != "win32":  # Windows' venv python.exe starts the real interpreter as its child
        assert int(line.group(1)) == server.pid
    assert "server stopped" in server.output
    assert not any(message in server.output for message in ABORT_MESSAGES), server.output[-3000:]


def test_stop_command_leaves_a_server_still_busy_after_the_wait_running_unless_forced(tmp_path, model_dir,
                                                                                    long_speech):
    with server_process(tmp_path, model_dir, server="shutdown_grace_seconds = 600\n") as server:
        running, running_result = in_background(post_with_id, server, long_speech, "slow-to-stop-0001")
        poll(lambda: job_status(server, "slow-to-stop-0001") == "running")

        patient = run_stop_command("--port", str(server.port), "--wait", "1")
        assert patient.returncode == 1, patient.stdout + patient.stderr
        assert f"on port {server.port} is still running after 1 s" in patient.stdout
        assert "left running; with --force" in patient.stdout
        assert server.process.poll() is None and running.is_alive()  # still serving its transcription

        forced = run_stop_command("--port", str(server.port), "--wait", "0", "--force")
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert "did not stop within 0 s: ended it at once (--force)" in forced.stdout
        assert server.wait(timeout=30) != 0  # killed: no clean exit
        running.join(timeout=30)
        assert not isinstance(running_result[0], requests.Response) or running_result[0].status_code != 200


@pytest.mark.model  # child processes
def test_stop_command_with_nothing_listening_says_so_and_exits_0(tmp_path):
    port = free_port()
    config = write_config(tmp_path, "openai/whisper-base", port)
    result = run_stop_command("--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == f"No server is listening on port {port}: nothing to stop.\n"


@pytest.mark.model  # child processes
def test_stop_command_leaves_another_program_on_the_port_running():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = run_stop_command("--port", str(port), "--wait", "5")
        assert result.returncode == 1, result.stdout + result.stderr
        assert re.fullmatch(rf"Port {port} belongs to another program \(.+, process \d+\): left running\.\n",
                            result.stdout), result.stdout
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            connection, _ = listener.accept()  # still listening, and still this test's socket
            connection.close()


@pytest.mark.parametrize(("command_line", "expected"), [
    (["python", "-m", "whisper_api", "--config", "conf/my.ini"], True),
    (["C:\\Python312\\python.exe", "-X", "utf8", "-m", "whisper_api"], True),
    (["python3", "-mwhisper_api", "serve"], True),
    (["python", "-m", "pytest", "/home/me/whisper_api/tests"], False),
    (["/srv/whisper_api/.venv/bin/waitress-serve", "wsgi:app"], False),
    (["python", "whisper_api"], False),
    (["python", "-m"], False),
    ([], False),
])
def test_only_a_python_m_whisper_api_process_counts_as_the_server(command_line, expected):
    assert stop_command.is_whisper_api(command_line) is expected


def test_the_default_wait_covers_the_grace_period_and_the_unwinding_after_it():
    assert stop_command.default_wait(30) >= 30 + UNWIND_SECONDS


@pytest.mark.skipif(sys.platform != "win32", reason="Windows' named stop event")
def test_the_windows_stop_event_reaches_the_listener_on_its_port_alone():
    port = free_port()
    received: list[str] = []
    close = stop_event.listen(port, received.append)
    try:
        assert not stop_event.request_stop(port - 1)  # no server on that port
        assert stop_event.request_stop(port)
        poll(lambda: received == ["stop command"], timeout_seconds=5)
        assert stop_event.request_stop(port)  # a second request is a second call, like a second Ctrl+C
        poll(lambda: received == ["stop command", "stop command"], timeout_seconds=5)
    finally:
        close()
    assert not stop_event.request_stop(port)  # gone with the server


EXIT_WHILE_THE_MODEL_WORKS = """
import sys, threading, time
from tests.support.speech import MEETING_SENTENCES, concatenate, japanese_speech
from whisper_api.config import ModelSettings
from whisper_api.engine import Engine
from whisper_api.transcript import TranscriptionJob

engine = Engine.load(ModelSettings(name=sys.argv[1], device="cpu", dtype="float32", warmup=False))
samples, _ = concatenate(*[japanese_speech(text) for text in MEETING_SENTENCES], gap_seconds=0.6)
job = threading.Thread(target=lambda: engine.transcribe(TranscriptionJob(samples=samples, language="ja")), daemon=True)
job.start()
while engine.scheduler.rows_per_step.total() < 3:  # the model thread is decoding
    time.sleep(0.01)
print("leaving while the model works", flush=True)
"""


def test_a_process_that_exits_while_the_model_works_exits_cleanly(model_dir):
    """A program using the engine (a tool, a test, another WSGI server) may end while a call is
    running on the model thread: the interpreter's exit waits for that call to end rather than
    aborting inside it (it did: exit code 134, 'terminate called without an active exception')."""
    finished = subprocess.run([sys.executable, "-c", EXIT_WHILE_THE_MODEL_WORKS, str(model_dir)], cwd=REPOSITORY,
                              capture_output=True, text=True, timeout=300)
    assert "leaving while the model works" in finished.stdout, finished.stderr[-3000:]
    assert finished.returncode == 0, finished.stderr[-3000:]
