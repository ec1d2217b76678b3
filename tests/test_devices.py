"""Device choice: auto tries DirectML, then CUDA, then CPU, and says why; explicit devices must exist."""

from __future__ import annotations

import pytest
import torch

import logging
import os
import subprocess
import sys
from pathlib import Path

import requests

from tests.support.directml_doubles import FAILING_VARIANTS, RADEON, directml_double, use_directml_double, without_directml
from tests.support.live_server import serve_in_thread, wait_until_healthy
from tests.support.speech import JAPANESE_SENTENCES, character_error_rate, japanese_speech
from whisper_api import create_app
from whisper_api.config import ModelSettings
from whisper_api.devices import DIRECTML_MODULE_VARIABLE, DeviceUnavailable, choose_device
from whisper_api.engine import Engine, ModelLoadError
from whisper_api.transcript import TranscriptionJob
from whisper_api import devices

REPOSITORY = Path(__file__).resolve().parents[1]

# Why `auto` skipped DirectML, for each way the stand-in fails as the real module does.
SKIP_REASONS = {
    "import_fails": "torch-directml is installed but failed to import: OSError: libd3d12",
    "raises_in_is_available": "torch-directml failed in is_available(): RuntimeError: Unknown error",
    "raises_in_device_count": "torch-directml failed in device_count(): RuntimeError: Unknown error",
    "raises_in_device": "torch-directml failed in device(0): RuntimeError: Unknown error",
    "no_device": "torch-directml reports no usable DirectML device",
    "crashes_in_device_name": "the DirectML probe crashed (signal 11)" if sys.platform != "win32"
    else "the DirectML probe crashed (exit code 11)",
}
assert set(SKIP_REASONS) == set(FAILING_VARIANTS)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_auto_falls_back_to_cpu_and_says_why(monkeypatch):
    without_directml(monkeypatch)
    choice = choose_device("auto")
    assert choice.kind == "cpu"
    assert choice.skipped["directml"] == "torch-directml is not installed"
    assert "no CUDA device" in choice.skipped["cuda"]
    assert "directml skipped: torch-directml is not installed" in choice.describe()


def test_auto_prefers_directml_when_it_reports_an_adapter(monkeypatch):
    use_directml_double(monkeypatch, "working")
    choice = choose_device("auto")
    assert choice.kind == "directml"
    assert choice.name == RADEON
    assert choice.device == directml_double("working").device(0)
    assert choice.float64_support is False
    assert choice.reason == "auto: DirectML adapter 0 of 1 (no float64)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("variant", FAILING_VARIANTS)
def test_auto_reaches_the_cpu_through_each_directml_failure_and_says_why(monkeypatch, variant):
    use_directml_double(monkeypatch, variant)
    choice = choose_device("auto")
    assert choice.kind == "cpu"
    assert choice.skipped["directml"].startswith(SKIP_REASONS[variant]), choice.skipped


@pytest.mark.parametrize("variant", FAILING_VARIANTS)
def test_explicit_directml_that_fails_stops_start_up_with_the_reason_and_advice(monkeypatch, variant):
    use_directml_double(monkeypatch, variant)
    with pytest.raises(DeviceUnavailable) as raised:
        choose_device("directml")
    assert raised.value.reason.startswith(SKIP_REASONS[variant])
    assert "graphics driver" in raised.value.advice and raised.value.advice in str(raised.value)


def test_directml_is_probed_once_per_process(monkeypatch):
    use_directml_double(monkeypatch, "working")
    probes = []
    probe_in_child = devices._probe_in_child
    monkeypatch.setattr(devices, "_probe_in_child", lambda name: probes.append(name) or probe_in_child(name))
    assert choose_device("auto").kind == "directml"
    assert choose_device("directml").kind == "directml"
    assert probes == ["tests.support.directml_doubles.working"]


def test_a_crashing_probe_is_remembered_and_never_retried_in_this_process(monkeypatch):
    use_directml_double(monkeypatch, "crashes_in_device_name")
    first = choose_device("auto").skipped["directml"]
    monkeypatch.setattr(devices, "_probe_in_child", lambda name: pytest.fail("probed twice"))
    assert choose_device("auto").skipped["directml"] == first


def test_explicit_directml_without_the_package_stops_start_up(monkeypatch):
    without_directml(monkeypatch)
    with pytest.raises(DeviceUnavailable, match="torch-directml is not installed; install torch-directml"):
        choose_device("directml")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_explicit_cuda_without_a_gpu_stops_start_up():
    with pytest.raises(DeviceUnavailable, match="CUDA"):
        choose_device("cuda")


def test_model_runs_on_the_directml_device_object(monkeypatch, model_dir, settings):
    """The DirectML branch loads the real model onto the device torch_directml returns and transcribes."""
    use_directml_double(monkeypatch, "working")
    engine = Engine.load(ModelSettings(name=str(model_dir), device="directml", warmup=False))
    assert engine.info.device == "directml"
    assert engine.info.device_name == RADEON
    sentence = JAPANESE_SENTENCES[3]
    transcript = engine.transcribe(TranscriptionJob(samples=japanese_speech(sentence), language="ja"))
    assert character_error_rate(sentence, transcript.text) <= 0.35
    health = create_app(settings, engine=engine).test_client().get("/health").get_json()
    assert health["device"] == "directml" and "DirectML adapter 0 of 1 (no float64)" in health["device_reason"]


def test_bfloat16_on_directml_stops_start_up_with_the_fix(monkeypatch, model_dir):
    use_directml_double(monkeypatch, "working")
    with pytest.raises(ModelLoadError, match="DirectML has no bfloat16.*dtype = float32"):
        Engine.load(ModelSettings(name=str(model_dir), device="directml", dtype="bfloat16", warmup=False))


def test_bfloat16_on_the_cpu_transcribes_as_float32_does(model_dir, engine):
    """bfloat16 keeps about two significant digits; the transcript of a clear sentence must not
    suffer for it (measured: the same text as float32 on the benchmark's clips)."""
    bfloat16 = Engine.load(ModelSettings(name=str(model_dir), device="cpu", dtype="bfloat16", warmup=False))
    assert bfloat16.info.dtype == "bfloat16"
    assert next(bfloat16.model.model.parameters()).dtype == torch.bfloat16
    sentence = JAPANESE_SENTENCES[3]
    job = TranscriptionJob(samples=japanese_speech(sentence), language="ja")
    float32_text = engine.transcribe(job).text
    bfloat16_text = bfloat16.transcribe(job).text
    assert character_error_rate(sentence, bfloat16_text) <= character_error_rate(sentence, float32_text) + 0.05, (
        bfloat16_text, float32_text
    )


@pytest.mark.parametrize(
    ("kind", "native_bfloat16", "expected"),
    [("directml", True, "float32"), ("cuda", False, "float16"), ("cpu", True, "bfloat16"), ("cpu", False, "int8")],
)
def test_auto_dtype_is_the_safe_fast_one_for_the_device(monkeypatch, kind, native_bfloat16, expected):
    monkeypatch.setattr(devices, "bfloat16_is_native", lambda: native_bfloat16)
    assert devices.resolve_dtype("auto", kind) == expected
    assert devices.resolve_dtype("float32", kind) == "float32"  # an explicit dtype is kept


def test_health_names_the_dtype_auto_resolved_to(monkeypatch, model_dir, settings):
    use_directml_double(monkeypatch, "working")
    engine = Engine.load(ModelSettings(name=str(model_dir), device="directml", dtype="auto", warmup=False))
    assert engine.info.dtype == "float32"
    assert next(engine.model.model.parameters()).dtype == torch.float32
    health = create_app(settings, engine=engine).test_client().get("/health").get_json()
    assert health["dtype"] == "float32"


def start_server(tmp_path: Path, model_dir: Path, port: int, variant: str) -> subprocess.Popen:
    config = tmp_path / "server.ini"
    config.write_text(
        f"[server]\nhost = 127.0.0.1\nport = {port}\n[model]\nname = {model_dir}\ndevice = auto\nwarmup = false\n"
        "[deployment:whisper]\n",
        encoding="utf-8",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "whisper_api", "--config", str(config)],
        cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", DIRECTML_MODULE_VARIABLE: f"tests.support.directml_doubles.{variant}"},
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize(("variant", "device"), [("working", "directml"), ("crashes_in_device_name", "cpu")])
def test_server_started_with_auto_says_on_health_and_in_its_log_which_device_and_why(tmp_path, model_dir, variant, device):
    """`python -m whisper_api` with device = auto: DirectML through the stand-in; past a probe that
    crashes with SIGSEGV, the CPU, and both /health and the start-up log say why."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = start_server(tmp_path, model_dir, port, variant)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", timeout_seconds=180)
        health = requests.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert health["device"] == device, (health, output)
    if device == "directml":
        assert health["device_name"] == RADEON and "DirectML adapter 0 of 1 (no float64)" in health["device_reason"]
    else:
        assert f"directml skipped: {SKIP_REASONS[variant]}" in health["device_reason"]
        assert f"directml skipped: {SKIP_REASONS[variant]}" in output


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("variant", FAILING_VARIANTS)
def test_server_on_auto_serves_from_the_cpu_through_each_directml_failure(monkeypatch, model_dir, settings, variant, caplog):
    use_directml_double(monkeypatch, variant)
    with caplog.at_level(logging.INFO, logger="whisper_api"):
        engine = Engine.load(ModelSettings(name=str(model_dir), device="auto", dtype="float32", warmup=False))
    assert f"directml skipped: {SKIP_REASONS[variant]}" in caplog.text
    with serve_in_thread(create_app(settings, engine=engine)) as url:
        health = requests.get(f"{url}/health", timeout=10).json()
    assert health["device"] == "cpu"
    assert f"directml skipped: {SKIP_REASONS[variant]}" in health["device_reason"]
