"""`python -m whisper_api` starts Waitress from an INI file, and start-up failures are one clear line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support.live_server import wait_until_healthy
from tests.support.speech import JAPANESE_SENTENCES, character_error_rate, encode, japanese_speech

pytestmark = pytest.mark.model  # child processes, model conversion or speech synthesis: not pure logic

REPOSITORY = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(tmp_path: Path, model: str, port: int, extra: str = "") -> Path:
    path = tmp_path / "server.ini"
    path.write_text(
        f"[server]\nhost = 127.0.0.1\nport = {port}\nthreads = 2\n"
        f"[auth]\napi_keys = cli-key\n"
        f"[model]\nname = {model}\ndevice = cpu\n{extra}"
        f"[deployment:whisper]\n",
        encoding="utf-8",
    )
    return path


def run_cli(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "whisper_api", *arguments],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_server_starts_from_the_ini_and_transcribes(tmp_path, model_dir):
    port = free_port()
    config = write_config(tmp_path, str(model_dir), port)
    process = subprocess.Popen(
        [sys.executable, "-m", "whisper_api", "--config", str(config)],
        cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, timeout_seconds=180)
        sentence = JAPANESE_SENTENCES[0]
        response = requests.post(
            f"{url}/openai/deployments/whisper/audio/transcriptions?api-version=2024-06-01",
            headers={"api-key": "cli-key"},
            files={"file": ("speech.wav", encode(japanese_speech(sentence), "wav"))},
            data={"language": "ja"},
            timeout=120,
        )
        assert response.status_code == 200
        assert character_error_rate(sentence, response.json()["text"]) <= 0.35
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "serving on http://127.0.0.1" in output
    assert "cli-key" not in output


def test_config_from_environment_variable_is_used(tmp_path, monkeypatch):
    config = tmp_path / "bad.ini"
    config.write_text("[server]\nport = none\n", encoding="utf-8")
    monkeypatch.setenv("WHISPER_API_CONFIG", str(config))
    result = run_cli()
    assert result.returncode == 2
    assert str(config) in result.stderr


@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        ("[model]\nname = m\ndevice = tpu\n[deployment:w]\n", "[model] device"),
        ("[server]\nport = 99999\n[model]\nname = m\n[deployment:w]\n", "[server] port"),
    ],
)
def test_bad_ini_exits_with_one_line_and_no_traceback(tmp_path, config_text, expected):
    config = tmp_path / "bad.ini"
    config.write_text(config_text, encoding="utf-8")
    result = run_cli("--config", str(config))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("whisper-api:")]) == 1


def test_missing_model_exits_non_zero_with_one_line(tmp_path):
    config = write_config(tmp_path, str(tmp_path / "no-such-model"), free_port())
    result = run_cli("--config", str(config))
    assert result.returncode == 1
    assert "is neither an existing folder nor a Hugging Face model id" in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_exits_non_zero_with_one_line(tmp_path, model_dir):
    with socket.socket() as occupied:
        occupied.bind(("127.0.0.1", 0))
        occupied.listen()
        port = occupied.getsockname()[1]
        config = write_config(tmp_path, str(model_dir), port, extra="warmup = false\n")
        result = run_cli("--config", str(config), timeout=180)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "whisper-api:" in result.stderr and ("in use" in result.stderr or "Errno" in result.stderr)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_unavailable_device_exits_non_zero_with_one_line(tmp_path, model_dir):
    config = write_config(tmp_path, str(model_dir), free_port()).read_text().replace("device = cpu", "device = cuda")
    (tmp_path / "cuda.ini").write_text(config)
    result = run_cli("--config", str(tmp_path / "cuda.ini"))
    assert result.returncode == 1
    assert "DeviceUnavailable" in result.stderr and "CUDA" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_flag_shows_the_traceback(tmp_path):
    config = write_config(tmp_path, str(tmp_path / "no-such-model"), free_port())
    result = run_cli("--config", str(config), "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_wsgi_module_builds_the_app_from_the_environment_config(tmp_path, model_dir):
    config = write_config(tmp_path, str(model_dir), free_port(), extra="warmup = false\n")
    code = ("import wsgi; client = wsgi.app.test_client(); body = client.get('/health').get_json();"
            "print(body['status'], body['device'], body['deployments'])")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True, timeout=180,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WHISPER_API_CONFIG": str(config)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok cpu ['whisper']"


def test_once_the_app_is_up_the_garbage_collector_no_longer_scans_the_models_objects(tmp_path, model_dir):
    """A full collection after every job (memory given back) would otherwise traverse the model's
    and the libraries' ~400,000 objects, holding the interpreter lock while other jobs decode."""
    config = write_config(tmp_path, str(model_dir), free_port(), extra="warmup = false\n")
    code = "import gc, wsgi; print(gc.get_freeze_count(), len(gc.get_objects()))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True, timeout=180,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WHISPER_API_CONFIG": str(config)},
    )
    assert result.returncode == 0, result.stderr
    frozen, scanned = map(int, result.stdout.split()[-2:])
    assert frozen > 100_000, "the loaded model's objects are set aside"
    assert scanned < frozen // 20, f"{scanned} objects still scanned at every collection"
