"""Job progress: the decoders report it, GET /v1/jobs/<request id> shows it, long jobs log it."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import uuid

import pytest
import requests

from tests.conftest import API_KEY
from tests.support.speech import JAPANESE_SENTENCES, concatenate, encode, japanese_speech
from whisper_api.engine import Engine
from whisper_api.progress import ProgressBoard
from whisper_api.transcript import TranscriptionJob

HEADERS = {"api-key": API_KEY}


@pytest.fixture(scope="module")
def two_sentences():
    samples, _ = concatenate(*(japanese_speech(sentence) for sentence in JAPANESE_SENTENCES[:2]), gap_seconds=1.0)
    return samples


def reports_of(engine: Engine, samples) -> list[tuple[int, int]]:
    reports: list[tuple[int, int]] = []
    engine.transcribe(TranscriptionJob(samples=samples, language="ja", on_progress=lambda *pair: reports.append(pair)))
    return reports


def assert_runs_from_zero_to_total(reports: list[tuple[int, int]]) -> None:
    assert reports, "the decoder never reported progress"
    totals = {total for _, total in reports}
    assert len(totals) == 1 and totals.pop() > 0
    done = [units for units, _ in reports]
    assert done[0] == 0 and done == sorted(done)
    assert done[-1] == reports[-1][1]


@pytest.mark.parametrize("strategy", ["vad", "sequential"])
def test_each_strategy_reports_from_zero_to_total(engine, two_sentences, strategy):
    assert_runs_from_zero_to_total(reports_of(engine.with_settings(strategy=strategy), two_sentences))


def post_clip(url: str, samples, request_id: str | None = None) -> requests.Response:
    headers = dict(HEADERS, **({"x-request-id": request_id} if request_id else {}))
    return requests.post(
        url, headers=headers, files={"file": ("clip.wav", encode(samples, "wav"))},
        data={"response_format": "json"}, timeout=120,
    )


def job(live_server: str, request_id: str, headers=HEADERS) -> requests.Response:
    return requests.get(f"{live_server}/v1/jobs/{request_id}", headers=headers, timeout=10)


def test_finished_job_shows_all_units_done(live_server, transcriptions_url, two_sentences):
    request_id = f"progress-{uuid.uuid4()}"
    response = post_clip(transcriptions_url, two_sentences, request_id)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    progress = job(live_server, request_id).json()
    assert progress["status"] == "succeeded"
    assert progress["progress"] == 1.0
    assert progress["units_total"] > 0 and progress["units_done"] == progress["units_total"]
    assert progress["audio_seconds"] == pytest.approx(len(two_sentences) / 16000, abs=0.05)
    assert progress["processing_seconds"] > 0 and progress["elapsed_seconds"] >= progress["processing_seconds"]


def test_job_waiting_for_the_model_is_queued_then_succeeds(engine, live_server, transcriptions_url):
    request_id = f"queued-{uuid.uuid4()}"
    answers: list[requests.Response] = []
    sender = threading.Thread(target=lambda: answers.append(post_clip(transcriptions_url, japanese_speech("はい。"), request_id)))
    with engine.queue.turn():  # the model is busy with someone else's job
        sender.start()
        deadline = time.monotonic() + 30
        while job(live_server, request_id).status_code == 404 and time.monotonic() < deadline:
            time.sleep(0.05)
        waiting = job(live_server, request_id).json()
    sender.join(timeout=120)
    assert waiting["status"] == "queued" and waiting["progress"] == 0.0
    assert answers[0].status_code == 200
    assert job(live_server, request_id).json()["status"] == "succeeded"


def test_unknown_job_returns_404_in_the_envelope(live_server):
    response = job(live_server, "no-such-request-id")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "JobNotFound"


def test_job_progress_needs_the_key(live_server):
    assert job(live_server, "no-such-request-id", headers={"api-key": "wrong"}).status_code == 401
    assert job(live_server, "no-such-request-id", headers={}).status_code == 401


@pytest.mark.parametrize("incoming", ["short", "has space in it", "<script>alert(1)</script>", "x" * 129])
def test_unusable_client_request_id_is_replaced(client, incoming):
    response = client.get("/health", headers={"x-request-id": incoming})
    assert response.headers["x-request-id"] != incoming
    uuid.UUID(response.headers["x-request-id"])


def test_usable_client_request_id_is_kept(client):
    response = client.get("/health", headers={"x-request-id": "my-client.request:0001"})
    assert response.headers["x-request-id"] == "my-client.request:0001"


def test_long_job_logs_progress_about_every_tenth(caplog):
    board = ProgressBoard()
    report = board.start("long-job-id", "whisper", audio_seconds=3600)
    with caplog.at_level(logging.INFO, logger="whisper_api.progress"):
        for done in range(0, 1001):
            report(done, 1000)
    lines = [record.getMessage() for record in caplog.records if "long-job-id" in record.getMessage()]
    assert len(lines) == 10
    assert "10%" in lines[0] and "100%" in lines[-1]


def test_short_job_logs_no_progress(caplog):
    board = ProgressBoard()
    report = board.start("short-job-id", "whisper", audio_seconds=20)
    with caplog.at_level(logging.INFO, logger="whisper_api.progress"):
        for done in range(0, 11):
            report(done, 10)
    assert not [record for record in caplog.records if "short-job-id" in record.getMessage()]


def test_board_keeps_running_jobs_and_the_latest_finished_ones():
    board = ProgressBoard(keep_finished=2)
    board.start("running-job", "whisper", 5)
    for number in range(4):
        board.start(f"finished-{number}", "whisper", 5)
        board.finish(f"finished-{number}", succeeded=True)
    board.start("newest", "whisper", 5)
    assert board.get("running-job")["status"] == "queued"
    assert board.get("finished-0") is None and board.get("finished-1") is None
    assert board.get("finished-3")["status"] == "succeeded"


def test_request_id_of_a_job_still_running_is_not_reused(app, client):
    board: ProgressBoard = app.extensions["whisper_api.progress"]
    board.start("someone-elses-job", "whisper", audio_seconds=60)  # still running
    response = client.post(
        "/openai/deployments/whisper/audio/transcriptions?api-version=2024-06-01",
        headers={**HEADERS, "x-request-id": "someone-elses-job"},
        data={"file": (io.BytesIO(encode(japanese_speech("はい。"), "wav")), "clip.wav")},
    )
    assert response.status_code == 200
    own_id = response.headers["x-request-id"]
    assert own_id != "someone-elses-job"
    assert board.get(own_id)["status"] == "succeeded"
    assert board.get("someone-elses-job")["status"] == "queued"


def test_progress_says_running_from_when_the_job_holds_the_model_and_times_are_apart(
        engine, model_settings, two_sentences, caplog):
    """While the job's speech detection runs (seconds on long audio) it is `running`, not `queued`;
    the access log and /metrics keep queue time and model time apart."""
    from tests.conftest import make_settings
    from tests.support.live_server import serve_in_thread
    from whisper_api import create_app

    caplog.set_level(logging.INFO, logger="whisper_api.access")
    app = create_app(make_settings(model_settings), engine=engine)
    detecting, release = threading.Event(), threading.Event()
    detect = engine.detector.frame_probabilities

    def held_detection(*arguments, **keywords):
        detecting.set()
        assert release.wait(60)
        return detect(*arguments, **keywords)

    audio = encode(two_sentences, "wav")
    engine.detector.frame_probabilities = held_detection
    try:
        with serve_in_thread(app) as url:
            def post(request_id: str) -> requests.Response:
                return requests.post(f"{url}/v1/audio/transcriptions", headers={**HEADERS, "x-request-id": request_id},
                                     files={"file": ("a.wav", audio)}, data={"model": "whisper", "language": "ja"},
                                     timeout=120)

            def status(request_id: str) -> str | None:
                response = requests.get(f"{url}/v1/jobs/{request_id}", headers=HEADERS, timeout=10)
                return response.json()["status"] if response.status_code == 200 else None

            first = threading.Thread(target=post, args=("first-job-holds-model",))
            first.start()
            assert detecting.wait(60)
            assert status("first-job-holds-model") == "running"  # speech detection holds the model
            second = threading.Thread(target=post, args=("second-job-waits-0001",))
            second.start()
            deadline = time.monotonic() + 30
            while status("second-job-waits-0001") != "queued":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(1.0)  # the second job waits at least this long
            release.set()
            first.join(timeout=120)
            second.join(timeout=120)
            metrics_text = requests.get(f"{url}/metrics", headers=HEADERS, timeout=10).text
    finally:
        del engine.detector.frame_probabilities
    lines = {line["request_id"]: line for line in
             (json.loads(record.getMessage()) for record in caplog.records if record.name == "whisper_api.access")}
    waited, held = lines["second-job-waits-0001"], lines["first-job-holds-model"]
    assert waited["status"] == held["status"] == 200
    assert waited["queue_seconds"] >= 1.0
    assert waited["processing_seconds"] < waited["seconds"] - 1.0  # the wait is not model time
    assert held["processing_seconds"] >= 1.0 and held["queue_seconds"] < 0.5  # held from speech detection on
    assert 'whisper_api_queue_wait_seconds_count{deployment="whisper"} 2.0' in metrics_text
    assert 'whisper_api_processing_seconds_count{deployment="whisper"} 2.0' in metrics_text
