"""The typed job and result passed between routes, engine and formatters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TranscriptionJob:
    samples: np.ndarray  # float32 mono 16 kHz
    task: str = "transcribe"  # or "translate"
    language: str | None = None  # Whisper code; None detects it
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    # (units done, units total) as decoding goes: once (0, total), then after each window/chunk
    on_progress: Callable[[int, int], None] | None = field(default=None, compare=False, repr=False)

    @property
    def duration(self) -> float:
        from .audio import SAMPLE_RATE

        return len(self.samples) / SAMPLE_RATE


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word] = field(default_factory=list)


@dataclass(frozen=True)
class Transcript:
    task: str
    language: str  # Whisper code
    duration: float
    text: str
    segments: list[Segment]
    words: list[Word] | None = None  # set when word timestamps were asked for
    # seconds of model time spent on this job (calls shared with other jobs split by their rows)
    model_seconds: float = field(default=0.0, compare=False)
