"""CPU fallbacks: every operator DirectML ran on the CPU instead, from its warnings and log lines."""

from __future__ import annotations

import logging
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .. import devices
from .report import Report

# torch-directml says "The operator 'aten::x' is not currently supported on the DML backend and
# will fall back to run on the CPU. This may have performance implications."
FALLBACK_PATTERN = re.compile(r"fall(?:s|ing)?\s*back\s+to\s+(?:run\s+on\s+)?the\s+CPU|not currently supported on the DML", re.I)
OPERATOR_PATTERN = re.compile(r"'([^']+)'|(aten::[\w.]+)")


@dataclass
class FallbackWatcher:
    """Collects DirectML's "will fall back to run on the CPU" messages from warnings and logs."""

    messages: list[str] = field(default_factory=list)

    @contextmanager
    def watching(self) -> Iterator[None]:
        """While inside, every fallback warns: torch-directml warns once per process
        (TORCH_WARN_ONCE) unless torch.set_warn_always(True), which is restored after."""
        watcher = self

        class Collector(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                try:
                    message = record.getMessage()
                except Exception:
                    return
                if FALLBACK_PATTERN.search(message):
                    watcher.messages.append(message)

        handler = Collector(level=logging.WARNING)
        root = logging.getLogger()
        root.addHandler(handler)
        warn_always = torch.is_warn_always_enabled()
        torch.set_warn_always(True)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield
        finally:
            torch.set_warn_always(warn_always)
            root.removeHandler(handler)
        for warning in caught:
            message = str(warning.message)
            if FALLBACK_PATTERN.search(message):
                self.messages.append(message)
            else:  # not ours to count: pass it on as Python would have
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)

    def operators(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for message in self.messages:
            match = OPERATOR_PATTERN.search(message)
            counts[(match.group(1) or match.group(2)) if match else "an unnamed operator"] += 1
        return counts


def report_fallbacks(report: Report, watcher: FallbackWatcher, choice: devices.DeviceChoice | None) -> None:
    report.section("CPU fallbacks")
    if choice is None or choice.kind == "cpu":
        report.item("none", "the CPU is the device, so nothing falls back")
        return
    operators = watcher.operators()
    if not operators:
        report.ok(f"no operator fell back to the CPU on {choice.kind} (0 warnings)")
        return
    report.warn(
        f"{len(watcher.messages)} warning(s): {len(operators)} operator(s) ran on the CPU instead of {choice.kind}",
        "results stay correct, but each one copies data between GPU and CPU. If the real-time factor "
        "above is fine, ignore this; if it is slow, try [model] attention = eager, or compare with device = cpu",
    )
    for operator, count in operators.most_common():
        report.item("operator", f"{operator} ({count}x)")
