"""Device choice: auto tries DirectML, then CUDA, then CPU, and says why; explicit devices must exist."""

from __future__ import annotations

import pytest
import torch

from tests.support.speech import JAPANESE_SENTENCES, character_error_rate, japanese_speech
from tests.support.standin_directml import make_standin
from whisper_api import create_app
from whisper_api.config import ModelSettings
from whisper_api.devices import DeviceUnavailable, choose_device
from whisper_api.engine import Engine, ModelLoadError
from whisper_api.transcript import TranscriptionJob
from whisper_api import devices


def without_directml(monkeypatch):
    def missing():
        raise ImportError("No module named 'torch_directml'")

    monkeypatch.setattr(devices, "load_torch_directml", missing)


def with_directml(monkeypatch, **options):
    monkeypatch.setattr(devices, "load_torch_directml", lambda: make_standin(**options))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_auto_falls_back_to_cpu_and_says_why(monkeypatch):
    without_directml(monkeypatch)
    choice = choose_device("auto")
    assert choice.kind == "cpu"
    assert "torch-directml is not installed" in choice.skipped["directml"]
    assert "no CUDA device" in choice.skipped["cuda"]
    assert "directml skipped" in choice.describe()


def test_auto_prefers_directml_when_it_reports_an_adapter(monkeypatch):
    with_directml(monkeypatch)
    choice = choose_device("auto")
    assert choice.kind == "directml"
    assert choice.name == "AMD Radeon 780M Graphics"


@pytest.mark.parametrize("options", [{"adapters": ()}, {"available": False}])
def test_directml_without_an_adapter_is_skipped_by_auto(monkeypatch, options):
    with_directml(monkeypatch, **options)
    assert choose_device("auto").kind != "directml"
    with pytest.raises(DeviceUnavailable):
        choose_device("directml")


def test_explicit_directml_without_the_package_stops_start_up(monkeypatch):
    without_directml(monkeypatch)
    with pytest.raises(DeviceUnavailable, match="torch-directml is not installed"):
        choose_device("directml")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_explicit_cuda_without_a_gpu_stops_start_up():
    with pytest.raises(DeviceUnavailable, match="CUDA"):
        choose_device("cuda")


def test_model_runs_on_the_directml_device_object(monkeypatch, model_dir, settings):
    """The DirectML branch loads and moves the real model onto the device torch_directml returns."""
    with_directml(monkeypatch)
    engine = Engine.load(ModelSettings(name=str(model_dir), device="directml", warmup=False))
    assert engine.info.device == "directml"
    assert engine.info.device_name == "AMD Radeon 780M Graphics"
    assert next(engine.pipeline.model.parameters()).device == devices.load_torch_directml().device(0)
    sentence = JAPANESE_SENTENCES[3]
    transcript = engine.transcribe(TranscriptionJob(samples=japanese_speech(sentence), language="ja"))
    assert character_error_rate(sentence, transcript.text) <= 0.35
    health = create_app(settings, engine=engine).test_client().get("/health").get_json()
    assert health["device"] == "directml" and "DirectML adapter 0 of 1" in health["device_reason"]


def test_bfloat16_on_directml_stops_start_up_with_the_fix(monkeypatch, model_dir):
    with_directml(monkeypatch)
    with pytest.raises(ModelLoadError, match="DirectML has no bfloat16.*dtype = float32"):
        Engine.load(ModelSettings(name=str(model_dir), device="directml", dtype="bfloat16", warmup=False))


def test_bfloat16_on_the_cpu_transcribes_as_float32_does(model_dir, engine):
    """bfloat16 keeps about two significant digits; the transcript of a clear sentence must not
    suffer for it (measured: the same text as float32 on the benchmark's clips)."""
    bfloat16 = Engine.load(ModelSettings(name=str(model_dir), device="cpu", dtype="bfloat16", warmup=False))
    assert bfloat16.info.dtype == "bfloat16"
    assert next(bfloat16.pipeline.model.parameters()).dtype == torch.bfloat16
    sentence = JAPANESE_SENTENCES[3]
    job = TranscriptionJob(samples=japanese_speech(sentence), language="ja")
    float32_text = engine.transcribe(job).text
    bfloat16_text = bfloat16.transcribe(job).text
    assert character_error_rate(sentence, bfloat16_text) <= character_error_rate(sentence, float32_text) + 0.05, (
        bfloat16_text, float32_text
    )


@pytest.mark.parametrize(
    ("kind", "native_bfloat16", "expected"),
    [("directml", True, "float32"), ("cuda", False, "float16"), ("cpu", True, "bfloat16"), ("cpu", False, "float32")],
)
def test_auto_dtype_is_the_safe_fast_one_for_the_device(monkeypatch, kind, native_bfloat16, expected):
    monkeypatch.setattr(devices, "bfloat16_is_native", lambda: native_bfloat16)
    assert devices.resolve_dtype("auto", kind) == expected
    assert devices.resolve_dtype("float32", kind) == "float32"  # an explicit dtype is kept


def test_health_names_the_dtype_auto_resolved_to(monkeypatch, model_dir, settings):
    with_directml(monkeypatch)
    engine = Engine.load(ModelSettings(name=str(model_dir), device="directml", dtype="auto", warmup=False))
    assert engine.info.dtype == "float32"
    assert next(engine.pipeline.model.parameters()).dtype == torch.float32
    health = create_app(settings, engine=engine).test_client().get("/health").get_json()
    assert health["dtype"] == "float32"
