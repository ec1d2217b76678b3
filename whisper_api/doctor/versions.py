"""Versions: the OS, Python and the packages whisper-api runs on."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

import torch

from .report import Report


def package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def operating_system() -> str:
    """Like platform.platform(), but names Windows 11 (build 22000 or later) as such."""
    if sys.platform == "win32":
        build = platform.version()
        try:
            number = int(build.split(".")[2])
        except (IndexError, ValueError):
            number = 0
        name = "Windows 11" if number >= 22000 else f"Windows {platform.release()}"
        return f"{name} (build {build}, {platform.machine()})"
    return f"{platform.platform()} ({platform.machine()})"


def report_versions(report: Report) -> None:
    import transformers

    report.section("System")
    report.item("OS", operating_system())
    report.item("Python", f"{platform.python_version()} ({sys.executable})")
    report.item("torch", torch.__version__)
    report.item("torch-directml", package_version("torch-directml"))
    report.item("transformers", transformers.__version__)
    if sys.platform == "win32" and sys.version_info[:2] not in ((3, 11), (3, 12)):
        report.warn(
            f"Python {platform.python_version()}: torch-directml has wheels for Python 3.11 and 3.12 only",
            "install Python 3.12 (winget install -e --id Python.Python.3.12), delete .venv and run setup.ps1 again",
        )
