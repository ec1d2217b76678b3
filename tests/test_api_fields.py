"""The 2025 API fields: include[]=logprobs returns each text token's log probability, and
chunking_strategy maps onto the request's own speech detection."""

from __future__ import annotations

import json

import openai
import pytest
import requests
from werkzeug.datastructures import MultiDict

from tests.conftest import API_KEY
from tests.support.speech import JAPANESE_SENTENCES, concatenate, encode, japanese_speech
from whisper_api.errors import ApiError
from whisper_api.request_form import read_chunking_strategy
from whisper_api.transcript import SpeechOptions, TranscriptionJob

SENTENCE = JAPANESE_SENTENCES[3]


@pytest.fixture(scope="module")
def speech() -> bytes:
    return encode(japanese_speech(SENTENCE), "wav")


@pytest.mark.model
def test_logprobs_cover_the_text_token_by_token(live_server, speech):
    client = openai.OpenAI(base_url=f"{live_server}/v1", api_key=API_KEY, max_retries=0)
    result = client.audio.transcriptions.create(model="whisper", file=("a.wav", speech), language="ja",
                                                include=["logprobs"])
    assert result.logprobs
    spoken = bytes(int(byte) for entry in result.logprobs for byte in entry.bytes).decode("utf-8")
    assert spoken.strip() == result.text
    assert all(entry.logprob <= 0 for entry in result.logprobs)
    assert all(entry.token == bytes(int(b) for b in entry.bytes).decode("utf-8", errors="replace")
               for entry in result.logprobs)
    assert -5 < sum(entry.logprob for entry in result.logprobs) / len(result.logprobs) <= 0


@pytest.mark.model
def test_streamed_logprobs_match_the_plain_answer(live_server, speech):
    fields = {"model": "whisper", "language": "ja", "include[]": "logprobs"}
    plain = requests.post(f"{live_server}/v1/audio/transcriptions", headers={"api-key": API_KEY},
                          files={"file": ("a.wav", speech)}, data=fields, timeout=120).json()
    streamed = requests.post(f"{live_server}/v1/audio/transcriptions", headers={"api-key": API_KEY},
                             files={"file": ("a.wav", speech)}, data={**fields, "stream": "true"}, timeout=120)
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["logprobs"] == plain["logprobs"]
    assert [entry for event in events[:-1] for entry in event["logprobs"]] == plain["logprobs"]


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, SpeechOptions()),
    ({"chunking_strategy": "auto"}, SpeechOptions()),
    ({"chunking_strategy": '{"type": "server_vad"}'}, SpeechOptions()),
    ({"chunking_strategy": '{"type": "server_vad", "threshold": 0.3, "silence_duration_ms": 800, '
                           '"prefix_padding_ms": 150}'}, SpeechOptions(0.3, 800, 150)),
    ({"chunking_strategy[type]": "server_vad", "chunking_strategy[silence_duration_ms]": "1200"},
     SpeechOptions(min_silence_ms=1200)),
])
def test_chunking_strategy_maps_onto_speech_options(fields, expected):
    assert read_chunking_strategy(MultiDict(fields)) == expected


@pytest.mark.parametrize("fields", [
    {"chunking_strategy": "semantic"},
    {"chunking_strategy": "[1, 2]"},
    {"chunking_strategy": '{"type": "server_vad", "threshold": true}'},
    {"chunking_strategy": '{"type": "server_vad", "threshold": 0}'},
    {"chunking_strategy": '{"type": "server_vad", "silence_duration_ms": 1e9}'},
    {"chunking_strategy": "auto", "chunking_strategy[type]": "server_vad"},
])
def test_malformed_chunking_strategy_names_the_field(fields):
    with pytest.raises(ApiError) as raised:
        read_chunking_strategy(MultiDict(fields))
    assert raised.value.status == 400 and raised.value.param == "chunking_strategy"


@pytest.mark.model
def test_request_speech_options_change_where_speech_is_cut(engine):
    """A long silence_duration_ms joins two sentences a 1.2 s pause apart into one region."""
    samples, _ = concatenate(japanese_speech(JAPANESE_SENTENCES[0]), japanese_speech(JAPANESE_SENTENCES[1]),
                             gap_seconds=1.2)
    clip = engine.long_form.clip
    _, default_regions, _ = clip.speech(TranscriptionJob(samples=samples))
    _, joined_regions, options = clip.speech(TranscriptionJob(samples=samples, speech=SpeechOptions(min_silence_ms=2000)))
    assert options.min_silence_ms == 2000
    assert len(default_regions) >= 2 and len(joined_regions) == 1
