"""`python -m whisper_api doctor` reports the machine, the device and a real transcription, and
exits non-zero when the device it would use is broken."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tests.support.directml_doubles import (
    BASIC_RENDER_DRIVER, RADEON, NativeDouble, directml_double, use_directml_double, without_directml,
)
from whisper_api import devices
from whisper_api.__main__ import main
from whisper_api.diarization.weights import WEIGHTS_SHA256
from whisper_api.doctor import adapters, device_choice, model_check
from whisper_api.text_metrics import character_error_rate

REPOSITORY = Path(__file__).resolve().parents[1]
FALLBACK_WARNING = (
    "The operator 'aten::repeat_interleave.Tensor' is not currently supported on the DML backend and will "
    "fall back to run on the CPU. This may have performance implications."
)
FALLBACK_LOG = "The operator 'aten::_fft_r2c' is not currently supported on the DML backend and will fall back to run on the CPU."


def write_config(tmp_path: Path, model: str, device: str = "cpu", extra: str = "") -> Path:
    path = tmp_path / "doctor.ini"
    path.write_text(
        f"[model]\nname = {model}\ndevice = {device}\n{extra}[deployment:whisper]\n", encoding="utf-8"
    )
    return path


def run_doctor(capsys, config: Path) -> tuple[int, str]:
    exit_code = main(["doctor", "--config", str(config)])
    return exit_code, capsys.readouterr().out


def heard_text(output: str) -> str:
    return re.search(r"^  heard\s+(.*)$", output, re.M).group(1)


def expected_sentence() -> str:
    return model_check.CLIP_TEXT_PATH.read_text(encoding="utf-8").strip()


def test_doctor_on_cpu_reports_versions_device_model_and_a_real_transcription(tmp_path, capsys, monkeypatch, model_dir):
    without_directml(monkeypatch)
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(model_dir)))
    assert exit_code == 0, output
    for label in ("OS", "Python", "torch", "torch-directml", "transformers"):
        assert re.search(rf"^  {re.escape(label)}\s+\S", output, re.M), label
    assert re.search(r"^  torch\s+" + re.escape(torch.__version__), output, re.M)
    assert re.search(r"^  torch-directml\s+torch-directml is not installed$", output, re.M)
    assert re.search(r"^  would use\s+cpu \(CPU\)", output, re.M)
    for check in ("indexing and gather", "argmax", "sort and topk", "cumsum", "masked_fill", "embedding",
                  "convolution", "layer norm", "GELU", "softmax", "log-softmax", "attention (eager)",
                  "attention (sdpa)", "index_select (beam reorder)", "Gumbel-max sampling"):
        assert f"OK       {check}: matches the CPU" in output, check
    assert re.search(r"loaded on cpu in \d+\.\d s \((float32|bfloat16), sdpa attention\)", output)
    assert character_error_rate(expected_sentence(), heard_text(output)) <= 0.2
    assert re.search(r"real-time factor \d+\.\d\d, median of 3 runs \(spread \d+\.\d\d to \d+\.\d\d", output)
    assert "the CPU is the device, so nothing falls back" in output
    assert f"SHA-256 {WEIGHTS_SHA256} (as pinned)" in output  # the speaker model
    assert re.search(r"^  speed\s+\d+\.\d s of CPU time per minute of audio", output, re.M)
    assert "one speaker found in the one-voice clip" in output
    assert "PROBLEM" not in output
    assert not re.search(r"^\S.* (INFO|WARNING) ", output, re.M), "a log line inside the report"


def test_doctor_on_an_english_only_model_transcribes_the_english_clip(tmp_path, capsys, monkeypatch):
    from tests.support.whisper_checkpoint import ensure_whisper_tiny_en

    without_directml(monkeypatch)
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(ensure_whisper_tiny_en())))
    assert exit_code == 0, output
    assert "English-only" in output and "en_jfk.mp3" in output
    expected = model_check.ENGLISH_CLIP_TEXT_PATH.read_text(encoding="utf-8").strip()
    assert character_error_rate(expected.lower(), heard_text(output).lower()) <= 0.2
    assert "PROBLEM" not in output


def test_doctor_lists_directml_adapters_with_memory_and_runs_the_model_on_directml(tmp_path, capsys, monkeypatch, model_dir):
    use_directml_double(monkeypatch, "two_adapters")
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(model_dir), device="auto"))
    assert exit_code == 0, output
    # The stand-in's gpu_memory lists 2 GB of its 8 GB budget in use, as fractions of each tile.
    assert re.search(rf"^  adapter 0\s+{RADEON}: 2.0 GB in use", output, re.M)
    assert re.search(rf"^  adapter 1\s+{BASIC_RENDER_DRIVER}: 2.0 GB in use", output, re.M)
    assert re.search(r"^\s+float64: not supported", output, re.M)
    assert re.search(rf"^  would use\s+directml \({re.escape(RADEON)}\)", output, re.M)
    assert re.search(r"^  because\s+auto: DirectML adapter 0 of 2 \(no float64\)", output, re.M)
    assert "PROBLEM" not in output and "matrix multiply: matches the CPU" in output
    assert "loaded on directml in" in output
    assert character_error_rate(expected_sentence(), heard_text(output)) <= 0.2
    assert "no operator fell back to the CPU on directml (0 warnings)" in output


def test_doctor_counts_operators_that_fell_back_to_the_cpu(tmp_path, capsys, monkeypatch, model_dir):
    """torch-directml warns once per operator it runs on the CPU; doctor counts warnings and log lines."""
    use_directml_double(monkeypatch, "working")
    module = directml_double("working")
    device = module.device
    warned: list[bool] = []

    def device_that_warns(index: int = 0) -> torch.device:
        if not warned:
            warned.append(True)
            warnings.warn(FALLBACK_WARNING, UserWarning)
            logging.getLogger("torch_directml").warning(FALLBACK_LOG)
        return device(index)

    monkeypatch.setattr(module, "device", device_that_warns)
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(model_dir), device="directml"))
    assert exit_code == 0, output
    assert "2 warning(s): 2 operator(s) ran on the CPU instead of directml" in output
    assert re.search(r"operator\s+aten::repeat_interleave\.Tensor \(1x\)", output)
    assert re.search(r"operator\s+aten::_fft_r2c \(1x\)", output)
    assert "attention = eager" in output
    assert "Usable, with" in output


def test_directml_device_that_cannot_compute_exits_non_zero(tmp_path, capsys, monkeypatch, model_dir):
    """A device whose tensors hold no data (the meta device) fails every operation of the check."""
    use_directml_double(monkeypatch, "working")
    monkeypatch.setattr(directml_double("working"), "device", lambda index=0: torch.device("meta"))
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(model_dir), device="auto"))
    assert exit_code == 1
    assert re.search(r"PROBLEM  matrix multiply on directml \(float32\) raised \w+", output)
    assert "the device failed the tensor check, so the model was not loaded" in output
    assert "problem(s): the server would not work correctly" in output


def test_directml_device_that_raises_when_opened_exits_non_zero(tmp_path, capsys, monkeypatch, model_dir):
    use_directml_double(monkeypatch, "raises_in_device")
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(model_dir), device="directml"))
    assert exit_code == 1
    assert "the server would not start: directml is not usable: torch-directml failed in device(0): RuntimeError" in output
    assert "-> update the graphics driver" in output and "device = auto" in output


@pytest.mark.parametrize(
    ("variant", "reason"),
    [("import_fails", "torch-directml is installed but failed to import: OSError"),
     ("crashes_in_device_name", "the DirectML probe crashed")],
)
def test_directml_that_is_installed_but_fails_is_explained_not_reinstalled(tmp_path, capsys, monkeypatch, model_dir, variant, reason):
    """auto reaches the CPU; doctor says what failed and what to do, not "install torch-directml"."""
    use_directml_double(monkeypatch, variant)
    monkeypatch.setattr(device_choice, "ON_WINDOWS", True)  # where doctor warns that no GPU is used
    monkeypatch.setattr(adapters, "list_windows_adapters", lambda: [])
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(model_dir), device="auto"))
    assert exit_code == 0, output
    assert re.search(rf"^  torch-directml\s+{re.escape(reason)}", output, re.M)
    assert re.search(rf"^  directml skipped\s+{re.escape(reason)}", output, re.M)  # label and value in columns
    assert "WARNING  no GPU is used" in output and "update the graphics driver" in output
    assert "install torch-directml" not in output and "without -Cpu" not in output


def test_nonsense_transcription_exits_non_zero(tmp_path, capsys, monkeypatch, model_dir):
    """A device that computes wrong numbers often still 'transcribes': doctor must fail on the text."""
    without_directml(monkeypatch)
    monkeypatch.setattr(model_check, "CLIP_TEXT_PATH", tmp_path / "other.txt")
    (tmp_path / "other.txt").write_text("全く別の文章がここに書かれている。", encoding="utf-8")
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(model_dir)))
    assert exit_code == 1, output
    assert "PROBLEM  the transcript has little in common with the speech" in output
    assert "check [model] name" in output  # on the CPU, not advice about a GPU


def test_slow_cpu_advice_names_the_gpu_or_a_smaller_model(tmp_path, capsys, monkeypatch, model_dir):
    without_directml(monkeypatch)
    ticks = iter(range(0, 10_000, 100))  # every run takes 100 s: far slower than real time
    monkeypatch.setattr(model_check, "clock", lambda: float(next(ticks)))
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(model_dir)))
    assert exit_code == 0, output
    advice = output.split("WARNING  slower than real time", 1)[1].splitlines()[1]
    assert "use the GPU" in advice and "smaller model" in advice and "fallbacks" not in advice


def test_log_lines_wait_until_the_report_is_printed(tmp_path, capsys, monkeypatch, model_dir):
    without_directml(monkeypatch)
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stdout)
    root.addHandler(console)
    try:
        real_check = adapters.list_windows_adapters

        def noisy() -> list:
            logging.getLogger("whisper_api.devices").warning("a warning in the middle of the checks")
            return real_check()

        monkeypatch.setattr(adapters, "list_windows_adapters", noisy)
        exit_code, output = run_doctor(capsys, write_config(tmp_path, str(model_dir)))
    finally:
        root.removeHandler(console)
    before, after = output.split("Log messages while checking", 1)
    assert "a warning in the middle" not in before
    assert "WARNING whisper_api.devices: a warning in the middle of the checks" in after


def test_explicit_directml_without_the_package_exits_non_zero_with_the_fix(tmp_path, capsys, monkeypatch, model_dir):
    without_directml(monkeypatch)
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(model_dir), device="directml"))
    assert exit_code == 1
    assert "the server would not start: directml is not usable: torch-directml is not installed" in output
    assert "-> install torch-directml" in output
    assert "setup.ps1 without -Cpu" in output


def test_model_that_does_not_load_exits_non_zero_with_advice(tmp_path, capsys, monkeypatch):
    without_directml(monkeypatch)
    missing = tmp_path / "no-such-model"
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(missing)))
    assert exit_code == 1
    assert "PROBLEM  the model did not load: ModelUnavailable" in output  # whisper_api/model_source.py
    assert "neither an existing folder nor a Hugging Face model id" in output
    assert "->" in output.split("the model did not load", 1)[1]


def test_doctor_runs_as_a_command(tmp_path, model_dir):
    config = write_config(tmp_path, str(model_dir))
    completed = subprocess.run(
        [sys.executable, "-m", "whisper_api", "doctor", "--config", str(config)],
        cwd=REPOSITORY, capture_output=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"},
    )
    output = completed.stdout.decode("utf-8")
    assert completed.returncode == 0, output + completed.stderr.decode("utf-8", "replace")
    assert f"whisper-api doctor (config: {config})" in output
    assert character_error_rate(expected_sentence(), heard_text(output)) <= 0.2
    assert "All good" in output or "Usable, with" in output


@pytest.mark.skipif(sys.platform != "win32", reason="DXGI exists on Windows only")
def test_windows_adapters_are_read_from_dxgi():
    listed = adapters.list_windows_adapters()
    assert listed, "DXGI lists at least the Microsoft Basic Render Driver"
    assert all(adapter.name for adapter in listed)
    assert all(adapter.dedicated_bytes >= 0 and adapter.shared_bytes >= 0 for adapter in listed)


def test_adapters_are_matched_to_windows_memory_by_name():
    """DXGI's figures (dedicated and shared memory) go to the DirectML adapter of the same name,
    compared without trademark signs."""
    windows_adapters = [
        adapters.WindowsAdapter("Microsoft Basic Render Driver", 0, 8 * 1024**3, software=True),
        adapters.WindowsAdapter("AMD Radeon(TM) 780M Graphics", 512 * 1024**2, 15 * 1024**3, software=False),
    ]
    found = [devices.DirectMLAdapter(0, RADEON, float64_support=False, in_use_bytes=2 * 1024**3)]
    matched = adapters.match_windows_memory(found, windows_adapters)
    assert [adapter.describe_memory() for adapter in matched] == ["512 MB dedicated, 15.0 GB shared, 2.0 GB in use"]


def test_gpu_memory_fractions_become_bytes_in_use(monkeypatch):
    """torch_directml.gpu_memory lists, per tile of mb_per_tile MB, the fraction in use."""
    native = NativeDouble(budget_mb=8192, in_use_mb=1536)
    assert native.get_gpu_memory(0, 1024)[:3] == [1.0, 0.5, 0.0]
    use_directml_double(monkeypatch, "working")
    (adapter,) = devices.probe_directml_adapters().adapters
    assert adapter.in_use_bytes == 2 * 1024**3 and adapter.float64_support is False
