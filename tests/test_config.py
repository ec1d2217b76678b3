"""Settings load from the INI, and every bad value stops start-up with one line naming it."""

from __future__ import annotations

import pytest

from whisper_api.config import DEFAULT_CONFIG_PATH, ConfigError, config_path_from_environment, load_settings


def write_ini(tmp_path, text: str):
    path = tmp_path / "whisper_api.ini"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = "[deployment:whisper]\n"


def test_shipped_ini_loads_with_documented_defaults():
    settings = load_settings(DEFAULT_CONFIG_PATH)
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8000
    assert settings.server.max_upload_mb == 25
    assert settings.model.device == "auto"
    assert settings.model.dtype == "auto"
    assert {"whisper", "whisper-1"} <= set(settings.deployments)


def test_every_shipped_key_is_commented():
    lines = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith(";"):
            assert lines[number - 1].lstrip().startswith(";"), f"key without a comment: {line}"


def test_deployment_sections_carry_decoding_defaults(tmp_path):
    path = write_ini(tmp_path, "[model]\nname = m\n[deployment:ja]\nlanguage = Japanese\ntemperature = 0.2\nprompt = こんにちは\n")
    deployment = load_settings(path).deployments["ja"]
    assert (deployment.language, deployment.temperature, deployment.prompt) == ("ja", 0.2, "こんにちは")


def test_api_keys_are_split_on_commas(tmp_path):
    settings = load_settings(write_ini(tmp_path, MINIMAL + "[model]\nname = m\n[auth]\napi_keys = one, two ,,three\n"))
    assert settings.auth.api_keys == ("one", "two", "three")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[server]\nport = eighty\n", "[server] port"),
        ("[server]\nport = 70000\n", "[server] port"),
        ("[server]\nthreads = 0\n", "[server] threads"),
        ("[server]\nmax_upload_mb = -1\n", "[server] max_upload_mb"),
        ("[server]\nrequire_api_version = maybe\n", "[server] require_api_version"),
        ("[server]\nmax_concurrent_jobs = 0\n", "[server] max_concurrent_jobs"),
        ("[server]\nmax_concurrent_jobs = many\n", "[server] max_concurrent_jobs"),
        ("[server]\nmax_batch_rows = 0\n", "[server] max_batch_rows"),
        ("[server]\nmax_batch_rows = lots\n", "[server] max_batch_rows"),
        ("[server]\nmax_batch_rows = 257\n", "[server] max_batch_rows"),
        ("[model]\nname = m\ndevice = tpu\n", "[model] device"),
        ("[model]\nname = m\ndtype = float64\n", "[model] dtype"),
        ("[model]\nname = m\nattention = flash\n", "[model] attention"),
        ("[model]\nname = m\nstrategy = whisperx\n", "[model] strategy"),
        ("[model]\nname = m\nvad_threshold = 1.5\n", "[model] vad_threshold"),
        ("[model]\nname = m\nvad_min_silence_ms = half\n", "[model] vad_min_silence_ms"),
        ("[model]\nname = m\nvad_speech_pad_ms = -5\n", "[model] vad_speech_pad_ms"),
        ("[model]\nname = m\nvad_max_chunk_seconds = 45\n", "[model] vad_max_chunk_seconds"),
        ("[deployment:x]\nlanguage = klingon\n", "[deployment:x] language"),
        ("[deployment:x]\ntemperature = 3\n", "[deployment:x] temperature"),
        ("[typo]\nkey = 1\n", "[typo]"),
    ],
)
def test_bad_values_name_file_section_and_key(tmp_path, text, named):
    if "[model]" not in text:
        text += "[model]\nname = m\n"
    path = write_ini(tmp_path, MINIMAL + text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    message = str(raised.value)
    assert str(path) in message and named in message
    assert "\n" not in message


@pytest.mark.parametrize(("text", "jobs", "rows"), [("", 4, 0), ("max_batch_rows = auto\n", 4, 0),
                                                   ("max_concurrent_jobs = 2\nmax_batch_rows = 6\n", 2, 6)])
def test_scheduler_settings_are_read(tmp_path, text, jobs, rows):
    server = load_settings(write_ini(tmp_path, MINIMAL + "[model]\nname = m\n[server]\n" + text)).server
    assert (server.max_concurrent_jobs, server.max_batch_rows) == (jobs, rows)


def test_vad_strategy_and_its_settings_are_read(tmp_path):
    text = (
        "[model]\nname = m\nstrategy = vad\nvad_threshold = 0.35\nvad_min_silence_ms = 800\n"
        "vad_speech_pad_ms = 100\nvad_max_chunk_seconds = 20\n"
    )
    model = load_settings(write_ini(tmp_path, MINIMAL + text)).model
    assert (model.strategy, model.vad_threshold, model.vad_min_silence_ms) == ("vad", 0.35, 800)
    assert (model.vad_speech_pad_ms, model.vad_max_chunk_seconds) == (100, 20.0)


def test_missing_model_name_is_required(tmp_path):
    with pytest.raises(ConfigError, match=r"\[model\] name: is required"):
        load_settings(write_ini(tmp_path, "[deployment:whisper]\n"))


def test_no_deployment_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="deployment"):
        load_settings(write_ini(tmp_path, "[model]\nname = m\n"))


def test_missing_or_broken_file_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.ini")
    with pytest.raises(ConfigError, match="not a valid INI"):
        load_settings(write_ini(tmp_path, "no section header\n"))


def test_config_path_prefers_flag_then_environment_then_shipped_file(monkeypatch, tmp_path):
    monkeypatch.delenv("WHISPER_API_CONFIG", raising=False)
    assert config_path_from_environment(None) == DEFAULT_CONFIG_PATH
    monkeypatch.setenv("WHISPER_API_CONFIG", str(tmp_path / "env.ini"))
    assert config_path_from_environment(None) == tmp_path / "env.ini"
    assert config_path_from_environment(tmp_path / "flag.ini") == tmp_path / "flag.ini"
