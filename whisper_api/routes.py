"""The blueprint owning Azure's audio routes: form -> job -> engine -> formatter -> response."""

from __future__ import annotations

import hmac
import re
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.datastructures import FileStorage, MultiDict

from . import formats
from .audio import SUPPORTED_FORMATS, AudioDecodeError, decode
from .config import RESPONSE_FORMATS, DeploymentSettings, Settings
from .engine import Engine, UnsupportedLanguage
from .errors import ApiError, deployment_not_found, invalid_field, unauthorized
from .languages import normalize_language
from .transcript import Transcript, TranscriptionJob

blueprint = Blueprint("audio", __name__)

API_VERSION_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
MAX_PROMPT_CHARACTERS = 4000


def settings() -> Settings:
    return current_app.extensions["whisper_api.settings"]


def engine() -> Engine:
    return current_app.extensions["whisper_api.engine"]


@blueprint.get("/health")
def health() -> Response:
    info = engine().info
    return jsonify(
        status="ok",
        model=info.model,
        device=info.device,
        device_name=info.device_name,
        device_reason=info.device_reason,
        dtype=info.dtype,
        attention=info.attention,
        deployments=sorted(settings().deployments),
    )


@blueprint.post("/openai/deployments/<deployment>/audio/transcriptions")
def deployment_transcriptions(deployment: str) -> Response:
    return _serve(deployment, task="transcribe")


def _serve(deployment_name: str, task: str) -> Response:
    authenticate()
    check_api_version()
    deployment = find_deployment(deployment_name)
    form = request.form
    response_format = read_response_format(form)
    job = build_job(form, read_upload(), deployment, task)
    try:
        transcript = engine().transcribe(job)
    except UnsupportedLanguage as error:
        raise invalid_field("language", f"The model does not support language {error}.") from None
    return render(transcript, response_format)


def authenticate() -> None:
    """The key comes from `api-key` or `Authorization: Bearer`; compared in constant time."""
    key = request.headers.get("api-key", "")
    authorization = request.headers.get("Authorization", "")
    if not key and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    if not key:
        raise unauthorized()
    allowed = settings().auth.api_keys
    if not allowed:
        return
    presented = key.encode("utf-8", "surrogateescape")
    matches = [hmac.compare_digest(presented, candidate.encode("utf-8")) for candidate in allowed]
    if not any(matches):
        raise unauthorized()


def check_api_version() -> None:
    version = request.args.get("api-version")
    if version is None:
        if settings().server.require_api_version:
            raise ApiError(404, "404", "Resource not found")
        return
    if not API_VERSION_PATTERN.match(version):
        raise ApiError(
            400,
            "BadRequest",
            f"API version {version[:40]!r} is not supported; use a date such as 2024-06-01 or 2025-01-01-preview.",
            param="api-version",
        )


def find_deployment(name: str) -> DeploymentSettings:
    deployment = settings().deployments.get(name)
    if deployment is None:
        raise deployment_not_found()
    return deployment


def read_upload() -> FileStorage:
    uploads = request.files.getlist("file")
    if not uploads:
        if request.mimetype != "multipart/form-data":
            raise invalid_field("file", "The request must be multipart/form-data with the audio in the 'file' field.")
        raise invalid_field("file", "The 'file' field is required.")
    if len(uploads) > 1:
        raise invalid_field("file", "Send exactly one 'file' field.")
    return uploads[0]


def read_response_format(form: MultiDict) -> str:
    value = form.get("response_format", "json").strip() or "json"
    if value not in RESPONSE_FORMATS:
        raise invalid_field(
            "response_format", f"Invalid response_format {value[:40]!r}: use one of {', '.join(RESPONSE_FORMATS)}."
        )
    return value


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
    value = form.get("prompt", "")
    if len(value) > MAX_PROMPT_CHARACTERS:
        raise invalid_field("prompt", f"The prompt is too long: at most {MAX_PROMPT_CHARACTERS} characters.")
    return value.strip() or deployment.prompt


def build_job(form: MultiDict, upload: FileStorage, deployment: DeploymentSettings, task: str) -> TranscriptionJob:
    language = read_language(form, deployment)
    temperature = read_temperature(form, deployment)
    prompt = read_prompt(form, deployment)
    try:
        audio = decode(upload.read())
    except AudioDecodeError as error:
        raise invalid_field(
            "file",
            f"Invalid file format: {error}. Supported formats: {', '.join(SUPPORTED_FORMATS)}.",
        ) from None
    limit = current_app.extensions["whisper_api.settings"].model.max_audio_seconds
    if audio.duration > limit:
        raise invalid_field("file", f"The audio is {audio.duration:.0f} s long; this server accepts at most {limit:.0f} s.")
    return TranscriptionJob(
        samples=audio.samples, task=task, language=language, prompt=prompt, temperature=temperature
    )


def render(transcript: Transcript, response_format: str) -> Response:
    if response_format in formats.JSON_FORMATTERS:
        body: Any = formats.JSON_FORMATTERS[response_format](transcript)
        return jsonify(body)
    text = formats.TEXT_FORMATTERS[response_format](transcript)
    return Response(text, mimetype="text/plain", content_type="text/plain; charset=utf-8")
