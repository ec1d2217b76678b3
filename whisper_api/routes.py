"""The blueprint owning Azure's audio routes: form -> request object -> engine -> writer -> response."""

from __future__ import annotations

import re
import uuid
from typing import Callable

from flask import Blueprint, Response, current_app, g, jsonify, request

from . import access_log, formats, memory, speakers
from .app_state import engine, progress_board, settings, shutdown_state
from .auth import authenticate
from .config import DeploymentSettings
from .errors import ApiError
from .jobs import JobRunner, shutting_down
from .metrics import metrics
from .request_form import (
    TRANSCRIBE, TRANSLATE, check_field_lengths, deployment_from_model_field, find_deployment, read_request,
)
from .streaming import CONTENT_TYPE, HEADERS, EventStream

blueprint = Blueprint("audio", __name__)

API_VERSION_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")


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
    return serve_audio(lambda: find_deployment(deployment, settings()), TRANSCRIBE, api_version_required=True)


@blueprint.post("/openai/deployments/<deployment>/audio/translations")
def deployment_translations(deployment: str) -> Response:
    return serve_audio(lambda: find_deployment(deployment, settings()), TRANSLATE, api_version_required=True)


# Azure's v1 surface and OpenAI's own: the `model` form field names the deployment.
@blueprint.post("/openai/v1/audio/transcriptions")
def azure_v1_transcriptions() -> Response:
    return serve_audio(lambda: deployment_from_model_field(request.form, settings(), openai_style=False), TRANSCRIBE)


@blueprint.post("/openai/v1/audio/translations")
def azure_v1_translations() -> Response:
    return serve_audio(lambda: deployment_from_model_field(request.form, settings(), openai_style=False), TRANSLATE)


@blueprint.post("/v1/audio/transcriptions")
def openai_transcriptions() -> Response:
    return serve_audio(lambda: deployment_from_model_field(request.form, settings(), openai_style=True), TRANSCRIBE)


@blueprint.post("/v1/audio/translations")
def openai_translations() -> Response:
    return serve_audio(lambda: deployment_from_model_field(request.form, settings(), openai_style=True), TRANSLATE)


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
    parsed = read_request(request.form, request.files.getlist("file"), request.mimetype, deployment, task, settings())
    runner = job_runner(deployment)
    if parsed.job.diarize:
        runner.announce(parsed.job)  # on the board while a first diarized request loads the speaker model
        try:
            speakers.speaker_model().get()  # a missing speaker model answers before the transcription runs
        except BaseException:
            runner.abandon()
            raise
    access_log.note(audio_seconds=round(parsed.job.duration, 2))
    writer = formats.writer(parsed.response_format)
    memory.note_job()
    # a client that hangs up (Waitress reads ahead on the connection while the job runs) stops it
    client_disconnected = request.environ.get("waitress.client_disconnected")
    if parsed.stream:
        access_log.note(stream=True)
        stream = EventStream(current_app._get_current_object(), runner, parsed.job, writer.events(parsed.output),
                             access_log.fields(), client_disconnected)
        stream.start()
        return Response(stream.body(), content_type=CONTENT_TYPE, headers=HEADERS)
    transcript = runner.run(parsed.job, disconnected=client_disconnected)
    body = writer.render(transcript, parsed.output)
    return Response(body.text, content_type=body.content_type)


def job_runner(deployment: DeploymentSettings) -> JobRunner:
    """The job's runner, its progress under this request's id."""
    if progress_board().is_active(g.request_id):  # a client reused the id of a job still running: keep them apart
        g.request_id = str(uuid.uuid4())
    return JobRunner(engine(), progress_board(), metrics(), shutdown_state(), g.request_id, deployment.name,
                     access_log.fields())


def refuse_while_shutting_down() -> None:
    """Before every request: once a shutdown began, new requests get 503 with Retry-After."""
    state = shutdown_state()
    if state.draining:
        raise shutting_down(state.retry_after())


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
