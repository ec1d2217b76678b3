"""Real human speech kept in the repository (tests/fixtures) and its reference transcripts."""

from __future__ import annotations

import csv
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
JFK_WAV = FIXTURES / "en_jfk.wav"
JFK_MP3 = FIXTURES / "en_jfk.mp3"


def reference_transcript(name: str) -> str:
    """The reference transcript MANIFEST.tsv gives for the clip `name`."""
    with open(FIXTURES / "MANIFEST.tsv", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["file"] == name:
                return row["reference_transcript"]
    raise KeyError(f"{name} is not listed in {FIXTURES / 'MANIFEST.tsv'}")
