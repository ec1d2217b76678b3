"""Where a benchmark's table goes: printed, and written to --output or bench/results/HOST-DATE[-KIND].md."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path


def write_report(text: str, output: Path | None, kind: str = "") -> Path:
    print(text)
    suffix = f"-{kind}" if kind else ""
    output = output or Path("bench/results") / f"{platform.node() or 'machine'}-{datetime.date.today()}{suffix}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n", encoding="utf-8")
    print(f"written to {output}")
    return output
