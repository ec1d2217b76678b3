"""whisper-api: a local drop-in for Azure OpenAI's Whisper (whisper-1) transcription service."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .config import Settings, config_path_from_environment, load_settings

if TYPE_CHECKING:  # the package imports no web framework until an app is built
    from flask import Flask

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, engine=None) -> "Flask":
    """Build the app: settings (from the INI unless given), the one engine, routes, error handlers.

    `engine` lets tests share one loaded model between apps; a server loads its own here, once.
    """
    from flask import Flask

    from . import access_log, app_state, known_speakers, memory, metrics, page, speakers
    from .auth import refuse_remote_clients_without_keys
    from .engine import Engine
    from .errors import register_error_handlers
    from .routes import blueprint, refuse_while_shutting_down

    if settings is None:
        settings = load_settings(config_path_from_environment())
    if engine is None:
        server = settings.server
        engine = Engine.load(settings.model, server.max_queue, server.max_concurrent_jobs, server.max_batch_rows)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_upload_bytes
    # Werkzeug answers 413 for any text field over 500 kB; the body limit bounds fields already,
    # and the routes answer an oversized field with a 400 that names it (a known speaker's
    # reference clip, a data URL, is the largest text a client sends)
    app.config["MAX_FORM_MEMORY_SIZE"] = max(settings.server.max_upload_bytes, known_speakers.MAX_FORM_FIELD_BYTES)
    app.json.ensure_ascii = False  # Japanese text stays readable in the body, as the hosted service sends it
    app.json.sort_keys = False
    app_state.init_app(app, settings, engine)
    access_log.init_app(app)
    metrics.init_app(app, engine)
    # after the request id and timers are set, so that refusals are logged and counted too
    app.before_request(refuse_remote_clients_without_keys)
    app.before_request(refuse_while_shutting_down)
    speakers.init_app(app, settings.diarization)
    register_error_handlers(app)
    app.register_blueprint(blueprint)
    memory.init_app(app)
    app.register_blueprint(page.blueprint)
    return app
