"""A transcription or translation request's form -> one typed `TranscriptionRequest`, every field
validated here (a 400 in Azure's envelope naming the field) and nowhere else."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import FileStorage, MultiDict

from . import known_speakers
from .audio import SUPPORTED_FORMATS, AudioDecodeError, AudioTooLong, decode
from .config import DeploymentSettings, Settings
from .errors import ApiError, deployment_not_found, invalid_field
from .formats import RESPONSE_FORMATS, OutputOptions
from .languages import normalize_language
from .transcript import SpeechOptions, TranscriptionJob

TRANSCRIBE = "transcribe"
TRANSLATE = "translate"
GRANULARITIES = {"segment", "word"}
INCLUDABLE = {"logprobs"}
MAX_PROMPT_CHARACTERS = 4000
# Every other text field holds a name, a code or a number.
MAX_FIELD_CHARACTERS = 1000
# the fields that may be longer: a prompt, and a known speaker's reference clip (a data URL)
FIELD_CHARACTER_LIMITS = {"prompt": MAX_PROMPT_CHARACTERS, known_speakers.REFERENCES: known_speakers.MAX_FORM_FIELD_BYTES}
TRUE_WORDS, FALSE_WORDS = {"true", "1", "yes", "on"}, {"false", "0", "no", "off", ""}
# chunking_strategy server_vad keys -> our speech detection options, with the ranges [model] allows
SERVER_VAD_KEYS = {
    "threshold": ("threshold", float, 0.01, 0.99),
    "silence_duration_ms": ("min_silence_ms", int, 0, 10000),
    "prefix_padding_ms": ("speech_pad_ms", int, 0, 2000),
}


@dataclass(frozen=True)
class TranscriptionRequest:
    job: TranscriptionJob
    response_format: str
    stream: bool
    output: OutputOptions


def read_request(form: MultiDict, uploads: list[FileStorage], mimetype: str, deployment: DeploymentSettings,
                 task: str, settings: Settings) -> TranscriptionRequest:
    """Every field of the form checked; the audio decoded last (it is the costly one)."""
    response_format = read_response_format(form, task)
    granularities = read_granularities(form, response_format, task)
    diarize = read_diarize(form, response_format, deployment)
    include = read_include(form, response_format)
    stream = read_stream(form)
    upload = read_upload(uploads, mimetype)
    # translations take no language field (the hosted service ignores one): Whisper detects it
    language = read_language(form, deployment) if task == TRANSCRIBE else None
    temperature = read_temperature(form, deployment)
    prompt = read_prompt(form, deployment)
    speech = read_chunking_strategy(form)
    try:
        audio = decode(upload.read(), max_seconds=settings.model.max_audio_seconds)
    except AudioTooLong as error:
        raise invalid_field("file", str(error)) from None
    except AudioDecodeError as error:
        raise invalid_field(
            "file",
            f"Invalid file format: {error}. Supported formats: {', '.join(SUPPORTED_FORMATS)}.",
        ) from None
    job = TranscriptionJob(
        samples=audio.samples, task=task, language=language, prompt=prompt, temperature=temperature,
        # speakers change inside a segment where its words say so
        word_timestamps="word" in granularities or (diarize and task == TRANSCRIBE),
        logprobs="logprobs" in include, speech=speech, diarize=diarize,
        known_speakers=known_speakers.read_known_speakers(form) if diarize else (),
    )
    output = OutputOptions(
        include_segments=not granularities or "segment" in granularities,
        include_words="word" in granularities, include_logprobs="logprobs" in include,
    )
    return TranscriptionRequest(job, response_format, stream, output)


def find_deployment(name: str, settings: Settings) -> DeploymentSettings:
    deployment = settings.deployments.get(name)
    if deployment is None:
        raise deployment_not_found()
    return deployment


def deployment_from_model_field(form: MultiDict, settings: Settings, openai_style: bool) -> DeploymentSettings:
    """Azure's v1 surface and OpenAI's own: the `model` field names the deployment."""
    name = form.get("model", "").strip()
    if not name:
        raise invalid_field("model", "The 'model' field is required: it names the deployment.")
    deployment = settings.deployments.get(name)
    if deployment is None:
        if openai_style:
            raise ApiError(
                404, "model_not_found", f"The model `{name[:100]}` does not exist or you do not have access to it.",
                param="model",
            )
        raise deployment_not_found()
    return deployment


def listed(form: MultiDict, name: str) -> list[str]:
    """A list field: the SDKs repeat the bracketed name (`include[]`), curl users the plain one."""
    return [value.strip() for value in form.getlist(f"{name}[]") + form.getlist(name) if value.strip()]


def check_field_lengths(form: MultiDict) -> None:
    """An oversized text field is a 400 naming it, whichever field it is."""
    for name, value in form.items(multi=True):
        name = name or ""  # a part whose name the parser could not read
        limit = FIELD_CHARACTER_LIMITS.get(name.removesuffix("[]"), MAX_FIELD_CHARACTERS)
        if len(value) > limit:
            raise invalid_field(name[:100], f"The '{name[:100]}' field is too long: at most {limit} characters.")


def read_response_format(form: MultiDict, task: str = TRANSCRIBE) -> str:
    value = form.get("response_format", "json").strip() or "json"
    if value not in RESPONSE_FORMATS:
        raise invalid_field(
            "response_format", f"Invalid response_format {value[:40]!r}: use one of {', '.join(RESPONSE_FORMATS)}."
        )
    if value == "diarized_json" and task != TRANSCRIBE:
        raise invalid_field("response_format", "response_format 'diarized_json' is for transcriptions, not translations.")
    return value


def read_diarize(form: MultiDict, response_format: str, deployment: DeploymentSettings) -> bool:
    """diarized_json always names speakers; srt and vtt do on a deployment with `diarize = true`."""
    diarize = response_format == "diarized_json" or (deployment.diarize and response_format in ("srt", "vtt"))
    if known_speakers.sent(form) and not diarize:
        raise invalid_field(
            known_speakers.NAMES,
            "known_speaker_names[] and known_speaker_references[] need response_format 'diarized_json' "
            "(or srt/vtt on a deployment with diarize = true).",
        )
    return diarize


def read_granularities(form: MultiDict, response_format: str, task: str) -> set[str]:
    """timestamp_granularities[]: segment and/or word."""
    granularities = set(listed(form, "timestamp_granularities"))
    unknown = granularities - GRANULARITIES
    if unknown:
        raise invalid_field(
            "timestamp_granularities",
            f"Invalid timestamp_granularities {sorted(unknown)[0][:40]!r}: use 'segment' and/or 'word'.",
        )
    if granularities and response_format != "verbose_json":
        # as the hosted service: granularities only come with verbose_json
        raise invalid_field(
            "timestamp_granularities", "timestamp_granularities requires response_format 'verbose_json'."
        )
    return granularities if task == TRANSCRIBE else set()


def read_include(form: MultiDict, response_format: str) -> set[str]:
    """include[]: `logprobs`, which OpenAI returns with response_format json only."""
    include = set(listed(form, "include"))
    unknown = include - INCLUDABLE
    if unknown:
        raise invalid_field("include", f"Invalid include {sorted(unknown)[0][:40]!r}: the one value is 'logprobs'.")
    if include and response_format != "json":
        raise invalid_field("include", "include[]=logprobs requires response_format 'json'.")
    return include


def read_stream(form: MultiDict) -> bool:
    value = form.get("stream", "").strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise invalid_field("stream", f"Invalid stream {value[:40]!r}: use true or false.")


def read_language(form: MultiDict, deployment: DeploymentSettings) -> str | None:
    value = form.get("language", "").strip()
    if not value:
        return deployment.language
    code = normalize_language(value)
    if code is None:
        raise invalid_field("language", f"Invalid language {value[:40]!r}: use an ISO-639-1 code such as 'ja' or 'en'.")
    return code


def read_temperature(form: MultiDict, deployment: DeploymentSettings) -> float:
    value = form.get("temperature", "").strip()
    if not value:
        return deployment.temperature or 0.0
    try:
        temperature = float(value)
    except ValueError:
        temperature = float("nan")
    if not 0.0 <= temperature <= 1.0:
        raise invalid_field("temperature", f"Invalid temperature {value[:40]!r}: use a number from 0 to 1.")
    return temperature


def read_prompt(form: MultiDict, deployment: DeploymentSettings) -> str | None:
    value = form.get("prompt", "")  # its length is checked with every field's (check_field_lengths)
    if "\ufffd" in value:  # the form parser replaces bytes that are not UTF-8
        raise invalid_field("prompt", "The prompt is not valid UTF-8 text.")
    return value.strip() or deployment.prompt


def read_chunking_strategy(form: MultiDict) -> SpeechOptions:
    """`auto` (our speech detection as configured) or a server_vad object, sent as JSON text
    (`chunking_strategy={"type": "server_vad", ...}`) or, as the SDKs flatten it, as bracketed
    fields (`chunking_strategy[type]=server_vad`, `chunking_strategy[threshold]=0.4`)."""
    value = form.get("chunking_strategy", "").strip()
    nested = {key[len("chunking_strategy[") : -1]: form.get(key, "").strip() for key in form
              if key and key.startswith("chunking_strategy[") and key.endswith("]")}
    if nested:
        if value:
            raise invalid_field("chunking_strategy", "Send chunking_strategy either as one field or as its keys, not both.")
        return server_vad_options(nested)
    if not value or value == "auto":
        return SpeechOptions()
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise invalid_field(
            "chunking_strategy",
            f"Invalid chunking_strategy {value[:40]!r}: use 'auto' or an object with \"type\": \"server_vad\".",
        )
    return server_vad_options(parsed)


def server_vad_options(fields: dict[str, Any]) -> SpeechOptions:
    kind = fields.get("type")
    if kind != "server_vad":
        raise invalid_field("chunking_strategy", f"Invalid chunking_strategy type {str(kind)[:40]!r}: use 'server_vad'.")
    unknown = sorted(set(fields) - set(SERVER_VAD_KEYS) - {"type"})
    if unknown:
        raise invalid_field(
            "chunking_strategy",
            f"Unknown chunking_strategy key {unknown[0][:40]!r}: use {', '.join(SERVER_VAD_KEYS)}.",
        )
    options: dict[str, float | int] = {}
    for key, (option, kind_of_number, low, high) in SERVER_VAD_KEYS.items():
        raw = fields.get(key)
        if raw is None or raw == "":
            continue
        options[option] = vad_number(key, raw, kind_of_number, low, high)
    return SpeechOptions(**options)


def vad_number(key: str, raw: Any, kind_of_number: type, low: float, high: float) -> float | int:
    problem = f"Invalid chunking_strategy {key} {str(raw)[:40]!r}: use a number from {low} to {high}."
    if isinstance(raw, bool):
        raise invalid_field("chunking_strategy", problem)
    try:
        number = float(raw)
    except (TypeError, ValueError):
        raise invalid_field("chunking_strategy", problem) from None
    if not math.isfinite(number) or not low <= number <= high:
        raise invalid_field("chunking_strategy", problem)
    if kind_of_number is int:
        if number != int(number):
            raise invalid_field("chunking_strategy", f"Invalid chunking_strategy {key} {str(raw)[:40]!r}: use whole milliseconds.")
        return int(number)
    return number


def read_upload(uploads: list[FileStorage], mimetype: str) -> FileStorage:
    if not uploads:
        if mimetype != "multipart/form-data":
            raise invalid_field("file", "The request must be multipart/form-data with the audio in the 'file' field.")
        raise invalid_field("file", "The 'file' field is required.")
    if len(uploads) > 1:
        raise invalid_field("file", "Send exactly one 'file' field.")
    return uploads[0]
