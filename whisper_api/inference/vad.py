"""Speech regions of a clip, from Silero VAD's per-frame speech probabilities.

The model is the batched ("sequence") ONNX export shipped in the `silero-vad` wheel: every
32 ms frame of a clip goes through a few ONNX Runtime calls instead of one Python call per frame
(measured on 3 minutes of Japanese speech, on the 2-core CPU: 0.3 s against 1.0 s for the
streaming ONNX model and 1.4 s for the TorchScript one, with bit-identical probabilities).
The file is read from the installed package without importing it: `import silero_vad` runs
`torch.set_num_threads(1)`, which would slow Whisper itself down.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cancellation import Cancellation, raise_if_cancelled

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512  # the model's frame at 16 kHz: 32 ms
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
CONTEXT_SAMPLES = 64  # each frame is fed with the previous frame's last 64 samples before it
STATE_SIZE = 128  # the LSTM's hidden and cell state width
# Frames per ONNX call: 16 s of audio. Measured 0.28-0.30 s for 3 minutes at 128-512 frames,
# 0.34 s at 2048 and 0.45 s at 8192 (bigger blocks only cost memory).
FRAMES_PER_CALL = 512
MODEL_FILE = "silero_vad_16k_sequence.onnx"
# Silero's own rule: speech ends where the probability falls below the threshold by this much,
# so one dip to just under the threshold does not end a region.
OFFSET_HYSTERESIS = 0.15


@dataclass(frozen=True)
class VadOptions:
    """How speech is found and how it is cut into chunks.

    threshold: a frame is speech from this probability on (Silero's default; its model card
        shows it separates speech from music and noise best on its benchmarks).
    min_silence_ms: a pause must last this long to end a region. 500 ms keeps the breaths and
        commas inside a sentence (synthesized and read Japanese pause 0.1-0.3 s there) in one
        region, while a pause between sentences of 0.5 s or more still separates them.
    speech_pad_ms: added to both ends of every region (never into the neighbouring region):
        Silero's probability rises a frame or two after a soft onset and falls before a
        trailing voiceless sound, and a clipped consonant costs Whisper a character.
    min_speech_ms: regions shorter than this (clicks, a cough) are dropped.
    max_chunk_seconds: the longest chunk handed to the model; Whisper's window is 30 s.
    """

    threshold: float = 0.5
    min_silence_ms: int = 500
    speech_pad_ms: int = 200
    max_chunk_seconds: float = 30.0
    min_speech_ms: int = 250

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1: {self.threshold}")
        if self.min_silence_ms < 0 or self.speech_pad_ms < 0 or self.min_speech_ms < 0:
            raise ValueError("min_silence_ms, speech_pad_ms and min_speech_ms must not be negative")
        if not 1.0 <= self.max_chunk_seconds <= 30.0:
            raise ValueError(f"max_chunk_seconds must be between 1 and 30: {self.max_chunk_seconds}")


@dataclass(frozen=True)
class SpeechRegion:
    """A stretch of speech, in seconds from the start of the clip, padding included."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def model_path() -> Path:
    """The sequence ONNX model inside the installed silero-vad package (found, not imported)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the silero-vad package is not installed: pip install -r requirements.txt")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / MODEL_FILE
    if not path.is_file():
        raise RuntimeError(f"silero-vad has no {MODEL_FILE} (version 6.2.3 or newer ships it): {path}")
    return path


class SpeechDetector:
    """Silero VAD loaded once; thread-safe (ONNX Runtime sessions may be run concurrently)."""

    def __init__(self, options: VadOptions = VadOptions()) -> None:
        import onnxruntime

        self.options = options
        session_options = onnxruntime.SessionOptions()
        # One thread: the model is tiny, a second thread made it slower (0.65 s against 0.30 s
        # for 3 minutes) and the cores belong to Whisper.
        session_options.intra_op_num_threads = 1
        session_options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(model_path()), sess_options=session_options, providers=["CPUExecutionProvider"]
        )

    def frame_probabilities(self, samples: np.ndarray, cancellation: Cancellation | None = None) -> np.ndarray:
        """Speech probability of every 32 ms frame of 16 kHz mono samples (the last frame
        zero-padded): float32, ceil(len(samples) / 512) values. The model's input is built one
        call at a time (an hour of audio would otherwise be copied three times over), and a
        cancelled job stops between calls."""
        audio = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        frame_count = -(-audio.size // FRAME_SAMPLES)
        if frame_count == 0:
            return np.zeros(0, dtype=np.float32)
        hidden = np.zeros((1, 1, STATE_SIZE), dtype=np.float32)
        cell = np.zeros((1, 1, STATE_SIZE), dtype=np.float32)
        previous_tail = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        blocks = []
        for first in range(0, frame_count, FRAMES_PER_CALL):
            raise_if_cancelled(cancellation)
            count = min(FRAMES_PER_CALL, frame_count - first)
            frames = np.zeros((count, FRAME_SAMPLES), dtype=np.float32)
            piece = audio[first * FRAME_SAMPLES : (first + count) * FRAME_SAMPLES]
            frames.reshape(-1)[: piece.size] = piece
            contexts = np.empty((count, CONTEXT_SAMPLES), dtype=np.float32)
            contexts[0] = previous_tail
            contexts[1:] = frames[:-1, -CONTEXT_SAMPLES:]
            previous_tail = frames[-1, -CONTEXT_SAMPLES:].copy()
            probabilities, hidden, cell = self._session.run(
                ["speech_probs", "hn", "cn"],
                {"input": np.concatenate((contexts, frames), axis=1), "h": hidden, "c": cell},
            )
            blocks.append(np.asarray(probabilities, dtype=np.float32).reshape(-1))
        return np.concatenate(blocks)

    def regions(self, samples: np.ndarray, probabilities: np.ndarray | None = None) -> list[SpeechRegion]:
        """The clip's speech regions in order, padded, never overlapping, inside the clip."""
        if probabilities is None:
            probabilities = self.frame_probabilities(samples)
        duration = len(samples) / SAMPLE_RATE
        return speech_regions(probabilities, duration, self.options)


def speech_regions(probabilities: np.ndarray, duration: float, options: VadOptions) -> list[SpeechRegion]:
    """Regions from per-frame probabilities: speech starts at a frame at or above the threshold
    and ends after min_silence_ms below threshold - 0.15; short regions are dropped, the rest
    padded by speech_pad_ms without running into each other or out of the clip."""
    onset = options.threshold
    offset = max(options.threshold - OFFSET_HYSTERESIS, 0.01)
    min_silence_frames = options.min_silence_ms / 1000 / FRAME_SECONDS
    spans: list[tuple[int, int]] = []  # [first frame, last frame + 1)
    start: int | None = None
    silent_since: int | None = None
    for index, probability in enumerate(np.asarray(probabilities, dtype=np.float32)):
        if start is None:
            if probability >= onset:
                start, silent_since = index, None
            continue
        if probability >= onset:
            silent_since = None
        elif probability < offset:
            if silent_since is None:
                silent_since = index
            if index + 1 - silent_since >= min_silence_frames:
                spans.append((start, silent_since))
                start, silent_since = None, None
    if start is not None:
        spans.append((start, silent_since if silent_since is not None else len(probabilities)))

    min_frames = options.min_speech_ms / 1000 / FRAME_SECONDS
    kept = [(first * FRAME_SECONDS, min(end * FRAME_SECONDS, duration)) for first, end in spans if end - first >= min_frames]
    pad = options.speech_pad_ms / 1000
    regions: list[SpeechRegion] = []
    for index, (first, last) in enumerate(kept):
        lower = kept[index - 1][1] if index else 0.0
        upper = kept[index + 1][0] if index + 1 < len(kept) else duration
        # Padding takes at most half of the pause on either side, so neighbours never overlap.
        start_time = max(first - pad, (lower + first) / 2 if index else 0.0)
        end_time = min(last + pad, (last + upper) / 2 if index + 1 < len(kept) else duration)
        regions.append(SpeechRegion(round(start_time, 3), round(end_time, 3)))
    return regions
