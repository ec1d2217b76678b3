"""A real Waitress server on loopback, called by `requests` and the real `openai` SDK.

Error answers are checked in test_bad_input (HTTP) and test_contract (SDK exceptions)."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests
import srt
import webvtt

from tests.conftest import API_KEY, API_VERSION
from tests.support.speech import JAPANESE_SENTENCES, character_error_rate, encode, japanese_speech

SENTENCE = JAPANESE_SENTENCES[0]


@pytest.fixture(scope="module")
def speech_wav() -> bytes:
    return encode(japanese_speech(SENTENCE), "wav")


def post(url: str, audio: bytes, filename: str = "speech.wav", **fields) -> requests.Response:
    return requests.post(url, headers={"api-key": API_KEY}, files={"file": (filename, audio)}, data=fields, timeout=120)


def azure_client(live_server: str, key: str = API_KEY) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=live_server, api_key=key, api_version=API_VERSION, max_retries=0)


def test_health_reports_model_device_and_dtype(live_server, model_dir):
    body = requests.get(f"{live_server}/health", timeout=10).json()
    assert body["status"] == "ok"
    assert body["model"] == str(model_dir)
    assert body["device"] == "cpu"
    assert body["dtype"] == "float32"
    assert API_KEY not in str(body)


def test_json_response_holds_the_text(transcriptions_url, speech_wav):
    response = post(transcriptions_url, speech_wav, language="ja")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert set(response.json()) == {"text"}
    assert character_error_rate(SENTENCE, response.json()["text"]) <= 0.35


def test_verbose_json_has_azure_fields(transcriptions_url, speech_wav):
    body = post(transcriptions_url, speech_wav, response_format="verbose_json").json()
    assert body["task"] == "transcribe"
    assert body["language"] == "japanese"
    assert body["duration"] == pytest.approx(len(japanese_speech(SENTENCE)) / 16000, abs=0.01)
    assert character_error_rate(SENTENCE, body["text"]) <= 0.35
    assert body["segments"], body
    for segment in body["segments"]:
        assert set(segment) >= {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                                "compression_ratio", "no_speech_prob"}
        assert 0 <= segment["start"] < segment["end"] <= body["duration"] + 0.01
        assert all(isinstance(token, int) for token in segment["tokens"])
        assert segment["avg_logprob"] <= 0
        assert 0 <= segment["no_speech_prob"] <= 1


def test_text_srt_and_vtt_are_plain_text_subtitles(transcriptions_url, speech_wav):
    text = post(transcriptions_url, speech_wav, language="ja", response_format="text")
    assert text.headers["Content-Type"].startswith("text/plain")
    assert character_error_rate(SENTENCE, text.text) <= 0.35

    for response_format in ("srt", "vtt"):
        response = post(transcriptions_url, speech_wav, language="ja", response_format=response_format)
        assert response.headers["Content-Type"].startswith("text/plain")
        assert character_error_rate(SENTENCE, subtitle_text(response.text, response_format)) <= 0.35
    first_cue = next(srt.parse(post(transcriptions_url, speech_wav, language="ja", response_format="srt").text))
    assert first_cue.index == 1 and first_cue.end > first_cue.start


def test_bearer_authorization_is_accepted(transcriptions_url, speech_wav):
    response = requests.post(
        transcriptions_url,
        headers={"Authorization": f"Bearer {API_KEY}"},
        files={"file": ("speech.wav", speech_wav)},
        timeout=120,
    )
    assert response.status_code == 200


def test_deployment_default_language_applies(live_server, speech_wav):
    url = f"{live_server}/openai/deployments/whisper-ja/audio/transcriptions?api-version={API_VERSION}"
    assert post(url, speech_wav, response_format="verbose_json").json()["language"] == "japanese"


@pytest.mark.parametrize("response_format", ["json", "verbose_json", "text", "srt", "vtt"])
def test_azure_openai_sdk_reads_every_format(live_server, speech_wav, response_format):
    client = azure_client(live_server)
    result = client.audio.transcriptions.create(
        model="whisper", file=("speech.wav", speech_wav), language="ja", response_format=response_format
    )
    if response_format == "json":
        assert character_error_rate(SENTENCE, result.text) <= 0.35
    elif response_format == "verbose_json":
        assert result.language == "japanese"
        assert result.segments and result.segments[0].end > result.segments[0].start
        assert character_error_rate(SENTENCE, result.text) <= 0.35
    else:
        assert isinstance(result, str)
        assert character_error_rate(SENTENCE, subtitle_text(result, response_format)) <= 0.35


def subtitle_text(body: str, response_format: str) -> str:
    if response_format == "srt":
        return "".join(cue.content for cue in srt.parse(body))
    if response_format == "vtt":
        return "".join(caption.text for caption in webvtt.from_buffer(io.StringIO(body)))
    return body


def test_concurrent_requests_all_succeed_and_never_overlap_in_the_model(live_server, engine, speech_wav):
    active = 0
    most_active = 0
    guard = threading.Lock()
    decode = engine.long_form.transcribe

    def counting_transcribe(job):
        nonlocal active, most_active
        with guard:
            active += 1
            most_active = max(most_active, active)
        try:
            return decode(job)
        finally:
            with guard:
                active -= 1

    engine.long_form.transcribe = counting_transcribe
    try:
        client = azure_client(live_server)
        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(
                lambda _: client.audio.transcriptions.create(model="whisper", file=("a.wav", speech_wav), language="ja"),
                range(6),
            ))
    finally:
        del engine.long_form.transcribe
    assert all(character_error_rate(SENTENCE, result.text) <= 0.35 for result in results)
    assert most_active == 1
