"""The device the configuration picks, and why the others were skipped (the server's own choice)."""

from __future__ import annotations

import sys

from .. import devices
from ..config import Settings
from .report import Report

ON_WINDOWS = sys.platform == "win32"  # where a GPU is expected (DirectML), so the CPU deserves a warning


def report_device_choice(report: Report, settings: Settings) -> devices.DeviceChoice | None:
    report.section("Device")
    requested = settings.model.device
    report.item("config asks", f"device = {requested}" + (" (DirectML, then CUDA, then the CPU)" if requested == "auto" else ""))
    try:
        choice = devices.choose_device(requested)
    except devices.DeviceUnavailable as error:
        report.problem(f"the server would not start: {requested} is not usable: {error.reason}",
                       error.advice or "set [model] device = auto")
        return None
    except Exception as error:
        report.problem(
            f"the {requested} device is broken: choosing it raised {type(error).__name__}: {error}",
            "update the graphics driver and restart Windows; meanwhile set [model] device = cpu",
        )
        return None
    report.item("would use", f"{choice.kind} ({choice.name})")
    report.item("because", choice.reason)
    for kind, why in choice.skipped.items():
        report.item(f"{kind} skipped", why)
    if requested == "auto" and choice.kind == "cpu" and ON_WINDOWS:
        why = choice.skipped.get("directml", "")
        if why == "torch-directml is not installed":
            advice = "run setup.ps1 without -Cpu to install torch-directml, then run doctor again"
        else:  # installed, but it failed: installing it again is not the answer
            advice = devices.DIRECTML_BROKEN_ADVICE
        report.warn(f"no GPU is used: transcription runs on the CPU ({why or 'no GPU found'})", advice)
    return choice
