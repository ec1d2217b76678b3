"""A failure inside inference costs only that request: 500 envelope, the model freed, next one fine."""

from __future__ import annotations

import pytest
import requests
import torch

from tests.conftest import API_KEY, API_VERSION
from tests.support.speech import JAPANESE_SENTENCES, character_error_rate, encode, japanese_speech

PATH = f"/openai/deployments/whisper/audio/transcriptions?api-version={API_VERSION}"
SENTENCE = JAPANESE_SENTENCES[4]


def post(url: str) -> requests.Response:
    audio = encode(japanese_speech(SENTENCE), "wav")
    return requests.post(url + PATH, headers={"api-key": API_KEY}, files={"file": ("a.wav", audio)},
                         data={"language": "ja"}, timeout=120)


@pytest.mark.parametrize(
    "fault",
    [RuntimeError("injected failure inside decoding"), torch.OutOfMemoryError("injected: out of memory")],
    ids=["exception", "out-of-memory"],
)
def test_fault_inside_inference_gives_500_and_the_next_request_succeeds(live_server, engine, monkeypatch, fault):
    decoder = engine.decoder
    real_decode = decoder.submit_rows  # a batch's first pass
    calls = []

    def failing_once(*arguments, **keywords):
        calls.append(1)
        if len(calls) == 1:
            raise fault
        return real_decode(*arguments, **keywords)

    monkeypatch.setattr(decoder, "submit_rows", failing_once)
    failed = post(live_server)
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert error["type"] == "server_error"
    assert "injected" not in failed.text and "Traceback" not in failed.text
    assert not engine.queue.busy(), "the model lock was not released"

    recovered = post(live_server)
    assert recovered.status_code == 200
    assert character_error_rate(SENTENCE, recovered.json()["text"]) <= 0.35
