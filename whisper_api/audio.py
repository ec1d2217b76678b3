"""Decoding uploads in memory into float32 mono 16 kHz samples, the model's input."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile

SAMPLE_RATE = 16000  # the model's input rate: every module takes it from here
SUPPORTED_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")


# Rates outside these bounds are no real recording; a header that claims one is lying or broken,
# and resampling from it would cost absurd time or memory.
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000


class AudioDecodeError(ValueError):
    """The bytes are not audio that any of our decoders can read."""


class AudioTooLong(ValueError):
    """The audio lasts longer than the caller allows; raised before resampling, which would cost
    memory in proportion to the length."""

    def __init__(self, seconds: float, limit: float) -> None:
        super().__init__(f"The audio is {seconds:.0f} s long; this server accepts at most {limit:.0f} s.")
        self.seconds = seconds
        self.limit = limit


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    source_sample_rate: int
    source_channels: int

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def decode(data: bytes, max_seconds: float | None = None) -> DecodedAudio:
    """Decode any container/codec soundfile or PyAV reads, mix to mono, resample to 16 kHz.

    soundfile goes first because it reads PCM wav/flac/ogg exactly and fast; PyAV (FFmpeg's
    libraries, bundled in its wheels so Windows needs no ffmpeg) reads everything else.
    """
    if not data:
        raise AudioDecodeError("the file is empty")
    try:
        samples, sample_rate, channels = _decode_with_soundfile(data)
    except Exception:
        try:
            samples, sample_rate, channels = _decode_with_pyav(data, max_seconds)
        except AudioTooLong:
            raise
        except Exception as error:
            raise AudioDecodeError(f"the file could not be decoded as audio ({type(error).__name__})") from None
    if samples.size == 0:
        raise AudioDecodeError("the file holds no audio samples")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(
            f"the sample rate of {sample_rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )
    seconds = samples.size / sample_rate
    if max_seconds is not None and seconds > max_seconds:
        raise AudioTooLong(seconds, max_seconds)
    samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    samples = np.clip(samples, -1.0, 1.0)
    return DecodedAudio(resample(samples, sample_rate), sample_rate, channels)


def resample(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate != SAMPLE_RATE:
        import librosa

        samples = librosa.resample(samples, orig_sr=sample_rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    return np.ascontiguousarray(samples, dtype=np.float32)


def _decode_with_soundfile(data: bytes) -> tuple[np.ndarray, int, int]:
    samples, sample_rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples.mean(axis=1), int(sample_rate), samples.shape[1]


def _decode_with_pyav(data: bytes, max_seconds: float | None) -> tuple[np.ndarray, int, int]:
    """Decode with FFmpeg's libraries, stopping as soon as the audio passes max_seconds so that a
    small, highly compressed upload cannot expand into gigabytes."""
    import av

    with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise AudioDecodeError("no audio stream")
        stream = container.streams.audio[0]
        channels = stream.codec_context.channels or 1
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        pieces: list[np.ndarray] = []
        limit = None if max_seconds is None else max_seconds * SAMPLE_RATE
        decoded = 0
        try:
            for frame in container.decode(stream):
                for converted in resampler.resample(frame):
                    pieces.append(converted.to_ndarray().reshape(-1))
                    decoded += pieces[-1].size
                if limit is not None and decoded > limit:
                    seconds = float(container.duration) / 1e6 if container.duration else decoded / SAMPLE_RATE
                    raise AudioTooLong(max(seconds, decoded / SAMPLE_RATE), max_seconds)
        except av.FFmpegError:
            if not pieces:
                raise
            # a truncated or damaged tail: keep the audio decoded before it, as ffmpeg does
        for converted in resampler.resample(None):
            pieces.append(converted.to_ndarray().reshape(-1))
    if not pieces:
        raise AudioDecodeError("no audio frames")
    return np.concatenate(pieces).astype(np.float32), SAMPLE_RATE, channels
