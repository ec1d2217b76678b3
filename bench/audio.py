"""Benchmark audio, made offline: Japanese sentences from pyopenjtalk, plus JFK's inaugural clip
from tests/fixtures."""

from __future__ import annotations


import numpy as np

from tests.support.recordings import JFK_WAV, reference_transcript
from tests.support.speech import MEETING_SENTENCES, SAMPLE_RATE, concatenate, japanese_speech

SENTENCES = MEETING_SENTENCES
JFK = JFK_WAV
JFK_TEXT = reference_transcript(JFK_WAV.name)


def short_clip() -> tuple[np.ndarray, str]:
    """About 10 s of Japanese: three sentences. Returns samples and the reference text."""
    sentences = SENTENCES[:3]
    samples, _ = concatenate(*[japanese_speech(text) for text in sentences], gap_seconds=0.5)
    return samples, "".join(sentences)


def long_clip(minutes: float) -> tuple[np.ndarray, str, bool]:
    """At least `minutes` of speech: the sentences in turn with pauses of 0.4 to 1.6 s, and JFK's
    11 s clip every two minutes or so when it is there. Returns samples, the reference text and
    whether JFK is in."""
    generator = np.random.default_rng(0)
    jfk = read_jfk()
    pieces: list[np.ndarray] = []
    reference: list[str] = []
    total = 0
    since_jfk = 0
    index = 0
    while total < minutes * 60 * SAMPLE_RATE:
        if jfk is not None and since_jfk >= 120 * SAMPLE_RATE:
            piece, since_jfk = jfk, 0
            reference.append(JFK_TEXT)
        else:
            piece = japanese_speech(SENTENCES[index % len(SENTENCES)])
            reference.append(SENTENCES[index % len(SENTENCES)])
            index += 1
        pause = np.zeros(round(generator.uniform(0.4, 1.6) * SAMPLE_RATE), dtype=np.float32)
        pieces += [piece, pause]
        total += len(piece) + len(pause)
        since_jfk += len(piece) + len(pause)
    return np.concatenate(pieces), "".join(reference), jfk is not None


def read_jfk() -> np.ndarray | None:
    if not JFK.exists():
        return None
    from whisper_api.audio import decode

    return decode(JFK.read_bytes()).samples


def wav_bytes(samples: np.ndarray) -> bytes:
    import io

    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
