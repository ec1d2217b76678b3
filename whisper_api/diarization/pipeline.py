"""The diarization of one clip: speech regions -> 1.5 s windows -> CAM++ embeddings -> speakers
-> turns -> the transcript's segments, each with its speaker."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..inference.vad import FRAME_SECONDS, SpeechDetector, VadOptions
from ..transcript import Transcript
from .clustering import MAX_SPEAKERS, cluster
from .embeddings import SpeakerEmbedder
from .features import SAMPLE_RATE
from .labelling import Turn, speaker_names, split_by_speaker, turns_from_windows

WINDOW_SECONDS = 1.5  # 3D-Speaker's diarization windows: long enough for a voice, short enough for a turn
HOP_SECONDS = 0.75
# Speech regions for speakers, not for Whisper: people take turns after gaps of about 0.2 s (often
# less), so a pause of 0.12 s already cuts a region, and a short "はい" (0.15 s) still counts. A
# window never straddles two regions, so a quick reply is not averaged into its neighbours' voices.
SPEAKER_VAD = VadOptions(threshold=0.5, min_silence_ms=120, speech_pad_ms=60, min_speech_ms=150)
# A known speaker names the cluster most like their reference when they are also that cluster's
# most similar reference and at least this similar (CAM++ puts one voice's clips above ~0.6).
KNOWN_SPEAKER_SIMILARITY = 0.45
PAUSE_PROBABILITY = 0.35  # Silero's speech-end level (threshold 0.5 less its 0.15 hysteresis)


@dataclass(frozen=True)
class KnownSpeaker:
    name: str
    samples: np.ndarray  # float32 mono 16 kHz, 2-10 s


@dataclass(frozen=True)
class Diarization:
    turns: list[Turn]
    names: dict[int, str]  # cluster index -> speaker name
    seconds: float  # CPU time it took

    def named_turns(self) -> list[tuple[float, float, str]]:
        return [(turn.start, turn.end, self.names[turn.speaker]) for turn in self.turns]


class Diarizer:
    """CAM++ and Silero VAD loaded once; one clip at a time (the CPU is the limit)."""

    def __init__(self, weights: Path | None = None, max_speakers: int = MAX_SPEAKERS) -> None:
        self.embedder = SpeakerEmbedder(weights)
        self.detector = SpeechDetector(SPEAKER_VAD)
        self.max_speakers = max_speakers

    @property
    def weights_path(self) -> Path:
        return self.embedder.weights_path

    def diarize(self, samples: np.ndarray, known: tuple[KnownSpeaker, ...] = ()) -> Diarization:
        started = time.perf_counter()
        duration = len(samples) / SAMPLE_RATE
        probabilities = self.detector.frame_probabilities(samples)
        regions = [(region.start, region.end) for region in self.detector.regions(samples, probabilities)]
        if not regions and duration > 0:
            regions = [(0.0, duration)]  # nothing sounded like speech: still one speaker, not none
        windows = sliding_windows(regions)
        embeddings = self.embedder.embed(samples, windows)
        labels = cluster(embeddings, self.max_speakers)
        turns = turns_from_windows(regions, windows, labels.tolist(), lambda start, end: quietest_moment(probabilities, start, end))
        order = [turn.speaker for turn in turns]
        named = self.match_known(embeddings, labels, known)
        return Diarization(turns, speaker_names(order, named), time.perf_counter() - started)

    def label(self, transcript: Transcript, diarization: Diarization) -> Transcript:
        """The transcript with a speaker on every segment, split where the speaker changes."""
        pieces = split_by_speaker(transcript.segments, diarization.turns)
        fallback = diarization.names.get(diarization.turns[0].speaker, "A") if diarization.turns else "A"
        segments = [
            replace(segment, id=index, speaker=diarization.names.get(speaker, fallback) if speaker is not None else fallback)
            for index, (segment, speaker) in enumerate(pieces)
        ]
        return replace(transcript, segments=segments)

    def match_known(self, embeddings: np.ndarray, labels: np.ndarray, known: tuple[KnownSpeaker, ...]) -> dict[int, str]:
        """Cluster index -> known name, one to one, for mutually most similar pairs."""
        if not known or len(labels) == 0:
            return {}
        references = np.stack([self.embedder.embed_clip(speaker.samples) for speaker in known])
        clusters = sorted(set(labels.tolist()))
        centroids = np.stack([embeddings[labels == label].mean(axis=0) for label in clusters])
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-10)
        similarity = references @ centroids.T  # (known, clusters)
        matches: dict[int, str] = {}
        for reference_index, row in enumerate(similarity):
            cluster_index = int(np.argmax(row))
            mutual = int(np.argmax(similarity[:, cluster_index])) == reference_index
            if mutual and row[cluster_index] >= KNOWN_SPEAKER_SIMILARITY:
                matches[clusters[cluster_index]] = known[reference_index].name
        return matches


def quietest_moment(probabilities: np.ndarray, start: float, end: float) -> float | None:
    """The middle of the least speech-like stretch in [start, end] when it is a pause (the speech
    probability below PAUSE_PROBABILITY), else None."""
    first, last = int(start / FRAME_SECONDS), int(np.ceil(end / FRAME_SECONDS))
    stretch = probabilities[first:last]
    if stretch.size == 0 or stretch.min() >= PAUSE_PROBABILITY:
        return None
    quiet = np.flatnonzero(stretch <= stretch.min() + 0.05)
    # the longest run of the quietest frames: a pause between people, not a stop consonant
    runs = np.split(quiet, np.flatnonzero(np.diff(quiet) > 1) + 1)
    longest = max(runs, key=len)
    return (first + 0.5 * (longest[0] + longest[-1] + 1)) * FRAME_SECONDS


def sliding_windows(regions: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """1.5 s windows every 0.75 s inside each region, the last one ending with it; a region shorter
    than a window is one window."""
    windows: list[tuple[float, float]] = []
    for start, end in regions:
        if end - start <= WINDOW_SECONDS:
            windows.append((start, end))
            continue
        position = start
        while position + WINDOW_SECONDS < end:
            windows.append((position, position + WINDOW_SECONDS))
            position += HOP_SECONDS
        windows.append((end - WINDOW_SECONDS, end))
    return windows
