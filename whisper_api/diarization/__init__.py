"""Who spoke when: CAM++ speaker embeddings, spectral clustering and speaker-labelled segments."""

from .pipeline import Diarization, Diarizer, KnownSpeaker
from .weights import SpeakerModelUnavailable, download_weights, verified_weights

__all__ = ["Diarization", "Diarizer", "KnownSpeaker", "SpeakerModelUnavailable", "download_weights",
           "verified_weights"]
