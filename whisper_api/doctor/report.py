"""The doctor's report: sections of aligned items, OK/WARNING/PROBLEM lines, and what they add up to."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

LABEL_WIDTH = 17  # fits the longest label, "directml skipped"


@dataclass
class Report:
    """Writes the sections and remembers the problems (exit 1) and warnings (advice only)."""

    out: TextIO
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def write(self, text: str = "") -> None:
        try:
            self.out.write(text + "\n")
        except UnicodeEncodeError:  # a console code page without Japanese: keep going, escaped
            self.out.write(text.encode("ascii", "backslashreplace").decode("ascii") + "\n")
        self.out.flush()

    def section(self, title: str) -> None:
        self.write()
        self.write(title)
        self.write("-" * len(title))

    def item(self, label: str, value: str) -> None:
        if len(label) > LABEL_WIDTH:  # never push the value out of its column
            self.write(f"  {label}")
            label = ""
        self.write(f"  {label:<{LABEL_WIDTH}} {value}")

    def ok(self, message: str) -> None:
        self.write(f"  OK       {message}")

    def warn(self, message: str, advice: str = "") -> None:
        self.write(f"  WARNING  {message}")
        if advice:
            self.write(f"           -> {advice}")
        self.warnings.append(message)

    def problem(self, message: str, advice: str = "") -> None:
        self.write(f"  PROBLEM  {message}")
        if advice:
            self.write(f"           -> {advice}")
        self.problems.append(message)


def format_bytes(count: float) -> str:
    if count >= 1024**3:
        return f"{count / 1024**3:.1f} GB"
    return f"{count / 1024**2:.0f} MB"


@dataclass
class HeldBack:
    """Log records and warnings held back while the report prints, shown after it."""

    records: list[logging.LogRecord] = field(default_factory=list)
    warnings: list[warnings.WarningMessage] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"{record.levelname} {record.name}: {record.getMessage()}" for record in self.records]
        lines += [f"{warning.category.__name__}: {warning.message}" for warning in self.warnings]
        return lines


@contextmanager
def quiet_logging(level: int = logging.WARNING) -> Iterator[HeldBack]:
    """Route every log record (at `level` or above) and warning away from the console while the
    report prints, so nothing interleaves with it; the caller prints them afterwards."""
    held = HeldBack()

    class Holder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            held.records.append(record)

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    holder = Holder(level=level)
    root.handlers = [holder]
    root.setLevel(min(saved_level or logging.WARNING, level))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            yield held
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)
    held.warnings.extend(caught)
