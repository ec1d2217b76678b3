"""stream=true: OpenAI's transcription events, in order, as each batch is decoded, through the
real SDK clients and plain HTTP against a live server; the same text as without streaming;
one error event on a failure; a hang-up ends the job; heartbeats through silence."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator

import openai
import pytest
import requests
from openai.types.audio import (
    TranscriptionTextDeltaEvent,
    TranscriptionTextDoneEvent,
    TranscriptionTextSegmentEvent,
)

from tests.conftest import API_KEY, API_VERSION
from tests.support.speech import JAPANESE_SENTENCES, concatenate, encode, japanese_speech
from whisper_api import streaming

pytestmark = pytest.mark.model

SURFACE_CASES = [
    ("azure-deployments", "verbose_json"), ("azure-v1", "json"), ("openai-v1", "text"), ("openai-v1", "verbose_json"),
]
DEPLOYMENT_PATH = f"/openai/deployments/whisper/audio/transcriptions?api-version={API_VERSION}"


@pytest.fixture(scope="module")
def sentences() -> bytes:
    """Six Japanese sentences with pauses between them: several chunks, several segments."""
    samples, _ = concatenate(*[japanese_speech(sentence) for sentence in JAPANESE_SENTENCES[:6]], gap_seconds=1.2)
    return encode(samples, "flac")


@pytest.fixture(scope="module")
def one_chunk_a_batch(live_server_with, engine) -> str:
    """A server that decodes one short chunk at a time: many batches, so many moments to stream."""
    return live_server_with(engine.with_settings(batch_size=1, vad_max_chunk_seconds=6), max_queue=2)


def client_for(surface: str, url: str) -> openai.OpenAI:
    if surface == "azure-deployments":
        return openai.AzureOpenAI(azure_endpoint=url, api_key=API_KEY, api_version=API_VERSION, max_retries=0)
    base = f"{url}/openai/v1/" if surface == "azure-v1" else f"{url}/v1"
    return openai.OpenAI(base_url=base, api_key=API_KEY, max_retries=0)


def post(url: str, audio: bytes, stream: bool = True, request_id: str | None = None, **fields) -> requests.Response:
    headers = {"api-key": API_KEY, **({"x-request-id": request_id} if request_id else {})}
    data = {"stream": "true" if stream else "false", "language": "ja", **fields}
    return requests.post(url + DEPLOYMENT_PATH, headers=headers, files={"file": ("a.flac", audio)}, data=data,
                         stream=stream, timeout=300)


def events(response: requests.Response, heartbeats: list[float] | None = None) -> Iterator[dict]:
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            yield json.loads(line[len(b"data: "):])
        elif line.startswith(b":") and heartbeats is not None:
            heartbeats.append(time.monotonic())


@pytest.mark.parametrize(("surface", "response_format"), SURFACE_CASES)
def test_sdk_clients_iterate_the_stream_as_their_own_types(live_server, sentences, surface, response_format):
    client = client_for(surface, live_server)
    words = ["word", "segment"] if response_format == "verbose_json" else openai.NOT_GIVEN
    plain = client.audio.transcriptions.create(model="whisper", file=("a.flac", sentences), language="ja",
                                               response_format=response_format, timestamp_granularities=words)
    streamed = list(client.audio.transcriptions.create(
        model="whisper", file=("a.flac", sentences), language="ja", response_format=response_format,
        timestamp_granularities=words, stream=True))
    deltas = [event for event in streamed if isinstance(event, TranscriptionTextDeltaEvent)]
    segments = [event for event in streamed if isinstance(event, TranscriptionTextSegmentEvent)]
    assert deltas and isinstance(streamed[-1], TranscriptionTextDoneEvent)
    assert sum(isinstance(event, TranscriptionTextDoneEvent) for event in streamed) == 1
    plain_text = plain.strip() if isinstance(plain, str) else plain.text
    assert streamed[-1].text == plain_text
    assert "".join(event.delta for event in deltas).strip() == plain_text
    assert streamed[-1].usage is not None
    if response_format == "verbose_json":
        assert [(event.id, event.start, event.end, event.text) for event in segments] == [
            (f"seg_{segment.id}", segment.start, segment.end, segment.text) for segment in plain.segments]
        assert [word["word"] for event in segments for word in event.words] == [word.word for word in plain.words]
    else:
        assert not segments


def test_translation_streams_too(live_server, sentences):
    client = client_for("openai-v1", live_server)
    plain = client.audio.translations.create(model="whisper", file=("a.flac", sentences))
    response = requests.post(f"{live_server}/v1/audio/translations", headers={"api-key": API_KEY},
                             files={"file": ("a.flac", sentences)}, data={"model": "whisper", "stream": "true"},
                             stream=True, timeout=300)
    streamed = list(events(response))
    assert streamed[-1] == {"type": "transcript.text.done", "text": plain.text, "usage": streamed[-1]["usage"]}


@pytest.mark.parametrize("response_format", ["srt", "vtt"])
def test_subtitle_deltas_add_up_to_the_file_done_carries(live_server, sentences, response_format):
    plain = post(live_server, sentences, stream=False, response_format=response_format)
    streamed = list(events(post(live_server, sentences, response_format=response_format)))
    assert streamed[-1]["text"] == plain.text
    assert "".join(event["delta"] for event in streamed[:-1]) == plain.text


def test_first_text_arrives_while_later_batches_still_decode(one_chunk_a_batch, sentences):
    request_id = "stream-order-0001"
    response = post(one_chunk_a_batch, sentences, request_id=request_id, response_format="verbose_json")
    assert response.headers["Content-Type"].startswith("text/event-stream")
    stream = events(response)
    first = next(stream)
    assert first["type"] == "transcript.text.delta" and first["delta"]
    progress = requests.get(f"{one_chunk_a_batch}/v1/jobs/{request_id}", headers={"api-key": API_KEY}, timeout=10).json()
    assert progress["status"] == "running" and progress["units_done"] < progress["units_total"], progress
    rest = [first, *stream]
    segments = [event for event in rest if event["type"] == "transcript.text.segment"]
    assert [event["id"] for event in segments] == [f"seg_{number}" for number in range(len(segments))]
    assert all(earlier["end"] <= later["start"] + 1e-6 for earlier, later in zip(segments, segments[1:]))
    # each segment's delta comes right before its segment event, and nothing follows `done`
    kinds = [event["type"] for event in rest]
    assert kinds == ["transcript.text.delta", "transcript.text.segment"] * len(segments) + ["transcript.text.done"]
    assert rest[-1]["text"] == "".join(event["text"] for event in segments).strip()


def test_failure_mid_stream_is_one_error_event_in_the_envelope(one_chunk_a_batch, sentences, engine, monkeypatch,
                                                               caplog):
    real_submit = engine.decoder.submit_rows  # each batch's first pass (one chunk a batch here)
    calls = []

    def failing_later(*arguments, **keywords):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected failure inside decoding")
        return real_submit(*arguments, **keywords)

    monkeypatch.setattr(engine.decoder, "submit_rows", failing_later)
    with caplog.at_level(logging.INFO, logger="whisper_api.access"):
        response = post(one_chunk_a_batch, sentences, request_id="stream-failure-001")
        assert response.status_code == 200
        streamed = list(events(response))
        deadline = time.monotonic() + 10
        while "stream-failure-001" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    errors = [event for event in streamed if event["type"] == "error"]
    assert len(errors) == 1 and streamed[-1] is errors[0]
    assert errors[0]["error"]["code"] == "internal_error" and errors[0]["error"]["type"] == "server_error"
    assert "injected" not in json.dumps(errors[0])
    line = next(json.loads(record.getMessage()) for record in caplog.records
                if "stream-failure-001" in record.getMessage())
    assert line["stream_status"] == 500 and line["error_code"] == "internal_error"
    scraped = requests.get(f"{one_chunk_a_batch}/metrics", headers={"api-key": API_KEY}, timeout=10).text
    assert 'route="/openai/deployments/<deployment>/audio/transcriptions",status="500"' in scraped
    assert not engine.queue.busy()


def test_sdk_raises_the_error_event(one_chunk_a_batch, sentences, engine, monkeypatch):
    real_decode = engine.decoder.submit_rows  # each batch's first pass
    calls = []

    def failing_later(*arguments, **keywords):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected")
        return real_decode(*arguments, **keywords)

    monkeypatch.setattr(engine.decoder, "submit_rows", failing_later)
    client = client_for("azure-deployments", one_chunk_a_batch)
    with pytest.raises(openai.APIError, match="The server had an error"):
        for _ in client.audio.transcriptions.create(model="whisper", file=("a.flac", sentences), language="ja",
                                                    stream=True):
            pass


def test_client_hanging_up_stops_the_job_and_frees_its_threads(one_chunk_a_batch, sentences, engine):
    request_id = "stream-hangup-0001"
    response = post(one_chunk_a_batch, sentences, request_id=request_id)
    first = next(events(response))
    assert first["type"] == "transcript.text.delta"
    response.close()
    deadline = time.monotonic() + 60
    progress = {}
    while time.monotonic() < deadline:
        progress = requests.get(f"{one_chunk_a_batch}/v1/jobs/{request_id}", headers={"api-key": API_KEY},
                                timeout=10).json()
        if progress["status"] != "running" and not engine.queue.busy():
            break
        time.sleep(0.1)
    assert progress["status"] == "failed" and progress["units_done"] < progress["units_total"], progress
    assert not engine.queue.busy()
    deadline = time.monotonic() + 10
    while any(thread.name == "whisper-api-stream" for thread in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(thread.name == "whisper-api-stream" for thread in threading.enumerate())


def test_heartbeats_keep_a_silent_stretch_alive(one_chunk_a_batch, sentences, engine, monkeypatch):
    monkeypatch.setattr(streaming, "HEARTBEAT_SECONDS", 0.3)
    real_decode = engine.decoder.submit_rows  # each batch's first pass

    def slow(*arguments, **keywords):
        time.sleep(1.0)
        return real_decode(*arguments, **keywords)

    monkeypatch.setattr(engine.decoder, "submit_rows", slow)
    heartbeats: list[float] = []
    streamed = list(events(post(one_chunk_a_batch, sentences), heartbeats))
    assert streamed[-1]["type"] == "transcript.text.done"
    assert len(heartbeats) >= 2

