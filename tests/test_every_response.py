"""Every response the server sends carries x-request-id and apim-request-id, gets an access-log
line and is counted in /metrics, including those Waitress answers before the app sees the
request (a body over the limit, headers too large, broken chunked framing)."""

from __future__ import annotations

import json
import logging
import socket

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_KEY, API_VERSION, make_settings
from tests.support.live_server import serve_in_thread
from whisper_api import create_app

PATH = f"/openai/deployments/whisper/audio/transcriptions?api-version={API_VERSION}"


@pytest.fixture(scope="module")
def server(model_settings, engine):
    app = create_app(make_settings(model_settings, max_upload_mb=1), engine=engine)
    with serve_in_thread(app) as url:
        yield url


def raw_exchange(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        try:
            connection.sendall(request)
        except (BrokenPipeError, ConnectionResetError):  # the server may answer before reading it all
            pass
        chunks = []
        while True:
            try:
                chunk = connection.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def response_headers(answer: bytes) -> tuple[int, dict[str, str]]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    return status, {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in head[1:])}


def requests_counted(url: str, status: int) -> float:
    text = requests.get(f"{url}/metrics", headers={"api-key": API_KEY}, timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "whisper_api_requests_total" and sample.labels.get("status") == str(status):
                total += sample.value
    return total


WAITRESS_REFUSALS = {
    "body over the limit": (413, (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\napi-key: {API_KEY}\r\nx-request-id: refused-body-0001\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n").encode()),
    "headers too large": (431, (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nx-request-id: refused-head-0001\r\napi-key: {'k' * 300_000}\r\n"
        f"Content-Length: 0\r\n\r\n").encode()),
    "broken chunked framing": (400, (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\napi-key: {API_KEY}\r\nx-request-id: refused-chunk-0001\r\n"
        f"Transfer-Encoding: chunked\r\n\r\nzz\r\nnot a chunk\r\n0\r\n\r\n").encode()),
}


@pytest.mark.parametrize("case", list(WAITRESS_REFUSALS))
def test_responses_waitress_sends_itself_carry_an_id_are_logged_and_counted(server, case, caplog):
    status, request = WAITRESS_REFUSALS[case]
    counted_before = requests_counted(server, status)
    caplog.set_level(logging.INFO, logger="whisper_api.access")

    answer = raw_exchange(server, request)

    received_status, headers = response_headers(answer)
    assert received_status == status, answer[:300]
    request_id = headers["x-request-id"]
    assert request_id and headers["apim-request-id"] == request_id
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["message"]
    lines = [json.loads(record.getMessage()) for record in caplog.records if record.name == "whisper_api.access"]
    logged = [line for line in lines if line["request_id"] == request_id]
    assert len(logged) == 1 and logged[0]["status"] == status, lines
    assert requests_counted(server, status) == counted_before + 1


def test_the_client_request_id_is_kept_when_waitress_answers(server):
    _, request = WAITRESS_REFUSALS["body over the limit"]
    _, headers = response_headers(raw_exchange(server, request))
    assert headers["x-request-id"] == "refused-body-0001"
