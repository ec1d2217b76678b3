"""A bounded queue in front of the model: 429 with Retry-After at once when full, and clients
that hang up while queued give their place back."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

from tests.conftest import API_KEY, API_VERSION, make_settings
from tests.support.live_server import serve_in_thread
from tests.support.speech import JAPANESE_SENTENCES, MEETING_SENTENCES, character_error_rate, concatenate, encode, japanese_speech
from whisper_api import create_app
from whisper_api.engine import Engine

PATH = f"/openai/deployments/whisper/audio/transcriptions?api-version={API_VERSION}"


@pytest.fixture(scope="module")
def queued_engine(engine, model_settings) -> Engine:
    """The session's model behind a queue of one waiting place."""
    return engine.with_settings(max_queue=1)


@pytest.fixture(scope="module")
def server(queued_engine, model_settings):
    app = create_app(make_settings(model_settings, max_queue=1), engine=queued_engine)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def long_speech() -> bytes:
    samples, _ = concatenate(*[japanese_speech(sentence) for sentence in JAPANESE_SENTENCES * 3], gap_seconds=0.5)
    return encode(samples, "flac")


@pytest.fixture(scope="module")
def short_speech() -> bytes:
    return encode(japanese_speech(JAPANESE_SENTENCES[0]), "wav")


def post(url: str, audio: bytes) -> requests.Response:
    return requests.post(url + PATH, headers={"api-key": API_KEY}, files={"file": ("a.flac", audio)},
                         data={"language": "ja"}, timeout=300)


def poll(condition, timeout_seconds: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def in_background(function, *arguments) -> tuple[threading.Thread, list]:
    results: list = []
    thread = threading.Thread(target=lambda: results.append(function(*arguments)), daemon=True)
    thread.start()
    return thread, results


def test_full_queue_answers_429_at_once_and_queued_work_completes(server, queued_engine, long_speech, short_speech):
    running, running_result = in_background(post, server, long_speech)
    poll(queued_engine.queue.busy)
    waiting, waiting_result = in_background(post, server, short_speech)
    poll(lambda: queued_engine.queue.waiting == 1)

    refused = post(server, short_speech)
    assert queued_engine.queue.busy(), "the 429 must come while the model is still busy, not after a wait"
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    error = refused.json()["error"]
    assert error["code"] == "429" and "retry after" in error["message"].lower()

    running.join(timeout=300)
    waiting.join(timeout=300)
    assert running_result[0].status_code == 200
    assert waiting_result[0].status_code == 200
    assert character_error_rate(JAPANESE_SENTENCES[0], waiting_result[0].json()["text"]) <= 0.35


def test_client_that_hangs_up_while_queued_gives_its_place_back(server, queued_engine, long_speech, short_speech):
    running, running_result = in_background(post, server, long_speech)
    poll(queued_engine.queue.busy)

    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n" + short_speech
            + b"\r\n--b--\r\n")
    host, port = server.removeprefix("http://").split(":")
    impatient = socket.create_connection((host, int(port)))
    impatient.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\napi-key: {API_KEY}\r\nContent-Type: multipart/form-data;"
                      f" boundary=b\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    poll(lambda: queued_engine.queue.waiting == 1)
    impatient.close()

    poll(lambda: queued_engine.queue.waiting == 0)
    assert queued_engine.queue.busy(), "the place was given back while the first job still ran"
    admitted, admitted_result = in_background(post, server, short_speech)
    running.join(timeout=300)
    admitted.join(timeout=300)
    assert running_result[0].status_code == 200
    assert admitted_result[0].status_code == 200


def test_idle_slow_client_is_disconnected_after_the_channel_timeout(model_settings, engine):
    app = create_app(make_settings(model_settings, channel_timeout_seconds=2), engine=engine)
    with serve_in_thread(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as slow:
            slow.sendall(b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n")  # and then nothing more
            started = time.monotonic()
            try:
                closed = slow.recv(1024) == b""
            except ConnectionResetError:
                closed = True
            assert closed
            assert time.monotonic() - started < 25, "the server held the idle connection open"


@pytest.mark.parametrize(("threads", "max_queue", "warned"), [(4, 8, True), (5, 4, True), (6, 4, False), (8, 4, False)])
def test_too_few_threads_for_the_queue_is_warned_at_start(caplog, threads, max_queue, warned):
    """A request beyond the queue needs a free Waitress thread to be refused with 429; with too few
    threads it would wait in Waitress' backlog instead, unseen by the queue."""
    from flask import Flask

    from whisper_api.config import ServerSettings
    from whisper_api.server import create_server

    with caplog.at_level("WARNING", logger="whisper_api.server"):
        server = create_server(Flask("t"), ServerSettings(threads=threads, max_queue=max_queue), host="127.0.0.1", port=0)
    server.close()
    assert ("less than max_queue + 2" in caplog.text) is warned


def test_the_shipped_defaults_leave_a_thread_to_refuse_with_429():
    from whisper_api.config import DEFAULT_CONFIG_PATH, ServerSettings, load_settings

    for server in (ServerSettings(), load_settings(DEFAULT_CONFIG_PATH).server):
        assert server.threads >= server.max_queue + 2


def test_jobs_take_the_model_in_the_order_they_arrived():
    from whisper_api.model_queue import ModelQueue

    queue = ModelQueue(max_waiting=10)
    order: list[int] = []

    def job(number: int) -> None:
        with queue.turn():
            order.append(number)
            time.sleep(0.01)  # long enough for a later arrival to try to overtake

    with queue.turn():  # the model is busy while the line forms
        workers = []
        for number in range(6):
            workers.append(threading.Thread(target=job, args=(number,)))
            workers[-1].start()
            poll(lambda: queue.waiting == number + 1)
    for worker in workers:
        worker.join(timeout=10)
    assert order == list(range(6))
    assert queue.waiting == 0 and not queue.busy()


@pytest.fixture(scope="module")
def small_batch_engine(engine) -> Engine:
    """Two chunks a batch: a few minutes of speech take several batches."""
    return engine.with_settings(max_queue=1, batch_size=2)


@pytest.fixture(scope="module")
def small_batch_server(small_batch_engine, model_settings):
    app = create_app(make_settings(model_settings, max_queue=1), engine=small_batch_engine)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def minutes_of_speech() -> bytes:
    samples, _ = concatenate(*[japanese_speech(sentence) for sentence in MEETING_SENTENCES * 2], gap_seconds=0.6)
    return encode(samples, "flac")


def test_client_that_hangs_up_while_its_job_runs_frees_the_model_and_is_logged_499(
        small_batch_server, small_batch_engine, minutes_of_speech, short_speech, caplog):
    """The job stops between decoding steps (not at its end), the next one runs at once, and the
    access log says 499."""
    caplog.set_level("INFO", logger="whisper_api")
    server, queued_engine, long_speech = small_batch_server, small_batch_engine, minutes_of_speech
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.flac\"\r\n\r\n" + long_speech
            + b"\r\n--b\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\nja\r\n--b--\r\n")
    host, port = server.removeprefix("http://").split(":")
    leaving = socket.create_connection((host, int(port)))
    leaving.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\napi-key: {API_KEY}\r\nx-request-id: hang-up-while-running\r\n"
                    f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body)
    poll(lambda: progress_status(server, "hang-up-while-running") == "running")
    poll(lambda: progress_units(server, "hang-up-while-running")[1] > 1)  # speech detected, chunks decoding
    hung_up = time.monotonic()
    leaving.close()

    poll(lambda: not queued_engine.queue.busy(), timeout_seconds=30)
    freed_after = time.monotonic() - hung_up
    done, total = progress_units(server, "hang-up-while-running")
    assert done < total, "the job ran to its end instead of stopping"
    assert progress_status(server, "hang-up-while-running") == "failed"
    admitted = post(server, short_speech)
    assert admitted.status_code == 200
    lines = [json.loads(record.getMessage()) for record in caplog.records if record.name == "whisper_api.access"]
    hung = [line for line in lines if line["request_id"] == "hang-up-while-running"]
    assert len(hung) == 1 and hung[0]["status"] == 499, hung
    assert freed_after < 15


def progress_status(url: str, request_id: str) -> str | None:
    response = requests.get(f"{url}/v1/jobs/{request_id}", headers={"api-key": API_KEY}, timeout=10)
    return response.json()["status"] if response.status_code == 200 else None


def progress_units(url: str, request_id: str) -> tuple[int, int]:
    body = requests.get(f"{url}/v1/jobs/{request_id}", headers={"api-key": API_KEY}, timeout=10).json()
    return body["units_done"], body["units_total"]


def test_retry_after_prices_what_is_queued_not_the_last_long_job(model_settings, engine, minutes_of_speech):
    """After a long file, a burst of short clips is refused with a Retry-After within 2x of the
    time the queue really takes to empty (it was priced from old jobs before)."""
    burst_engine = engine.with_settings(max_queue=3)
    app = create_app(make_settings(model_settings, max_queue=3), engine=burst_engine)
    clip = encode(concatenate(*[japanese_speech(sentence) for sentence in MEETING_SENTENCES[:5]],
                              gap_seconds=0.5)[0], "flac")
    with serve_in_thread(app) as url:
        assert post(url, minutes_of_speech).status_code == 200  # the long job the old estimate remembered
        burst = [in_background(post, url, clip)]
        poll(burst_engine.queue.busy)
        for waiting in range(1, 4):
            burst.append(in_background(post, url, clip))
            poll(lambda: burst_engine.queue.waiting == waiting)
        refused = post(url, clip)
        refused_at = time.monotonic()
        assert refused.status_code == 429
        advertised = int(refused.headers["Retry-After"])
        for thread, _ in burst:
            thread.join(timeout=300)
        real_wait = time.monotonic() - refused_at
    assert all(result[0].status_code == 200 for _, result in burst)
    assert real_wait / 2 <= advertised <= max(2 * real_wait, 2), (advertised, real_wait)
