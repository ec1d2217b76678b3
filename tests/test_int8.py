"""dtype = int8: int8 projection weights on the CPU, quantized at load time from the same
checkpoint; refused, with the fix, where the device has no quantized kernels."""

from __future__ import annotations

import pytest
import torch

from tests.support.directml_doubles import use_directml_double
from tests.support.speech import JAPANESE_SENTENCES, character_error_rate, japanese_speech
from whisper_api import devices
from whisper_api.config import ModelSettings
from whisper_api.engine import Engine, ModelLoadError
from whisper_api.inference.quantization import FloatProjection, Int8Projection
from whisper_api.transcript import TranscriptionJob


@pytest.fixture(scope="module")
def int8_engine(model_dir) -> Engine:
    return Engine.load(ModelSettings(name=str(model_dir), device="cpu", dtype="int8", warmup=False))


@pytest.mark.parametrize("shape", [(1, 64), (5, 64), (2, 7, 64)])
def test_int8_projection_is_the_float_product_to_two_digits(shape):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 64, generator=generator) * 0.05
    bias = torch.randn(96, generator=generator) * 0.01
    inputs = torch.randn(*shape, generator=generator)
    expected = FloatProjection(weight, bias)(inputs)
    int8 = Int8Projection(weight, bias)
    for actual in (int8(inputs), int8.plus(inputs.reshape(-1, 64), torch.zeros(expected.reshape(-1, 96).shape))):
        actual = actual.reshape(expected.shape)
        assert actual.dtype == torch.float32
        assert float((actual - expected).abs().max()) <= 0.02 * float(expected.abs().max())


def test_int8_engine_holds_int8_weights_and_releases_the_float_ones(int8_engine):
    assert int8_engine.info.dtype == "int8"
    assert int8_engine.model.int8_weights
    layer = int8_engine.model.model.model.decoder.layers[0]
    assert layer.fc1.weight.numel() == 0 and layer.self_attn.q_proj.weight.numel() == 0
    encoder_layer = int8_engine.model.model.model.encoder.layers[0]
    assert encoder_layer.fc2.weight.numel() == 0
    # the token embedding is the output projection's weight: it stays, in float32
    assert int8_engine.model.model.proj_out.weight.dtype == torch.float32


def test_int8_transcribes_as_float32_does(int8_engine, engine):
    """The same sentences, within a character error rate of float32's (measured on the bench's
    clips: within 0.01, every sentence found; docs/benchmarks.md)."""
    for sentence in JAPANESE_SENTENCES[2:4]:
        job = TranscriptionJob(samples=japanese_speech(sentence), language="ja")
        int8_text, float32_text = int8_engine.transcribe(job).text, engine.transcribe(job).text
        assert character_error_rate(sentence, int8_text) <= character_error_rate(sentence, float32_text) + 0.05, (
            int8_text, float32_text
        )


def test_int8_on_directml_stops_start_up_with_the_fix(monkeypatch, model_dir):
    use_directml_double(monkeypatch, "working")
    with pytest.raises(ModelLoadError, match="int8 runs on the CPU's quantized kernels.*DirectML.*dtype = float32"):
        Engine.load(ModelSettings(name=str(model_dir), device="directml", dtype="int8", warmup=False))


@pytest.mark.parametrize(("kind", "fix"), [("directml", "dtype = float32"), ("cuda", "dtype = float16")])
def test_int8_is_refused_off_the_cpu(kind, fix):
    assert fix in devices.dtype_problem(kind, "int8")
    assert devices.dtype_problem("cpu", "int8") is None


def test_auto_is_float32_where_torch_has_no_quantized_engine(monkeypatch):
    monkeypatch.setattr(devices, "bfloat16_is_native", lambda: False)
    monkeypatch.setattr(devices, "int8_is_supported", lambda: False)
    assert devices.resolve_dtype("auto", "cpu") == "float32"
    assert "no quantized CPU engine" in devices.dtype_problem("cpu", "int8")


def test_doctor_says_what_directml_does_with_int8_and_that_it_is_refused(tmp_path, capsys, monkeypatch, model_dir):
    from whisper_api.__main__ import main

    use_directml_double(monkeypatch, "working")
    config = tmp_path / "doctor.ini"
    config.write_text(f"[model]\nname = {model_dir}\ndevice = directml\ndtype = int8\n[deployment:whisper]\n",
                      encoding="utf-8")
    exit_code = main(["doctor", "--config", str(config)])
    output = capsys.readouterr().out
    assert exit_code == 1
    assert "int8 projection on directml:" in output and "the server refuses dtype = int8 there" in output
    assert "set [model] dtype = float32 (or float16), or device = cpu" in output


def test_int8_keeps_the_encoders_keys_and_values_in_bfloat16_on_every_path(int8_engine, engine):
    """A step reads the encoder's keys and values more than int8 weights (Whisper base at 8 rows:
    296 MB of them in float32 a step, 48 MB of weights), so int8 keeps them in bfloat16; the
    steps, the prefills and the word alignment all read them, and float32 keeps its own."""
    sentence = JAPANESE_SENTENCES[2]
    samples = japanese_speech(sentence)
    for loaded, dtype in ((int8_engine, torch.bfloat16), (engine, torch.float32)):
        model = loaded.model
        cache = loaded.decoder.forward.new_cache(model.encode(model.log_mel([samples])), 8)
        assert {key.dtype for key in cache.cross_keys + cache.cross_values} == {dtype}
    transcript = int8_engine.transcribe(TranscriptionJob(samples=samples, language="ja", word_timestamps=True))
    assert character_error_rate(sentence, transcript.text) <= 0.2, transcript.text
    assert "".join(word.word for word in transcript.words).replace(" ", "") == transcript.text.replace(" ", "")
    starts = [word.start for word in transcript.words]
    assert starts == sorted(starts) and transcript.words[-1].end <= len(samples) / 16000 + 0.5
