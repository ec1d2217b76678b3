"""The layers stay apart: the HTTP side never imports torch, the engine never imports Flask."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def imported_after(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in result.stdout.split()}


def test_routes_do_not_import_torch():
    assert "torch" not in imported_after("whisper_api.routes")


def test_engine_does_not_import_flask():
    assert "flask" not in imported_after("whisper_api.engine")


def test_speech_detection_imports_neither_torch_nor_flask_nor_silero_vad():
    """silero_vad's import sets torch to one thread; the model file is read without it."""
    imported = imported_after("whisper_api.inference.vad, whisper_api.inference.chunks")
    assert not {"torch", "flask", "silero_vad"} & imported
