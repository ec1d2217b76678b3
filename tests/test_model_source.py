"""`[model] name` becomes a local checkpoint folder: the folder itself, the Hugging Face cache, or a
download; an unreachable hub is one clear line within seconds, not a minute of retries."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from huggingface_hub import constants

from tests.test_cli import REPOSITORY, free_port, write_config
from whisper_api.model_source import CONNECTIVITY_TIMEOUT_SECONDS, ModelUnavailable, resolve_model_path

pytestmark = pytest.mark.model  # child processes, model conversion or speech synthesis: not pure logic

MODEL = "example/whisper-tiny"
# The connectivity check's timeout plus room for a busy machine; a retry storm takes a minute.
FAST_SECONDS = CONNECTIVITY_TIMEOUT_SECONDS + 4


def cache_snapshot(hub_cache: Path, model: str, files: tuple[str, ...]) -> Path:
    """Lay out `model` in a Hugging Face cache as a finished download leaves it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repository = hub_cache / ("models--" + model.replace("/", "--"))
    snapshot = repository / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text(commit)
    for name in files:
        (snapshot / name).write_text("{}")
    return snapshot


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


class FailingHub(BaseHTTPRequestHandler):
    """A hub that answers 503 to everything."""

    status_for_root = 503

    def answer(self) -> None:
        status = self.status_for_root if self.path == "/" else 503
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = answer

    def log_message(self, *arguments) -> None:
        pass


class HubFailingOnModels(FailingHub):
    """A front page that answers, a model API that fails: past the check, the download fails."""

    status_for_root = 200


class SilentHub(FailingHub):
    """Accepts connections and never answers."""

    def answer(self) -> None:
        time.sleep(CONNECTIVITY_TIMEOUT_SECONDS * 4)

    do_GET = do_HEAD = answer


FAKE_COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
FAKE_FILES = {"config.json": b'{"model_type": "whisper"}', "model.safetensors": bytes(range(256)) * 4096,
              "flax_model.msgpack": b"not wanted"}


class FakeHub(FailingHub):
    """Just enough of the hub's API for snapshot_download: the revision's file list, and files."""

    def answer(self) -> None:
        prefix = f"/{MODEL}/resolve/"
        if self.path.startswith(f"/api/models/{MODEL}/revision/"):
            siblings = [{"rfilename": name} for name in FAKE_FILES]
            body = json.dumps({"id": MODEL, "sha": FAKE_COMMIT, "siblings": siblings}).encode()
        elif self.path.startswith(prefix) and self.path.rsplit("/", 1)[-1] in FAKE_FILES:
            body = FAKE_FILES[self.path.rsplit("/", 1)[-1]]
        else:
            self.send_response(200 if self.path == "/" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Repo-Commit", FAKE_COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    do_GET = do_HEAD = answer


@contextmanager
def local_hub(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def online(monkeypatch, tmp_path):
    """The hub allowed (the suite runs with HF_HUB_OFFLINE) and an empty cache of our own."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def assert_one_line_with_the_fix(message: str) -> None:
    assert "\n" not in message
    assert "[model] name to a local folder" in message
    assert f"python -m whisper_api download {MODEL}" in message


def test_local_folder_is_used_as_it_is(online, monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "ENDPOINT", closed_port_url())
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)


def test_cached_model_is_used_without_asking_the_hub(online, monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "ENDPOINT", closed_port_url())
    snapshot = cache_snapshot(tmp_path / "hub", MODEL, ("config.json", "model.safetensors"))
    assert Path(resolve_model_path(MODEL)) == snapshot


@pytest.mark.parametrize(
    ("hub", "reason"),
    [(None, "Connection refused"), (FailingHub, "HTTP 503"), (SilentHub, "no answer within")],
    ids=["closed-port", "server-errors", "server-silent"],
)
def test_unreachable_hub_is_one_line_within_seconds(online, monkeypatch, hub, reason):
    with local_hub(hub) if hub else nullcontext(closed_port_url()) as endpoint:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        started = time.monotonic()
        with pytest.raises(ModelUnavailable) as raised:
            resolve_model_path(MODEL)
        elapsed = time.monotonic() - started
    message = str(raised.value)
    assert elapsed < FAST_SECONDS, message
    assert f"hub ({endpoint}) is unreachable" in message and reason in message
    assert_one_line_with_the_fix(message)


def test_hub_failing_past_the_check_is_one_line(online, monkeypatch):
    with local_hub(HubFailingOnModels) as endpoint:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        with pytest.raises(ModelUnavailable) as raised:
            resolve_model_path(MODEL)
    assert f"model {MODEL} could not be downloaded: " in str(raised.value)
    assert_one_line_with_the_fix(str(raised.value))


def test_offline_mode_names_the_variable_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cache_snapshot(tmp_path / "hub", MODEL, ("config.json",))  # no weights: an interrupted download
    with pytest.raises(ModelUnavailable) as raised:
        resolve_model_path(MODEL)
    assert "HF_HUB_OFFLINE" in str(raised.value)
    assert_one_line_with_the_fix(str(raised.value))


def test_name_that_is_neither_folder_nor_model_id_says_so(tmp_path):
    missing = tmp_path / "no such model"
    with pytest.raises(ModelUnavailable, match="neither an existing folder nor a Hugging Face model id"):
        resolve_model_path(str(missing))


def online_environment(tmp_path: Path, endpoint: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {**environment, "HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(tmp_path / "hub")}


def run_whisper_api(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "whisper_api", *arguments], cwd=REPOSITORY,
                          capture_output=True, text=True, timeout=120, env=environment)


def test_server_without_the_hub_exits_with_one_line_and_no_retries(tmp_path):
    config = write_config(tmp_path, MODEL, free_port())
    endpoint = closed_port_url()
    completed = run_whisper_api(online_environment(tmp_path, endpoint), "--config", str(config))
    assert completed.returncode == 1
    errors = [line for line in completed.stderr.splitlines() if line.startswith("whisper-api:")]
    assert len(errors) == 1, completed.stderr
    assert f"hub ({endpoint}) is unreachable" in errors[0]
    assert "Traceback" not in completed.stderr and "Retry" not in completed.stderr
    assert len(completed.stderr.splitlines()) < 10, completed.stderr


def run_download(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    return run_whisper_api(online_environment(tmp_path, closed_port_url()), "download", *arguments)


def test_download_says_nothing_to_do_when_the_model_is_cached(tmp_path):
    cache_snapshot(tmp_path / "hub", MODEL, ("config.json", "model.safetensors", "preprocessor_config.json"))
    completed = run_download(tmp_path, MODEL)
    assert completed.returncode == 0, completed.stderr
    assert f"Model {MODEL} is already in the Hugging Face cache: nothing to download" in completed.stdout


def test_download_without_the_hub_fails_with_one_line(tmp_path):
    completed = run_download(tmp_path, MODEL)
    assert completed.returncode == 1
    assert f"Downloading {MODEL}" in completed.stdout
    assert "is unreachable" in completed.stderr and "Traceback" not in completed.stderr


def test_download_takes_the_model_of_the_config_by_default(tmp_path):
    cache_snapshot(tmp_path / "hub", MODEL, ("config.json", "model.safetensors"))
    completed = run_download(tmp_path, "--config", str(write_config(tmp_path, MODEL, free_port())))
    assert completed.returncode == 0, completed.stderr
    assert "nothing to download" in completed.stdout


def test_download_fetches_the_transformers_files_with_progress_then_reuses_them(tmp_path):
    with local_hub(FakeHub) as endpoint:
        environment = online_environment(tmp_path, endpoint)
        first = run_whisper_api(environment, "download", MODEL)
        second = run_whisper_api(environment, "download", MODEL)
    assert first.returncode == 0, first.stderr
    snapshot = tmp_path / "hub" / "models--example--whisper-tiny" / "snapshots" / FAKE_COMMIT
    assert f"Model {MODEL} is ready: {snapshot}" in first.stdout
    assert "100%" in first.stderr  # huggingface_hub's progress bar
    assert {path.name for path in snapshot.iterdir()} == {"config.json", "model.safetensors"}
    assert (snapshot / "model.safetensors").read_bytes() == FAKE_FILES["model.safetensors"]
    assert second.returncode == 0 and "nothing to download" in second.stdout
