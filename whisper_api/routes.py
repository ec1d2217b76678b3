"""The blueprint owning Azure's audio routes: form -> job -> engine -> formatter -> response."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.datastructures import FileStorage, MultiDict

from . import access_log, formats, known_speakers, memory, speakers
from .metrics import metrics
from .audio import SUPPORTED_FORMATS, AudioDecodeError, AudioTooLong, decode
from .config import RESPONSE_FORMATS, DeploymentSettings, Settings
from .cancellation import CLIENT_DISCONNECTED, Cancellation, JobCancelled
from .errors import (
    ApiError, client_closed_request, deployment_not_found, invalid_field, service_unavailable, too_many_requests,
    unauthorized,
)
from .languages import UnsupportedLanguage, UnsupportedTask, normalize_language
from .model_queue import QueueFull
from .progress import DIARIZING, ProgressBoard
from .shutdown import ShutdownState, ShuttingDown
from .transcript import Transcript, TranscriptionJob

if TYPE_CHECKING:  # routes never import torch; the engine arrives through the app
    from .engine import Engine

log = logging.getLogger(__name__)

blueprint = Blueprint("audio", __name__)

TRANSCRIBE = "transcribe"
TRANSLATE = "translate"
GRANULARITIES = {"segment", "word"}
API_VERSION_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
MAX_PROMPT_CHARACTERS = 4000
# Every other text field holds a name, a code or a number.
MAX_FIELD_CHARACTERS = 1000
# the fields that may be longer: a prompt, and a known speaker's reference clip (a data URL)
FIELD_CHARACTER_LIMITS = {"prompt": MAX_PROMPT_CHARACTERS, known_speakers.REFERENCES: known_speakers.MAX_FORM_FIELD_BYTES}


def settings() -> Settings:
    return current_app.extensions["whisper_api.settings"]


def engine() -> "Engine":
    return current_app.extensions["whisper_api.engine"]


def progress_board() -> ProgressBoard:
    return current_app.extensions["whisper_api.progress"]


def shutdown_state() -> ShutdownState:
    return current_app.extensions["whisper_api.shutdown"]


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
        english_only=info.english_only,
        deployments=sorted(settings().deployments),
    )


@blueprint.post("/openai/deployments/<deployment>/audio/transcriptions")
def deployment_transcriptions(deployment: str) -> Response:
    return serve_audio(lambda: find_deployment(deployment), TRANSCRIBE, api_version_required=True)


@blueprint.post("/openai/deployments/<deployment>/audio/translations")
def deployment_translations(deployment: str) -> Response:
    return serve_audio(lambda: find_deployment(deployment), TRANSLATE, api_version_required=True)


# Azure's v1 surface and OpenAI's own: the `model` form field names the deployment.
@blueprint.post("/openai/v1/audio/transcriptions")
def azure_v1_transcriptions() -> Response:
    return serve_audio(lambda: deployment_from_model_field(openai_style=False), TRANSCRIBE)


@blueprint.post("/openai/v1/audio/translations")
def azure_v1_translations() -> Response:
    return serve_audio(lambda: deployment_from_model_field(openai_style=False), TRANSLATE)


@blueprint.post("/v1/audio/transcriptions")
def openai_transcriptions() -> Response:
    return serve_audio(lambda: deployment_from_model_field(openai_style=True), TRANSCRIBE)


@blueprint.post("/v1/audio/translations")
def openai_translations() -> Response:
    return serve_audio(lambda: deployment_from_model_field(openai_style=True), TRANSLATE)


@blueprint.get("/v1/jobs/<request_id>")
def job_progress(request_id: str) -> Response:
    """How far the transcription sent with this x-request-id is (docs/api.md, Progress)."""
    authenticate()
    progress = progress_board().get(request_id)
    if progress is None:
        raise ApiError(404, "JobNotFound", "No transcription with this request id is running or recently finished.")
    return jsonify(progress)


@blueprint.get("/openai/deployments")
def list_deployments() -> Response:
    authenticate()
    check_api_version(required=True)
    info = engine().info
    data = [
        {"id": name, "object": "deployment", "model": info.model, "status": "succeeded", "owner": "organization",
         "scale_settings": {"scale_type": "standard"}, "english_only": info.english_only}
        for name in sorted(settings().deployments)
    ]
    return jsonify(object="list", data=data)


@blueprint.get("/openai/v1/models")
@blueprint.get("/v1/models")
def list_models() -> Response:
    authenticate()
    english_only = engine().info.english_only
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "whisper-api", "english_only": english_only}
        for name in sorted(settings().deployments)
    ]
    return jsonify(object="list", data=data)


def serve_audio(
    resolve_deployment: Callable[[], DeploymentSettings], task: str, api_version_required: bool = False
) -> Response:
    authenticate()
    check_api_version(required=api_version_required)
    check_field_lengths(request.form)
    deployment = resolve_deployment()
    access_log.note(deployment=deployment.name)
    form = request.form
    response_format = read_response_format(form, task)
    granularities = read_granularities(form, response_format, task)
    diarize = read_diarize(form, response_format, deployment)
    # speakers change inside a segment where its words say so
    word_timestamps = "word" in granularities or (diarize and task == TRANSCRIBE)
    job = build_job(form, read_upload(), deployment, task, word_timestamps=word_timestamps)
    if diarize:
        job = replace(job, diarize=True, known_speakers=known_speakers.read_known_speakers(form))
        speakers.speaker_model().get()  # a missing speaker model answers before the transcription runs
    access_log.note(audio_seconds=round(job.duration, 2))
    transcript = transcribe_with_progress(job, deployment)
    return render(transcript, response_format, include_segments=not granularities or "segment" in granularities)


def transcribe_with_progress(job: TranscriptionJob, deployment: DeploymentSettings) -> Transcript:
    """Run the job on the engine, its progress on the board under this request's id; a client that
    hangs up, or a shutdown, cancels it between decoding steps."""
    board = progress_board()
    if board.is_active(g.request_id):  # a client reused the id of a job still running: keep them apart
        g.request_id = str(uuid.uuid4())
    cancellation = job_cancellation()
    memory.note_job()
    succeeded = False
    try:
        with shutdown_state().job(cancellation):
            request_id = g.request_id
            reporter = board.start(request_id, deployment.name, job.duration)
            try:
                transcript = engine().transcribe(replace(
                    job, on_progress=reporter, on_start=lambda: board.mark_running(request_id),
                    cancellation=cancellation))
                if job.diarize:  # after the transcription, on the CPU: the model is free for the next job
                    board.set_stage(request_id, DIARIZING)
                    transcript, seconds = speakers.label_speakers(transcript, job)
                    metrics().observe_diarization(deployment.name, seconds)
                succeeded = True
                metrics().observe_model_time(deployment.name, transcript.model_seconds)
            finally:
                record = board.finish(g.request_id, succeeded)
                if record is not None and record.started is not None:
                    access_log.note(queue_seconds=round(record.queue_seconds, 3),
                                    processing_seconds=round(record.processing_seconds or 0.0, 3))
                if succeeded and record is not None:
                    metrics().observe_job(record)
    except UnsupportedLanguage as error:
        if error.english_only:
            raise invalid_field("language", f"The model {engine().info.model} is English-only: language "
                                f"{error.language!r} is not supported; send 'en' or leave language out.") from None
        raise invalid_field("language", f"The model does not support language {error}.") from None
    except UnsupportedTask:
        raise invalid_field("model", f"The model {engine().info.model} is English-only: it transcribes English "
                            "but cannot translate. Use a multilingual model for translations.") from None
    except QueueFull as error:
        metrics().observe_rejection(deployment.name)
        raise too_many_requests(deployment.name, error.retry_after_seconds) from None
    except ShuttingDown as error:
        raise shutting_down(error.retry_after_seconds) from None
    except JobCancelled as error:
        if error.reason == CLIENT_DISCONNECTED:
            log.info("request %s: the client closed the connection; its job was %s", g.request_id,
                     "stopped on the model" if cancellation.running else "taken out of the queue")
            raise client_closed_request("The client closed the connection before the transcription finished.") from None
        log.warning("request %s: answered 503, the server is shutting down (%s)", g.request_id,
                    "its job was stopped after the grace period" if cancellation.running else "it was still queued")
        raise shutting_down(shutdown_state().retry_after()) from None
    return transcript


def job_cancellation() -> Cancellation:
    """This request's job stops when Waitress sees its client hang up (it reads ahead on the
    connection while the job runs) or when the server shuts down."""
    disconnected = request.environ.get("waitress.client_disconnected")
    return Cancellation(((CLIENT_DISCONNECTED, disconnected),) if disconnected is not None else ())


def shutting_down(retry_after_seconds: int) -> ApiError:
    return service_unavailable("The server is shutting down and takes no new work; retry later.", retry_after_seconds)


def refuse_while_shutting_down() -> None:
    """Before every request: once a shutdown began, new requests get 503 with Retry-After."""
    state = shutdown_state()
    if state.draining:
        raise shutting_down(state.retry_after())


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


def is_loopback(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def refuse_remote_clients_without_keys() -> None:
    """Before every request: with no [auth] api_keys, only this PC may call the server (a
    `waitress-serve` on 0.0.0.0, or host = 0.0.0.0, must not open it to the whole network)."""
    if not settings().auth.api_keys and not is_loopback(request.remote_addr):
        raise ApiError(
            401, "401",
            "This server has no API keys configured ([auth] api_keys), so it only serves clients on its own "
            "PC. Set api_keys in its INI file and send one in the api-key header to call it from the network.",
        )


def check_api_version(required: bool) -> None:
    """Azure answers 404 without ?api-version= on the deployments routes; the v1 routes need none."""
    version = request.args.get("api-version")
    if version is None:
        if required and settings().server.require_api_version:
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


def deployment_from_model_field(openai_style: bool) -> DeploymentSettings:
    name = request.form.get("model", "").strip()
    if not name:
        raise invalid_field("model", "The 'model' field is required: it names the deployment.")
    deployment = settings().deployments.get(name)
    if deployment is None:
        if openai_style:
            raise ApiError(
                404, "model_not_found", f"The model `{name[:100]}` does not exist or you do not have access to it.",
                param="model",
            )
        raise deployment_not_found()
    return deployment


def check_field_lengths(form: MultiDict) -> None:
    """An oversized text field is a 400 naming it, whichever field it is."""
    for name, value in form.items(multi=True):
        limit = FIELD_CHARACTER_LIMITS.get(name.removesuffix("[]"), MAX_FIELD_CHARACTERS)
        if len(value) > limit:
            raise invalid_field(name[:100], f"The '{name[:100]}' field is too long: at most {limit} characters.")


def read_granularities(form: MultiDict, response_format: str, task: str) -> set[str]:
    """timestamp_granularities[] (the SDKs repeat the bracketed name): segment and/or word."""
    values = form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
    granularities = {value.strip() for value in values if value.strip()}
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


def read_upload() -> FileStorage:
    uploads = request.files.getlist("file")
    if not uploads:
        if request.mimetype != "multipart/form-data":
            raise invalid_field("file", "The request must be multipart/form-data with the audio in the 'file' field.")
        raise invalid_field("file", "The 'file' field is required.")
    if len(uploads) > 1:
        raise invalid_field("file", "Send exactly one 'file' field.")
    return uploads[0]


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


def build_job(
    form: MultiDict, upload: FileStorage, deployment: DeploymentSettings, task: str, word_timestamps: bool = False
) -> TranscriptionJob:
    # translations take no language field (the hosted service ignores one): Whisper detects it
    language = read_language(form, deployment) if task == TRANSCRIBE else None
    temperature = read_temperature(form, deployment)
    prompt = read_prompt(form, deployment)
    try:
        audio = decode(upload.read(), max_seconds=settings().model.max_audio_seconds)
    except AudioTooLong as error:
        raise invalid_field("file", str(error)) from None
    except AudioDecodeError as error:
        raise invalid_field(
            "file",
            f"Invalid file format: {error}. Supported formats: {', '.join(SUPPORTED_FORMATS)}.",
        ) from None
    return TranscriptionJob(
        samples=audio.samples, task=task, language=language, prompt=prompt, temperature=temperature,
        word_timestamps=word_timestamps,
    )


def render(transcript: Transcript, response_format: str, include_segments: bool = True) -> Response:
    if response_format == "verbose_json":
        return jsonify(formats.to_verbose_json(transcript, include_segments=include_segments))
    if response_format in formats.JSON_FORMATTERS:
        body: Any = formats.JSON_FORMATTERS[response_format](transcript)
        return jsonify(body)
    text = formats.TEXT_FORMATTERS[response_format](transcript)
    return Response(text, mimetype="text/plain", content_type="text/plain; charset=utf-8")
