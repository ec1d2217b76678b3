"""Stopping a real server process with real signals: the running job finishes within the grace
period (or is cancelled after it and answered 503), queued and new requests get 503 with
Retry-After at once, one log line each, exit code 0; a second Ctrl+C stops at once, still cleanly."""

from __future__ import annotations

import signal
import sys
import threading
import time

import pytest
import requests

from tests.support.server_process import API_KEY, job_status, poll, server_process
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
