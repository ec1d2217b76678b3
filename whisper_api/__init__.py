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

    from . import access_log, metrics, page
    from .engine import Engine
    from .errors import register_error_handlers
    from .progress import ProgressBoard
    from .routes import blueprint

    if settings is None:
        settings = load_settings(config_path_from_environment())
    if engine is None:
        server = settings.server
        engine = Engine.load(settings.model, server.max_queue, server.max_concurrent_jobs, server.max_batch_rows)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_upload_bytes
    app.json.ensure_ascii = False  # Japanese text stays readable in the body, as the hosted service sends it
    app.json.sort_keys = False
    app.extensions["whisper_api.settings"] = settings
    app.extensions["whisper_api.engine"] = engine
    app.extensions["whisper_api.progress"] = ProgressBoard()
    access_log.init_app(app)
    metrics.init_app(app, engine)
    register_error_handlers(app)
    app.register_blueprint(blueprint)
    app.register_blueprint(page.blueprint)
    return app
