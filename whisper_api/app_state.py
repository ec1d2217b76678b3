"""The app's long-lived objects (settings, engine, progress board, shutdown state) as views reach them: kept in
`app.extensions`, read through `current_app`, so tests can build apps side by side. (The metrics
registry has its accessor beside it, in metrics.py.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, current_app

from .config import Settings
from .progress import ProgressBoard
from .shutdown import ShutdownState

if TYPE_CHECKING:  # the HTTP side never imports torch; the engine arrives through the app
    from .engine import Engine

SETTINGS = "whisper_api.settings"
ENGINE = "whisper_api.engine"
PROGRESS = "whisper_api.progress"
SHUTDOWN = "whisper_api.shutdown"


def init_app(app: Flask, settings: Settings, engine: "Engine") -> None:
    app.extensions[SETTINGS] = settings
    app.extensions[ENGINE] = engine
    app.extensions[PROGRESS] = ProgressBoard()
    app.extensions[SHUTDOWN] = ShutdownState(settings.server.shutdown_grace_seconds)


def settings() -> Settings:
    return current_app.extensions[SETTINGS]


def engine() -> "Engine":
    return current_app.extensions[ENGINE]


def progress_board() -> ProgressBoard:
    return current_app.extensions[PROGRESS]


def shutdown_state() -> ShutdownState:
    return current_app.extensions[SHUTDOWN]
