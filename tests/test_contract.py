"""Every route x response format x granularity, read by the real `openai` SDK clients.

The Azure client talks to /openai/deployments/..., the plain OpenAI client to Azure's
/openai/v1 surface and to OpenAI's own /v1 routes; each response must parse into the SDK's
typed objects, with sane fields.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import openai
import pytest
import requests
import srt
import webvtt

from tests.conftest import API_KEY, API_VERSION
from tests.support.speech import JAPANESE_SENTENCES, character_error_rate, encode, japanese_speech

SENTENCE = JAPANESE_SENTENCES[3]
SURFACES = ("azure-deployments", "azure-v1", "openai-v1")
TRANSCRIPTION_CASES = [
    ("json", None), ("text", None), ("srt", None), ("vtt", None),
    ("verbose_json", None), ("verbose_json", ["segment"]), ("verbose_json", ["word"]),
    ("verbose_json", ["segment", "word"]),
]
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


@pytest.fixture(scope="module")
def speech() -> tuple[str, bytes, float]:
    samples = japanese_speech(SENTENCE)
    return SENTENCE, encode(samples, "wav"), len(samples) / 16000


def client_for(surface: str, live_server: str, key: str = API_KEY) -> openai.OpenAI:
    if surface == "azure-deployments":
        return openai.AzureOpenAI(azure_endpoint=live_server, api_key=key, api_version=API_VERSION, max_retries=0)
    base = f"{live_server}/openai/v1/" if surface == "azure-v1" else f"{live_server}/v1"
    return openai.OpenAI(base_url=base, api_key=key, max_retries=0)


def text_of(result, response_format: str) -> str:
    if response_format in ("json", "verbose_json"):
        return result.text
    assert isinstance(result, str)
    if response_format == "srt":
        cues = list(srt.parse(result))
        assert [cue.index for cue in cues] == list(range(1, len(cues) + 1))
        assert all(cue.start < cue.end for cue in cues)
        return "".join(cue.content for cue in cues)
    if response_format == "vtt":
        captions = list(webvtt.from_buffer(io.StringIO(result)))
        assert all(caption.start_in_seconds < caption.end_in_seconds for caption in captions)
        return "".join(caption.text for caption in captions)
    return result


def check_verbose(result, duration: float, granularities: list[str] | None, task: str) -> None:
    assert isinstance(result, (openai.types.audio.TranscriptionVerbose, openai.types.audio.TranslationVerbose))
    assert result.duration == pytest.approx(duration, abs=0.01)
    assert result.language == ("english" if task == "translate" else "japanese")
    wants_segments = not granularities or "segment" in granularities
    if wants_segments:
        assert result.segments
        starts = [segment.start for segment in result.segments]
        assert starts == sorted(starts)
        for segment in result.segments:
            assert 0 <= segment.start <= segment.end <= duration + 0.01
            assert isinstance(segment.tokens, list) and isinstance(segment.avg_logprob, float)
    else:
        assert not result.segments
    if granularities and "word" in granularities:
        assert result.words
        assert "".join(word.word for word in result.words) in result.text.replace(" ", "")
        for word in result.words:
            assert 0 <= word.start <= word.end <= duration + 0.01
            assert "\ufffd" not in word.word  # no multi-byte character split across words
            if wants_segments:
                assert any(s.start - 0.01 <= word.start and word.end <= s.end + 0.01 for s in result.segments)
        assert [word.start for word in result.words] == sorted(word.start for word in result.words)
    else:
        assert not getattr(result, "words", None)


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(("response_format", "granularities"), TRANSCRIPTION_CASES)
def test_transcriptions_parse_into_sdk_types(live_server, speech, surface, response_format, granularities):
    sentence, audio, duration = speech
    extra = {"timestamp_granularities": granularities} if granularities else {}
    result = client_for(surface, live_server).audio.transcriptions.create(
        model="whisper", file=("speech.wav", audio), language="ja", response_format=response_format, **extra
    )
    assert character_error_rate(sentence, text_of(result, response_format)) <= 0.35
    if response_format == "verbose_json":
        check_verbose(result, duration, granularities, "transcribe")


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("response_format", FORMATS)
def test_translations_parse_into_sdk_types(live_server, speech, surface, response_format):
    _, audio, duration = speech
    result = client_for(surface, live_server).audio.translations.create(
        model="whisper", file=("speech.wav", audio), response_format=response_format
    )
    text = text_of(result, response_format)
    assert text.strip() and text.isascii(), text  # English, not the Japanese that was spoken
    if response_format == "verbose_json":
        assert result.task == "translate"
        check_verbose(result, duration, None, "translate")


@pytest.mark.parametrize(
    ("path", "version"),
    [("/openai/deployments/whisper/audio/transcriptions", version) for version in
     ("2024-02-01", "2024-06-01", "2024-10-21", "2025-04-01-preview")]
    + [("/openai/v1/audio/transcriptions", None)],
)
def test_api_versions_clients_send_are_accepted(live_server, speech, path, version):
    query = f"?api-version={version}" if version else ""
    response = requests.post(
        f"{live_server}{path}{query}", headers={"api-key": API_KEY},
        files={"file": ("a.wav", speech[1])}, data={"model": "whisper", "language": "ja"}, timeout=120,
    )
    assert response.status_code == 200, response.text


def test_prompt_conditions_decoding(live_server, speech):
    sentence = JAPANESE_SENTENCES[1]  # "行き方" is easily misheard; the prompt spells it
    client = client_for("azure-deployments", live_server)
    result = client.audio.transcriptions.create(
        model="whisper", file=("a.wav", encode(japanese_speech(sentence), "wav")), language="ja",
        prompt="行き方を教えて",
    )
    assert "行き方" in result.text


def test_temperature_is_honoured(live_server, speech):
    result = client_for("azure-deployments", live_server).audio.transcriptions.create(
        model="whisper", file=("a.wav", speech[1]), language="ja", response_format="verbose_json", temperature=1.0
    )
    assert result.segments and all(segment.temperature == 1.0 for segment in result.segments)


def test_unknown_fields_are_ignored(live_server, speech):
    response = requests.post(
        f"{live_server}/v1/audio/transcriptions", headers={"Authorization": f"Bearer {API_KEY}"},
        files={"file": ("a.wav", speech[1])},
        data={"model": "whisper", "language": "ja", "chunking_strategy": "auto", "stream": "false", "x": "y"},
        timeout=120,
    )
    assert response.status_code == 200


def test_deployments_and_models_are_listed(live_server):
    headers = {"api-key": API_KEY}
    deployments = requests.get(f"{live_server}/openai/deployments?api-version={API_VERSION}", headers=headers).json()
    assert {item["id"] for item in deployments["data"]} == {"whisper", "whisper-ja"}
    models = client_for("openai-v1", live_server).models.list()
    assert {model.id for model in models} == {"whisper", "whisper-ja"}
    assert {model.id for model in client_for("azure-v1", live_server).models.list()} == {"whisper", "whisper-ja"}


@dataclass(frozen=True)
class SdkError:
    """A request the server refuses, and what the SDK must raise for it."""

    exception: type[openai.APIStatusError]
    status: int
    fields: dict = field(default_factory=dict)
    param: str | None = None
    message: str | None = None  # a part of the exception's message
    key: str = API_KEY
    model: str = "whisper"
    upload: tuple[str, bytes] | None = None  # instead of the speech


SDK_ERRORS = {
    "wrong key": SdkError(openai.AuthenticationError, 401, key="wrong"),
    "unknown deployment": SdkError(openai.NotFoundError, 404, model="nope"),
    "unknown language": SdkError(openai.BadRequestError, 400, {"language": "klingon"}, "language"),
    "language whisper lacks": SdkError(openai.BadRequestError, 400, {"language": "yue"}, "language"),
    "unknown format": SdkError(openai.BadRequestError, 400, {"response_format": "xml"}, "response_format"),
    "words without verbose_json": SdkError(openai.BadRequestError, 400, {
        "timestamp_granularities": ["word"], "response_format": "json"}, "timestamp_granularities"),
    "not audio": SdkError(openai.BadRequestError, 400, param="file", message="webm",
                          upload=("notes.txt", b"plain text, not audio" * 20)),
    "over the upload limit": SdkError(openai.APIStatusError, 413, message="Maximum content size limit (2097152) exceeded",
                                      upload=("big.wav", b"\0" * (3 * 1024 * 1024))),
}


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("case", SDK_ERRORS.values(), ids=SDK_ERRORS.keys())
def test_error_bodies_parse_into_sdk_exceptions(live_server, speech, surface, case):
    client = client_for(surface, live_server, key=case.key)
    with pytest.raises(case.exception) as raised:
        client.audio.transcriptions.create(model=case.model, file=case.upload or ("a.wav", speech[1]), **case.fields)
    assert raised.value.status_code == case.status
    assert case.param is None or raised.value.param == case.param
    assert case.message is None or case.message in raised.value.message
    if case.status == 401:
        assert raised.value.code == "401"
    if case.status == 404:
        assert raised.value.code == ("model_not_found" if surface == "openai-v1" else "DeploymentNotFound")
