"""The speaker model in the app, and the diarization step of a request: timed, logged, counted.

The CAM++ model loads on the first request that asks for speakers (about half a second), not at
start-up: a server whose users never ask for speakers never reads it. Without its weights such a
request is a 503 that says how to install them, before any transcription time is spent.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask, current_app

from . import access_log
from .config import DiarizationSettings
from .errors import ApiError
from .transcript import Transcript, TranscriptionJob

if TYPE_CHECKING:  # torch stays out of the HTTP side until a request asks for speakers
    from .diarization import Diarizer


class SpeakerModel:
    """Loads the Diarizer once, on first use; thread-safe."""

    def __init__(self, settings: DiarizationSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._diarizer: "Diarizer | None" = None

    def get(self) -> "Diarizer":
        with self._lock:
            if self._diarizer is None:
                from .diarization import Diarizer, SpeakerModelUnavailable

                weights = Path(self.settings.weights).expanduser() if self.settings.weights else None
                try:
                    self._diarizer = Diarizer(weights, self.settings.max_speakers)
                except SpeakerModelUnavailable as error:
                    raise ApiError(503, "speaker_model_unavailable", f"Speaker labels are not available: {error}.") from None
            return self._diarizer


def speaker_model() -> SpeakerModel:
    return current_app.extensions["whisper_api.speakers"]


def init_app(app: Flask, settings: DiarizationSettings) -> None:
    app.extensions["whisper_api.speakers"] = SpeakerModel(settings)


def label_speakers(transcript: Transcript, job: TranscriptionJob) -> tuple[Transcript, float]:
    """The transcript with a speaker on each segment, and the seconds it took (also in the access log)."""
    started = time.perf_counter()
    diarizer = speaker_model().get()
    diarization = diarizer.diarize(job.samples, job.known_speakers)
    labelled = diarizer.label(transcript, diarization)
    seconds = time.perf_counter() - started
    access_log.note(diarization_seconds=round(seconds, 3), speakers=len(set(diarization.names.values())))
    return labelled, seconds
