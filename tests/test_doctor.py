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

from tests.support.speech import character_error_rate
from tests.support.standin_directml import make_standin
from whisper_api import devices, doctor
from whisper_api.__main__ import main

REPOSITORY = Path(__file__).resolve().parents[1]
RADEON = "AMD Radeon 780M Graphics"
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


def without_directml(monkeypatch) -> None:
    def missing():
        raise ImportError("No module named 'torch_directml'")

    monkeypatch.setattr(devices, "load_torch_directml", missing)


def with_directml(monkeypatch, module) -> None:
    monkeypatch.setattr(devices, "load_torch_directml", lambda: module)


def heard_text(output: str) -> str:
    return re.search(r"^  heard\s+(.*)$", output, re.M).group(1)


def expected_sentence() -> str:
    return doctor.CLIP_TEXT_PATH.read_text(encoding="utf-8").strip()


def test_doctor_on_cpu_reports_versions_device_model_and_a_real_transcription(tmp_path, capsys, monkeypatch, model_dir):
    without_directml(monkeypatch)
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(model_dir)))
    assert exit_code == 0, output
    for label in ("OS", "Python", "torch", "torch-directml", "transformers"):
        assert re.search(rf"^  {re.escape(label)}\s+\S", output, re.M), label
    assert re.search(r"^  torch\s+" + re.escape(torch.__version__), output, re.M)
    assert "torch-directml  not installed" in output
    assert re.search(r"^  would use\s+cpu \(CPU\)", output, re.M)
    assert output.count("OK       ") >= 6 and "attention (sdpa): matches the CPU" in output
    assert re.search(r"loaded on cpu in \d+\.\d s \(73 M parameters", output)
    assert character_error_rate(expected_sentence(), heard_text(output)) <= 0.2
    assert re.search(r"real-time factor \d+\.\d\d", output)
    assert "the CPU is the device, so nothing falls back" in output
    assert "PROBLEM" not in output


def test_doctor_lists_directml_adapters_with_memory_and_runs_the_model_on_directml(tmp_path, capsys, monkeypatch, model_dir):
    with_directml(monkeypatch, make_standin(adapters=(RADEON, "Microsoft Basic Render Driver")))
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(model_dir), device="auto"))
    assert exit_code == 0, output
    # The stand-in's gpu_memory reports four 512 MB tiles, as torch_directml lists them.
    assert f"adapter 0       {RADEON}: 2.0 GB in use" in output
    assert "adapter 1       Microsoft Basic Render Driver: 2.0 GB in use" in output
    assert re.search(rf"^  would use\s+directml \({re.escape(RADEON)}\)", output, re.M)
    assert re.search(r"^  because\s+auto: DirectML adapter 0 of 2", output, re.M)
    assert "PROBLEM" not in output and "matrix multiply: matches the CPU" in output
    assert "loaded on directml in" in output
    assert character_error_rate(expected_sentence(), heard_text(output)) <= 0.2
    assert "no operator fell back to the CPU on directml (0 warnings)" in output


def test_doctor_counts_operators_that_fell_back_to_the_cpu(tmp_path, capsys, monkeypatch, model_dir):
    """torch-directml warns once per operator it runs on the CPU; doctor counts warnings and log lines."""
    module = make_standin()
    device = module.device
    warned: list[bool] = []

    def device_that_warns(index: int = 0) -> torch.device:
        if not warned:
            warned.append(True)
            warnings.warn(FALLBACK_WARNING, UserWarning)
            logging.getLogger("torch_directml").warning(FALLBACK_LOG)
        return device(index)

    module.device = device_that_warns
    with_directml(monkeypatch, module)
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(model_dir), device="directml"))
    assert exit_code == 0, output
    assert "2 warning(s): 2 operator(s) ran on the CPU instead of directml" in output
    assert re.search(r"operator\s+aten::repeat_interleave\.Tensor \(1x\)", output)
    assert re.search(r"operator\s+aten::_fft_r2c \(1x\)", output)
    assert "attention = eager" in output
    assert "Usable, with" in output


def test_directml_device_that_cannot_compute_exits_non_zero(tmp_path, capsys, monkeypatch, model_dir):
    """A device whose tensors hold no data (the meta device) fails every operation of the check."""
    module = make_standin()
    module.device = lambda index=0: torch.device("meta")
    with_directml(monkeypatch, module)
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(model_dir), device="auto"))
    assert exit_code == 1
    assert re.search(r"PROBLEM  matrix multiply on directml \(float32\) raised \w+", output)
    assert "the device failed the tensor check, so the model was not loaded" in output
    assert "problem(s): the server would not work correctly" in output


def test_directml_device_that_raises_when_opened_exits_non_zero(tmp_path, capsys, monkeypatch, model_dir):
    module = make_standin()

    def removed(index: int = 0) -> torch.device:
        raise RuntimeError("The GPU device instance has been suspended (DXGI_ERROR_DEVICE_REMOVED)")

    module.device = removed
    with_directml(monkeypatch, module)
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(model_dir), device="auto"))
    assert exit_code == 1
    assert "the auto device is broken: choosing it raised RuntimeError" in output
    assert "DXGI_ERROR_DEVICE_REMOVED" in output
    assert "device = cpu" in output


def test_explicit_directml_without_the_package_exits_non_zero_with_the_fix(tmp_path, capsys, monkeypatch, model_dir):
    without_directml(monkeypatch)
    exit_code, output = run_doctor(capsys, write_config(tmp_path, str(model_dir), device="directml"))
    assert exit_code == 1
    assert "the server would not start: directml is not usable: torch-directml is not installed" in output
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
    adapters = doctor.list_windows_adapters()
    assert adapters, "DXGI lists at least the Microsoft Basic Render Driver"
    assert all(adapter.name for adapter in adapters)
    assert all(adapter.dedicated_bytes >= 0 and adapter.shared_bytes >= 0 for adapter in adapters)


def test_adapters_are_matched_to_windows_memory_by_name():
    """DXGI's figures (dedicated and shared memory) go to the DirectML adapter of the same name,
    compared without trademark signs."""
    windows_adapters = [
        doctor.WindowsAdapter("Microsoft Basic Render Driver", 0, 8 * 1024**3, software=True),
        doctor.WindowsAdapter("AMD Radeon(TM) 780M Graphics", 512 * 1024**2, 15 * 1024**3, software=False),
    ]
    adapters = doctor.list_directml_adapters(make_standin(adapters=(RADEON,)), windows_adapters)
    assert [adapter.describe_memory() for adapter in adapters] == ["512 MB dedicated, 15.0 GB shared, 2.0 GB in use"]
