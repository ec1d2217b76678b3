"""Fixtures: the real Whisper base model (converted once and cached), apps, clients, a live server."""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from whisper_api.config import AuthSettings, DeploymentSettings, ModelSettings, ServerSettings, Settings

if TYPE_CHECKING:  # torch and the model load only for the tests that use them (`-m "not model"`)
    from whisper_api.engine import Engine

API_KEY = "test-key-123"
API_VERSION = "2024-06-01"
# a test whose fixtures reach one of these loads the real model, or the VAD on synthesized
# speech (pytest.ini, marker `model`)
MODEL_FIXTURES = {"model_dir", "model_settings", "engine", "tokenizer", "detector", "clip"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if MODEL_FIXTURES & fixtures:
            item.add_marker(pytest.mark.model)
        if "browser" in fixtures:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    from tests.support.whisper_checkpoint import ensure_whisper_base

    return ensure_whisper_base()


@pytest.fixture(scope="session")
def model_settings(model_dir: Path) -> ModelSettings:
    return ModelSettings(name=str(model_dir), device="cpu", dtype="float32", warmup=False)


@pytest.fixture(scope="session")
def engine(model_settings: ModelSettings) -> "Engine":
    """One real model for the whole run, as the server has one for its whole life."""
    from whisper_api.engine import Engine

    return Engine.load(model_settings)


def make_settings(model_settings: ModelSettings, **server_overrides) -> Settings:
    return Settings(
        server=ServerSettings(**server_overrides),
        auth=AuthSettings(api_keys=(API_KEY,)),
        model=model_settings,
        deployments={
            "whisper": DeploymentSettings("whisper"),
            "whisper-ja": DeploymentSettings("whisper-ja", language="ja"),
        },
        source="tests",
    )


@pytest.fixture
def settings(model_settings: ModelSettings) -> Settings:
    return make_settings(model_settings)


@pytest.fixture
def app(settings: Settings, engine: "Engine"):
    from whisper_api import create_app

    return create_app(settings, engine=engine)


@pytest.fixture
def client(app):
    return app.test_client()


LiveServer = Callable[..., str]


@pytest.fixture(scope="session")
def live_server_with(model_settings: ModelSettings, engine: "Engine") -> Iterator[LiveServer]:
    """A live server with these settings: `live_server_with(max_queue=1)` is the base URL of a
    real Waitress server on loopback with those [server] settings (`model_changes` for [model],
    `engine` for another engine over the session's model), started the first time those
    settings are asked for and shared by every test that asks for them again."""
    from tests.support.live_server import serve_in_thread
    from whisper_api import create_app

    servers: dict[tuple, str] = {}
    with ExitStack() as stack:

        def start(engine_: "Engine | None" = None, model_changes: dict | None = None, **server_overrides) -> str:
            serving = engine_ or engine
            key = (id(serving), tuple(sorted((model_changes or {}).items())), tuple(sorted(server_overrides.items())))
            if key not in servers:
                model = dataclasses.replace(model_settings, **(model_changes or {}))
                app = create_app(make_settings(model, **server_overrides), engine=serving)
                servers[key] = stack.enter_context(serve_in_thread(app))
            return servers[key]

        yield start


@pytest.fixture(scope="session")
def live_server(live_server_with: LiveServer) -> str:
    """Base URL of the server most tests read from (2 MB uploads)."""
    return live_server_with(max_upload_mb=2)


@pytest.fixture(scope="session")
def transcriptions_url(live_server: str) -> str:
    return f"{live_server}/openai/deployments/whisper/audio/transcriptions?api-version={API_VERSION}"
