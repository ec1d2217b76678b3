"""Keys stay secret, every request is logged once with an id, and exposure is loud."""

from __future__ import annotations

import json
import logging

from tests.conftest import API_KEY, API_VERSION
from tests.support.speech import JAPANESE_SENTENCES, encode, japanese_speech
from whisper_api.__main__ import announce_exposure
from whisper_api.config import AuthSettings, ServerSettings, Settings

PATH = f"/openai/deployments/whisper/audio/transcriptions?api-version={API_VERSION}"


def access_lines(caplog) -> list[dict]:
    return [json.loads(record.getMessage()) for record in caplog.records if record.name == "whisper_api.access"]


def test_each_request_gets_one_access_line_and_an_x_request_id(client, caplog):
    caplog.set_level(logging.INFO, logger="whisper_api.access")
    audio = encode(japanese_speech(JAPANESE_SENTENCES[0]), "wav")
    response = client.post(PATH, headers={"api-key": API_KEY}, data={"file": (__import__("io").BytesIO(audio), "a.wav"),
                                                                      "language": "ja"})
    assert response.status_code == 200
    lines = access_lines(caplog)
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["deployment"] == "whisper"
    assert line["status"] == 200
    assert abs(line["audio_seconds"] - len(japanese_speech(JAPANESE_SENTENCES[0])) / 16000) < 0.02
    assert line["processing_seconds"] > 0


def test_request_ids_are_unique_and_errors_are_logged_too(client, caplog):
    caplog.set_level(logging.INFO, logger="whisper_api.access")
    first = client.post(PATH, headers={"api-key": "wrong"})
    second = client.get("/health")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert [line["status"] for line in access_lines(caplog)] == [401, 200]


def test_keys_never_reach_the_logs(client, caplog):
    caplog.set_level(logging.DEBUG)
    client.post(PATH, headers={"api-key": API_KEY})
    client.post(PATH, headers={"Authorization": "Bearer secret-that-is-wrong"})
    client.get("/health", headers={"api-key": API_KEY})
    assert API_KEY not in caplog.text and "secret-that-is-wrong" not in caplog.text


def test_health_reveals_no_keys(client):
    assert API_KEY not in client.get("/health").get_data(as_text=True)


def test_flask_refuses_an_oversized_body_from_its_content_length(client, settings):
    response = client.post(
        PATH, data=b"x", headers={"api-key": API_KEY, "Content-Type": "multipart/form-data; boundary=b"},
        environ_overrides={"CONTENT_LENGTH": str(settings.server.max_upload_bytes + 1)},
    )
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "content_too_large"


def test_start_up_says_in_one_line_who_may_call(caplog):
    """No keys: loopback clients only, wherever it listens (the rule itself: test_network_exposure)."""
    caplog.set_level(logging.INFO, logger="whisper_api")
    for host in ("0.0.0.0", "127.0.0.1"):
        caplog.clear()
        announce_exposure(Settings(server=ServerSettings(host=host), auth=AuthSettings(api_keys=())))
        assert [record.getMessage() for record in caplog.records] == [
            "no [auth] api_keys: only clients on this PC (loopback) are served; others get 401 until keys are set"]
    caplog.clear()
    announce_exposure(Settings(server=ServerSettings(host="0.0.0.0"), auth=AuthSettings(api_keys=("k",))))
    assert "need one of [auth] api_keys" in caplog.text
