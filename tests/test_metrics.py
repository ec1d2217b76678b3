"""GET /metrics: Prometheus text format, what a transcription and a 429 record, who may read it."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_KEY, API_VERSION
from tests.support.speech import encode, japanese_speech
from whisper_api import create_app
from whisper_api.config import DEFAULT_CONFIG_PATH, AuthSettings, ConfigError, MetricsSettings, load_settings

KEY = {"api-key": API_KEY}
TRANSCRIPTIONS_ROUTE = "/openai/deployments/<deployment>/audio/transcriptions"


def samples_of(client) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    response = client.get("/metrics", headers=KEY)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def transcribe(client, samples, deployment: str = "whisper"):
    return client.post(
        f"/openai/deployments/{deployment}/audio/transcriptions?api-version={API_VERSION}",
        headers=KEY, data={"file": (io.BytesIO(encode(samples, "wav")), "clip.wav"), "response_format": "json"},
    )


def test_transcription_is_counted_with_its_audio_time_and_model_time(client):
    clip = japanese_speech("今日はいい天気ですね。")
    assert transcribe(client, clip).status_code == 200
    samples = samples_of(client)
    assert value(samples, "whisper_api_requests_total", route=TRANSCRIPTIONS_ROUTE, method="POST",
                 deployment="whisper", status="200") == 1
    assert value(samples, "whisper_api_audio_seconds_total", deployment="whisper") == pytest.approx(len(clip) / 16000)
    assert value(samples, "whisper_api_processing_seconds_count", deployment="whisper") == 1
    assert value(samples, "whisper_api_queue_wait_seconds_count", deployment="whisper") == 1
    assert value(samples, "whisper_api_real_time_factor_count", deployment="whisper") == 1
    processing = value(samples, "whisper_api_processing_seconds_sum", deployment="whisper")
    rtf = value(samples, "whisper_api_real_time_factor_sum", deployment="whisper")
    assert processing > 0 and rtf == pytest.approx(processing / (len(clip) / 16000))
    assert value(samples, "whisper_api_request_duration_seconds_count", route=TRANSCRIPTIONS_ROUTE) == 1


def test_engine_facts_are_exposed(client, engine):
    samples = samples_of(client)
    info = engine.info
    assert value(samples, "whisper_api_model_info", model=info.model, device="cpu", device_name=info.device_name,
                 dtype="float32", attention=info.attention, strategy=info.strategy) == 1
    assert value(samples, "whisper_api_model_load_seconds") == info.load_seconds
    assert value(samples, "whisper_api_queue_waiting") == 0
    assert value(samples, "whisper_api_queue_limit") == engine.queue.max_waiting
    assert value(samples, "whisper_api_model_busy") == 0
    assert value(samples, "whisper_api_process_resident_memory_bytes") > 50 * 1024 * 1024


def test_queue_full_is_counted_as_a_429(client, engine, monkeypatch):
    monkeypatch.setattr(engine.queue, "max_waiting", 0)
    with engine.queue.turn():  # the model is busy and no one may wait
        response = transcribe(client, japanese_speech("はい。"))
    assert response.status_code == 429
    samples = samples_of(client)
    assert value(samples, "whisper_api_queue_rejections_total", deployment="whisper") == 1
    assert value(samples, "whisper_api_requests_total", route=TRANSCRIPTIONS_ROUTE, method="POST",
                 deployment="whisper", status="429") == 1
    assert value(samples, "whisper_api_audio_seconds_total", deployment="whisper") is None


def test_unknown_paths_share_one_route_label(client):
    for path in ("/wp-admin", "/a/b/c", "/.env"):
        assert client.get(path).status_code == 404
    samples = samples_of(client)
    assert value(samples, "whisper_api_requests_total", route="unmatched", method="GET", deployment="",
                 status="404") == 3
    assert not [key for key in samples if ("route", "/wp-admin") in key[1]]


def test_each_app_counts_its_own_requests(settings, engine):
    first, second = create_app(settings, engine=engine).test_client(), create_app(settings, engine=engine).test_client()
    for _ in range(3):
        first.get("/health")
    assert value(samples_of(first), "whisper_api_requests_total", route="/health", method="GET", deployment="",
                 status="200") == 3
    assert value(samples_of(second), "whisper_api_requests_total", route="/health", method="GET", deployment="",
                 status="200") is None


@pytest.mark.parametrize("headers", [{}, {"api-key": "wrong"}, {"Authorization": "Bearer wrong"}])
def test_metrics_need_the_key_when_keys_are_configured(client, headers):
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "401"


def test_metrics_accept_a_bearer_key_as_prometheus_sends_it(client):
    assert client.get("/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200


def test_setting_opens_metrics_to_a_local_scraper(settings, engine):
    opened = replace(settings, metrics=MetricsSettings(require_api_key=False))
    client = create_app(opened, engine=engine).test_client()
    assert client.get("/metrics").status_code == 200
    assert client.get("/openai/deployments", query_string={"api-version": API_VERSION}).status_code == 401


def test_metrics_are_open_when_no_keys_are_configured(settings, engine):
    keyless = replace(settings, auth=AuthSettings(api_keys=()))
    assert create_app(keyless, engine=engine).test_client().get("/metrics").status_code == 200


def test_metrics_setting_is_read_from_the_ini(tmp_path):
    path = tmp_path / "whisper_api.ini"
    path.write_text("[model]\nname = m\n[metrics]\nrequire_api_key = false\n[deployment:whisper]\n", encoding="utf-8")
    assert load_settings(path).metrics.require_api_key is False
    assert load_settings(DEFAULT_CONFIG_PATH).metrics.require_api_key is True


def test_bad_metrics_setting_names_section_and_key(tmp_path):
    path = tmp_path / "whisper_api.ini"
    path.write_text("[model]\nname = m\n[metrics]\nrequire_api_key = sometimes\n[deployment:whisper]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[metrics\] require_api_key"):
        load_settings(path)
