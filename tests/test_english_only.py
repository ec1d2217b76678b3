"""English-only checkpoints (tiny.en ... medium.en, distil .en) on the real tiny.en weights: they
load, transcribe English with <|startoftranscript|> alone as the prefix, and refuse other languages
and translation with a clear 400 through a live server; /health and the model list say so."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import API_KEY, API_VERSION, make_settings
from tests.support.live_server import serve_in_thread
from tests.support.recordings import FIXTURES, reference_transcript
from tests.support.speech import word_error_rate
from tests.support.whisper_checkpoint import ensure_whisper_tiny_en
from whisper_api import create_app
from whisper_api.audio import decode
from whisper_api.config import ModelSettings
from whisper_api.engine import Engine
from whisper_api.transcript import TranscriptionJob

HEADERS = {"api-key": API_KEY}


@pytest.fixture(scope="module")
def english_engine() -> Engine:
    # the warm-up runs as at start-up: on an English-only model it transcribes the English clip
    settings = ModelSettings(name=str(ensure_whisper_tiny_en()), device="cpu", dtype="float32", warmup=True)
    return Engine.load(settings)


@pytest.fixture(scope="module")
def english_server(english_engine: Engine):
    settings = make_settings(english_engine.settings)
    with serve_in_thread(create_app(settings, engine=english_engine)) as url:
        yield url


def test_an_english_only_model_loads_and_says_so(english_engine):
    assert english_engine.model.english_only
    assert english_engine.info.english_only
    assert english_engine.supported_languages == {"en"}


@pytest.mark.parametrize("strategy", ["vad", "sequential"])
def test_english_speech_is_transcribed_without_language_or_task_tokens(english_engine, strategy):
    audio = decode((FIXTURES / "en_jfk.wav").read_bytes())
    engine = english_engine.with_settings(strategy=strategy, beam_size=2 if strategy == "sequential" else 1)
    transcript = engine.transcribe(TranscriptionJob(samples=audio.samples, word_timestamps=True))
    assert transcript.language == "en"
    assert word_error_rate(reference_transcript("en_jfk.wav"), transcript.text) <= 0.1, transcript.text
    assert all(segment.words for segment in transcript.segments)


def test_health_and_model_list_say_english_only(english_server):
    assert requests.get(f"{english_server}/health", timeout=10).json()["english_only"] is True
    models = requests.get(f"{english_server}/v1/models", headers=HEADERS, timeout=10).json()["data"]
    assert models and all(model["english_only"] is True for model in models)


def post(url: str, path: str, **fields):
    with open(FIXTURES / "en_jfk.mp3", "rb") as audio:
        return requests.post(f"{url}{path}?api-version={API_VERSION}", headers=HEADERS,
                             files={"file": ("jfk.mp3", audio, "audio/mpeg")}, data=fields, timeout=120)


def test_english_is_transcribed_through_the_server(english_server):
    response = post(english_server, "/openai/deployments/whisper/audio/transcriptions", language="en")
    assert response.status_code == 200, response.text
    assert "fellow americans" in response.json()["text"].lower()


@pytest.mark.parametrize("language", ["ja", "fr"])
def test_another_language_is_a_400_naming_the_field(english_server, language):
    response = post(english_server, "/openai/deployments/whisper/audio/transcriptions", language=language)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "language" and "English-only" in error["message"]


def test_translation_is_a_400_naming_the_model(english_server):
    response = post(english_server, "/openai/deployments/whisper/audio/translations")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "model" and "cannot translate" in error["message"]
    assert requests.get(f"{english_server}/health", timeout=10).status_code == 200  # still serving
