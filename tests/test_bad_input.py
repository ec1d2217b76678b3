"""Hostile and broken input: every case gets the right 4xx in Azure's envelope, or a correct
transcription where the audio is valid; never a 5xx, a traceback or a hang.

The one table of HTTP error answers (401, 404, 400, 413); test_contract checks that the
`openai` SDKs turn them into their typed exceptions."""

from __future__ import annotations

import dataclasses
import io
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import requests
import soundfile

from tests.conftest import API_KEY, API_VERSION, make_settings
from tests.support.live_server import serve_in_thread
from tests.support.speech import JAPANESE_SENTENCES, character_error_rate, encode, japanese_speech, silence
from whisper_api import create_app

SENTENCE = JAPANESE_SENTENCES[3]
PATH = f"/openai/deployments/whisper/audio/transcriptions?api-version={API_VERSION}"
MAX_UPLOAD_MB = 1
MAX_AUDIO_SECONDS = 60


@pytest.fixture(scope="module")
def server(model_settings, engine):
    limited_model = dataclasses.replace(model_settings, max_audio_seconds=MAX_AUDIO_SECONDS)
    app = create_app(make_settings(limited_model, max_upload_mb=MAX_UPLOAD_MB), engine=engine)
    with serve_in_thread(app) as url:
        yield url


def speech(sample_rate: int = 16000) -> np.ndarray:
    samples = japanese_speech(SENTENCE)
    if sample_rate != 16000:
        import librosa

        samples = librosa.resample(samples, orig_sr=16000, target_sr=sample_rate)
    return samples.astype(np.float32)


def wav(samples: np.ndarray, sample_rate: int = 16000, subtype: str = "PCM_16", channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    data = np.repeat(samples[:, None], channels, axis=1) if channels > 1 else samples
    soundfile.write(buffer, data, sample_rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def lying_wav_header() -> bytes:
    data = bytearray(wav(speech()))
    position = data.index(b"data") + 4
    data[position : position + 4] = (len(data) * 4).to_bytes(4, "little")  # claims 4x the real length
    data[4:8] = (len(data) * 4).to_bytes(4, "little")
    return bytes(data)


def with_non_finite_samples() -> bytes:
    samples = speech().copy()
    samples[100:110] = np.nan
    samples[200:205] = np.inf
    samples[300:305] = -np.inf
    return wav(samples, subtype="FLOAT")


def wav_claiming_rate(sample_rate: int) -> bytes:
    """A valid 8-bit mono WAV whose header claims an absurd sample rate."""
    data = bytearray(wav(speech(), subtype="PCM_U8"))
    data[24:28] = sample_rate.to_bytes(4, "little")
    data[28:32] = sample_rate.to_bytes(4, "little")  # byte rate = rate x 1 byte x 1 channel
    return bytes(data)


def clipped_noise() -> bytes:
    noise = np.random.default_rng(7).normal(0, 3, 16000 * 3)
    return wav(np.clip(noise, -1, 1).astype(np.float32))


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    param: str | None = None
    files: Callable[[], list] | None = None
    data: dict = field(default_factory=dict)
    headers: dict | None = None
    body: Callable[[], bytes] | None = None  # raw body instead of multipart
    path: str = PATH
    code: str | None = None  # the envelope's error code, where Azure's is known
    message: str | None = None  # a part of the envelope's message
    check_speech: bool = False  # a 200 must hold the spoken sentence
    expect_empty_text: bool = False


def audio_file(make: Callable[[], bytes], filename: str = "audio.wav") -> Callable[[], list]:
    return lambda: [("file", (filename, make()))]


GOOD = audio_file(lambda: encode(speech(), "wav"))
ACCESS_DENIED = "Access denied due to invalid subscription key"
NOT_AUDIO = "Supported formats: flac, m4a, mp3"

CORPUS = [
    Case("empty file", 400, "file", audio_file(lambda: b"")),
    Case("text renamed .wav", 400, "file", audio_file(lambda: "こんにちは, not audio\n".encode() * 50),
         message=NOT_AUDIO),
    Case("png renamed .wav", 400, "file", audio_file(lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)),
    Case("riff header only", 400, "file", audio_file(lambda: wav(speech())[:44])),
    Case("truncated wav", 200, None, audio_file(lambda: truncated(wav(speech()), 0.9))),
    Case("truncated flac", 200, None, audio_file(lambda: truncated(encode(speech(), "flac"), 0.9), "a.flac")),
    Case("truncated mp3", 200, None, audio_file(lambda: truncated(encode(speech(), "mp3"), 0.9), "a.mp3")),
    Case("truncated ogg", 200, None, audio_file(lambda: truncated(encode(speech(), "ogg"), 0.9), "a.ogg")),
    Case("wav header lies about its length", 200, None, audio_file(lying_wav_header), check_speech=True),
    Case("8 kHz wav", 200, None, audio_file(lambda: wav(speech(8000), 8000)), check_speech=True),
    Case("44.1 kHz wav", 200, None, audio_file(lambda: wav(speech(44100), 44100)), check_speech=True),
    Case("48 kHz wav", 200, None, audio_file(lambda: wav(speech(48000), 48000)), check_speech=True),
    Case("stereo wav", 200, None, audio_file(lambda: wav(speech(), channels=2)), check_speech=True),
    Case("6-channel wav", 200, None, audio_file(lambda: wav(speech(), channels=6)), check_speech=True),
    Case("8-bit wav", 200, None, audio_file(lambda: wav(speech(), subtype="PCM_U8")), check_speech=True),
    Case("24-bit wav", 200, None, audio_file(lambda: wav(speech(), subtype="PCM_24")), check_speech=True),
    Case("float wav", 200, None, audio_file(lambda: wav(speech(), subtype="FLOAT")), check_speech=True),
    Case("NaN and inf samples", 200, None, audio_file(with_non_finite_samples), check_speech=True),
    Case("1 ms of audio", 200, None, audio_file(lambda: wav(speech()[:16])), expect_empty_text=True),
    Case("30 s of silence", 200, None, audio_file(lambda: wav(silence(30.0))), expect_empty_text=True),
    Case("clipped noise", 200, None, audio_file(clipped_noise)),
    Case("longer than the maximum", 400, "file",
         audio_file(lambda: encode(silence(MAX_AUDIO_SECONDS + 5.0), "flac"), "long.flac")),
    Case("longer than the maximum, compressed", 400, "file",
         audio_file(lambda: encode(silence(MAX_AUDIO_SECONDS * 3.0), "mp3"), "long.mp3")),
    Case("wav header claiming 1 Hz", 400, "file", audio_file(lambda: wav_claiming_rate(1))),
    Case("wav header claiming 4 GHz", 400, "file", audio_file(lambda: wav_claiming_rate(4_000_000_000))),
    Case("missing file field", 400, "file", None, data={"language": "ja"}),
    Case("two file fields", 400, "file", lambda: GOOD() + GOOD()),
    Case("non-multipart json body", 400, "file", body=lambda: b'{"file": "audio.wav"}',
         headers={"api-key": API_KEY, "Content-Type": "application/json"}),
    Case("urlencoded body", 400, "file", body=lambda: b"file=abc&language=ja",
         headers={"api-key": API_KEY, "Content-Type": "application/x-www-form-urlencoded"}),
    Case("body over the limit", 413, "file", audio_file(lambda: b"\0" * (MAX_UPLOAD_MB * 1024 * 1024 + 200_000)),
         message="Maximum content size limit"),
    Case("invalid language", 400, "language", GOOD, data={"language": "xx-klingon"}),
    Case("temperature abc", 400, "temperature", GOOD, data={"temperature": "abc"}),
    Case("temperature -1", 400, "temperature", GOOD, data={"temperature": "-1"}),
    Case("temperature 2", 400, "temperature", GOOD, data={"temperature": "2"}),
    Case("temperature nan", 400, "temperature", GOOD, data={"temperature": "nan"}),
    Case("response_format xml", 400, "response_format", GOOD, data={"response_format": "xml"}),
    Case("bad timestamp_granularities", 400, "timestamp_granularities", GOOD,
         data={"timestamp_granularities[]": "sentence", "response_format": "verbose_json"}),
    Case("over-long prompt", 400, "prompt", GOOD, data={"prompt": "あ" * 5000}),
    # over the form parser's own 500 kB field limit, under the body limit: still a 400 naming it
    Case("prompt of 510,000 characters", 400, "prompt", GOOD, data={"prompt": "a" * 510_000}),
    Case("language of 600,000 characters", 400, "language", GOOD, data={"language": "j" * 600_000}),
    Case("unknown field of 600,000 characters", 400, "notes", GOOD, data={"notes": "n" * 600_000}),
    Case("model field of 2,000 characters", 400, "model", GOOD, data={"model": "m" * 2_000}),
    Case("filename with path separators", 200, None, audio_file(lambda: encode(speech(), "wav"), "../../etc/passwd"),
         check_speech=True),
    Case("filename with control characters", 200, None,
         audio_file(lambda: encode(speech(), "wav"), "a\x00b\x1b[31m\r\n.wav"), check_speech=True),
    Case("unknown deployment", 404, None, GOOD, code="DeploymentNotFound",
         path=f"/openai/deployments/nope/audio/transcriptions?api-version={API_VERSION}"),
    Case("missing api-version", 404, None, GOOD, message="Resource not found",
         path="/openai/deployments/whisper/audio/transcriptions"),
    Case("unknown route", 404, None, GOOD, path="/nope"),
    Case("wrong api key", 401, None, GOOD, code="401", message=ACCESS_DENIED, headers={"api-key": "wrong"}),
    Case("missing api key", 401, None, GOOD, code="401", message=ACCESS_DENIED, headers={}),
    Case("empty api key", 401, None, GOOD, code="401", message=ACCESS_DENIED, headers={"api-key": ""}),
    Case("huge api key", 401, None, GOOD, code="401", headers={"api-key": "k" * 100_000}),
    Case("header too large for the server", 431, None, GOOD, headers={"api-key": "k" * 300_000}),
]


def send(server: str, case: Case) -> requests.Response:
    headers = {"api-key": API_KEY} if case.headers is None else case.headers
    if case.body is not None:
        return requests.post(server + case.path, data=case.body(), headers=headers, timeout=120)
    files = case.files() if case.files else None
    return requests.post(server + case.path, files=files, data=case.data, headers=headers, timeout=120)


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_bad_input_gets_the_right_answer(server, case):
    response = send(server, case)
    assert response.status_code == case.status, response.text[:500]
    assert "Traceback" not in response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    if case.status >= 400:
        error = body["error"]
        assert error["code"] == (case.code or error["code"]) and error["message"]
        assert case.message is None or case.message in error["message"], error["message"]
        if case.param:
            assert error["param"] == case.param
        if case.status == 400:
            assert error["type"] == "invalid_request_error"
        return
    if case.check_speech:
        assert character_error_rate(SENTENCE, body["text"]) <= 0.35, body["text"]
    if case.expect_empty_text:
        assert body["text"] == ""


def raw_request(server: str, head: str, body: bytes = b"", read_timeout: float = 30.0) -> bytes:
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as connection:
        connection.sendall(head.encode("latin-1") + body)
        chunks = []
        while True:
            try:
                chunk = connection.recv(65536)
            except (socket.timeout, ConnectionResetError):  # a reset after unread bytes ends the answer
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_content_length_over_the_limit_is_refused_before_the_body_is_sent(server):
    head = (f"POST {PATH} HTTP/1.1\r\nHost: x\r\napi-key: {API_KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n")
    answer = raw_request(server, head)  # no body follows: the server must not wait for it
    assert answer.startswith(b"HTTP/1.1 413")
    assert b'"Maximum content size limit' in answer


def test_content_length_shorter_than_the_body_is_a_400(server):
    multipart = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
                 + encode(speech(), "wav") + b"\r\n--b--\r\n")
    head = (f"POST {PATH} HTTP/1.1\r\nHost: x\r\napi-key: {API_KEY}\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 200\r\n\r\n")
    answer = raw_request(server, head, multipart)
    # Waitress answers the 200 bytes it was promised and drops the rest; the answer may be lost
    # to the TCP reset that unread bytes cause, but it is never a success or a server error.
    assert not answer or answer.startswith(b"HTTP/1.1 400")
    assert b"Traceback" not in answer
    assert requests.get(f"{server}/health", timeout=10).status_code == 200


def test_non_utf8_prompt_is_a_400_naming_the_prompt(server):
    multipart = (b"--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n\xff\xfe\xfa bad\r\n"
                 b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
                 + encode(speech(), "wav") + b"\r\n--b--\r\n")
    response = requests.post(server + PATH, data=multipart, timeout=120, headers={
        "api-key": API_KEY, "Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "prompt"


def test_server_still_serves_after_the_corpus(server):
    for case in CORPUS[:5]:
        send(server, case)
    assert requests.get(f"{server}/health", timeout=10).json()["status"] == "ok"
    response = send(server, Case("good", 200, files=GOOD, data={"language": "ja"}))
    assert character_error_rate(SENTENCE, response.json()["text"]) <= 0.35
