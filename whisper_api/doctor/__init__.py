"""`python -m whisper_api doctor`: checks this machine end to end and says, in plain words, what to fix.

One module per check: versions, adapters (Windows' list matched to DirectML's), device_choice,
tensor_checks, fallbacks (operators DirectML ran on the CPU), model_check (load, transcription
score and speed), speaker_check (the diarization model); report writes it all. The exit code is 1 when something would stop the server
or make it produce wrong text (a broken device, a model that does not load, a nonsense
transcript), else 0.
"""

from __future__ import annotations

import sys
from typing import TextIO

from ..config import Settings
from .adapters import report_adapters
from .device_choice import report_device_choice
from .fallbacks import FallbackWatcher, report_fallbacks
from .model_check import report_model_load, report_transcription
from .report import Report, quiet_logging
from .speaker_check import report_speaker_model
from .tensor_checks import report_tensor_check
from .versions import report_versions

__all__ = ["run_doctor"]


def run_doctor(settings: Settings, out: TextIO | None = None) -> int:
    """Print the report; 1 when the configured device or model would not work, else 0."""
    report = Report(out if out is not None else sys.stdout)
    with quiet_logging() as held:
        report.write(f"whisper-api doctor (config: {settings.source})")
        report_versions(report)
        report_adapters(report)
        watcher = FallbackWatcher()
        with watcher.watching():
            choice = report_device_choice(report, settings)
            device_works = choice is not None and report_tensor_check(report, choice, settings)
            if device_works:
                engine = report_model_load(report, settings)
                if engine is not None:
                    report_transcription(report, engine)
            elif choice is not None:
                report.section("Model")
                report.item("skipped", "the device failed the tensor check, so the model was not loaded")
        report_fallbacks(report, watcher, choice)
        report_speaker_model(report, settings)
    if held.lines():
        report.section("Log messages while checking")
        for line in held.lines():
            report.write(f"  {line.splitlines()[0][:300]}")
    report.section("Result")
    if report.problems:
        report.write(f"  {len(report.problems)} problem(s): the server would not work correctly with this configuration.")
        for problem in report.problems:
            report.write(f"  - {problem}")
        return 1
    if report.warnings:
        report.write(f"  Usable, with {len(report.warnings)} warning(s) above worth reading.")
    else:
        report.write("  All good: start the server with run.ps1 (or python -m whisper_api).")
    return 0
