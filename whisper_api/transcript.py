"""The typed job and result passed between routes, engine and formatters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .audio import SAMPLE_RATE
from .cancellation import Cancellation


@dataclass(frozen=True)
class SpeechOptions:
    """A request's own speech detection (`chunking_strategy` server_vad); None keeps the server's
    [model] vad_* setting."""

    threshold: float | None = None
    min_silence_ms: int | None = None
    speech_pad_ms: int | None = None

    def changes(self) -> dict[str, float | int]:
        """The fields set, as keyword arguments for the detector's options."""
        values = {"threshold": self.threshold, "min_silence_ms": self.min_silence_ms,
                  "speech_pad_ms": self.speech_pad_ms}
        return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True)
class TokenLogprob:
    """One text token as OpenAI's `logprobs` lists it."""

    token: str
    logprob: float
    bytes: list[int]


@dataclass(frozen=True)
class KnownSpeaker:
    """A speaker named by the client, with a 2-10 s reference clip of their voice."""

    name: str
    samples: np.ndarray  # float32 mono 16 kHz


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
    speaker: str | None = None  # set by diarization: "A", "B", ... or a known speaker's name
    logprobs: list[TokenLogprob] | None = None  # its text tokens', when the job asks for them


@dataclass(frozen=True)
class TranscriptionJob:
    samples: np.ndarray  # float32 mono 16 kHz
    task: str = "transcribe"  # or "translate"
    language: str | None = None  # Whisper code; None detects it
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    logprobs: bool = False  # each text token's log probability on its segment
    speech: SpeechOptions = SpeechOptions()
    diarize: bool = False  # label each segment with its speaker (after transcription, on the CPU)
    known_speakers: tuple[KnownSpeaker, ...] = field(default=(), compare=False, repr=False)
    # (units done, units total) as decoding goes: once (0, total), then after each window/chunk
    on_progress: Callable[[int, int], None] | None = field(default=None, compare=False, repr=False)
    # called once the job holds the model (before speech detection, which takes seconds on long audio)
    on_start: Callable[[], None] | None = field(default=None, compare=False, repr=False)
    # asked between decoding steps and chunk batches: a client that hung up, a server shutting down
    cancellation: Cancellation | None = field(default=None, compare=False, repr=False)
    # the segments that became final, numbered and in clip time, as soon as their batch is
    # decoded (in order, each once); streaming sends them on while later batches decode. Raising
    # from it stops the job there (a client that has gone away).
    on_segments: Callable[[list[Segment]], None] | None = field(default=None, compare=False, repr=False)

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass(frozen=True)
class Transcript:
    task: str
    language: str  # Whisper code
    duration: float
    text: str
    segments: list[Segment]
    words: list[Word] | None = None  # set when word timestamps were asked for
    logprobs: list[TokenLogprob] | None = None  # set when the job asked for them
    # seconds of model time spent on this job (calls shared with other jobs split by their rows)
    model_seconds: float = field(default=0.0, compare=False)
