"""Who may call the server: with no [auth] api_keys only this PC (loopback), whatever address the
server listens on; a busy port is reported before the model loads, naming host, port and setting."""

from __future__ import annotations

import configparser
import os
import re
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.support.live_server import wait_until_healthy
from tests.support.server_process import REPOSITORY, free_port, server_process, write_config


def non_loopback_address() -> str | None:
    """This machine's own address on a network interface (the source of a connection to it is
    then not loopback), or None where it has none."""
    for destination in ("10.255.255.255", "192.0.2.1", "8.8.8.8"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((destination, 9))  # no packet is sent: this only picks a route
                address = probe.getsockname()[0]
            except OSError:
                continue
        if not address.startswith("127.") and address != "0.0.0.0":
            return address
    return None


LAN_ADDRESS = non_loopback_address()
needs_lan_address = pytest.mark.skipif(LAN_ADDRESS is None, reason="no non-loopback address on this machine")


@needs_lan_address
def test_without_keys_only_loopback_clients_are_served_even_on_all_interfaces(tmp_path, model_dir):
    with server_process(tmp_path, model_dir, api_keys="", host="0.0.0.0") as server:
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
        for path in ("/health", "/v1/models", "/openai/deployments/whisper/audio/transcriptions?api-version=2024-06-01"):
            response = requests.post if "audio" in path else requests.get
            answer = response(f"http://{LAN_ADDRESS}:{server.port}{path}", headers={"api-key": "anything"}, timeout=10)
            assert answer.status_code == 401, (path, answer.text)
            assert "api_keys" in answer.json()["error"]["message"]
            assert answer.headers["x-request-id"]
    assert "only clients on this PC (loopback) are served" in server.output


@needs_lan_address
def test_with_keys_network_clients_with_a_key_are_served(tmp_path, model_dir):
    with server_process(tmp_path, model_dir, host="0.0.0.0") as server:
        lan = f"http://{LAN_ADDRESS}:{server.port}"
        assert requests.get(f"{lan}/v1/models", headers={"api-key": "process-key"}, timeout=10).status_code == 200
        assert requests.get(f"{lan}/v1/models", headers={"api-key": "wrong"}, timeout=10).status_code == 401


@needs_lan_address
def test_waitress_serve_on_all_interfaces_still_serves_loopback_only_without_keys(tmp_path, model_dir):
    """`waitress-serve` reads no INI: the rule lives in the app, so it holds there too."""
    port = free_port()
    config = write_config(tmp_path, str(model_dir), port, api_keys="")
    process = subprocess.Popen(
        [sys.executable, "-m", "waitress", f"--listen=0.0.0.0:{port}", "wsgi:app"], cwd=REPOSITORY,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WHISPER_API_CONFIG": str(config)},
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", timeout_seconds=180)
        answer = requests.get(f"http://{LAN_ADDRESS}:{port}/health", timeout=10)
        assert answer.status_code == 401 and "api_keys" in answer.json()["error"]["message"]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_readme_waitress_serve_line_listens_where_the_ini_says():
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
    parser.read(REPOSITORY / "conf" / "whisper_api.ini", encoding="utf-8")
    listen = f"--listen={parser['server']['host']}:{parser['server']['port']}"
    for readme in ("README.md", "README.ja.md"):
        lines = [line for line in (REPOSITORY / readme).read_text(encoding="utf-8").splitlines()
                 if re.match(r"^\s*waitress-serve\b", line)]
        assert lines, f"{readme} shows no waitress-serve command"
        assert all(listen in line and "wsgi:app" in line for line in lines), lines


def test_a_busy_port_is_reported_before_the_model_loads_naming_host_port_and_setting(tmp_path, model_dir):
    with socket.socket() as occupied:
        occupied.bind(("127.0.0.1", 0))
        occupied.listen()
        port = occupied.getsockname()[1]
        config = write_config(tmp_path, str(model_dir), port)
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "whisper_api", "--config", str(config)], cwd=REPOSITORY, capture_output=True,
            text=True, timeout=180, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = [line for line in result.stderr.splitlines() if line.startswith("whisper-api:")]
    assert len(message) == 1
    assert f"127.0.0.1:{port}" in message[0] and "[server] port" in message[0] and str(config) in message[0]
    assert "loaded on" not in result.stderr, "the model was loaded before the port was checked"
    assert "device:" not in result.stderr
    assert time.monotonic() - started < 60
