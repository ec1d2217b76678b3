"""Decoding uploads in memory into float32 mono 16 kHz samples, the model's input."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile

SAMPLE_RATE = 16000
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


# Frames read (and resampled) at a time: memory for a block, never for the whole file at its source
# rate, so a small compressed upload cannot expand into gigabytes before its length is known.
BLOCK_FRAMES = 1 << 18
# libsndfile reports this many frames (SF_COUNT_MAX) when the header does not say (a streamed FLAC).
UNKNOWN_FRAMES = 1 << 62
# Lengths from a compressed container's header are estimates (an mp3 without a Xing header): refuse
# from the header only when it is clearly too long; the decoded samples are capped exactly anyway.
DECLARED_LENGTH_MARGIN = 1.1


def decode(data: bytes, max_seconds: float | None = None) -> DecodedAudio:
    """Decode any container/codec soundfile or PyAV reads, mix to mono, resample to 16 kHz.

    soundfile goes first because it reads PCM wav/flac/ogg exactly and fast; PyAV (FFmpeg's
    libraries, bundled in its wheels so Windows needs no ffmpeg) reads everything else. Both check
    the length the header declares first, then decode in blocks and stop as soon as the audio
    passes `max_seconds` (a header can lie), so memory stays within a small multiple of
    `max_seconds` of 16 kHz float32 samples whatever the upload.
    """
    if not data:
        raise AudioDecodeError("the file is empty")
    try:
        samples, sample_rate, channels = _decode_with_soundfile(data, max_seconds)
    except (AudioTooLong, AudioDecodeError):
        raise
    except Exception:
        try:
            samples, sample_rate, channels = _decode_with_pyav(data, max_seconds)
        except AudioTooLong:
            raise
        except Exception as error:
            raise AudioDecodeError(f"the file could not be decoded as audio ({type(error).__name__})") from None
    if samples.size == 0:
        raise AudioDecodeError("the file holds no audio samples")
    return DecodedAudio(np.ascontiguousarray(samples, dtype=np.float32), sample_rate, channels)


def check_sample_rate(sample_rate: int) -> None:
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(
            f"the sample rate of {sample_rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )


class BlockResampler:
    """Mono blocks at the source rate in, 16 kHz float32 out, the same samples as resampling the
    whole signal at once (soxr's streaming interface, the library librosa's soxr_hq calls)."""

    def __init__(self, sample_rate: int) -> None:
        self.stream = None
        if sample_rate != SAMPLE_RATE:
            import soxr

            self.stream = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        block = np.clip(np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0).astype(np.float32)
        if self.stream is None:
            return block
        return self.stream.resample_chunk(block, last=last)


def _decode_with_soundfile(data: bytes, max_seconds: float | None) -> tuple[np.ndarray, int, int]:
    with soundfile.SoundFile(io.BytesIO(data)) as source:
        sample_rate, channels = int(source.samplerate), int(source.channels)
        check_sample_rate(sample_rate)
        declared = source.frames if 0 < source.frames < UNKNOWN_FRAMES else None
        if max_seconds is not None and declared is not None and declared / sample_rate > max_seconds:
            raise AudioTooLong(declared / sample_rate, max_seconds)
        limit = None if max_seconds is None else int(max_seconds * sample_rate)
        resampler = BlockResampler(sample_rate)
        pieces: list[np.ndarray] = []
        read = 0
        while True:
            block = source.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            if not len(block):
                break
            read += len(block)
            if limit is not None and read > limit:
                raise AudioTooLong(read / sample_rate, max_seconds)
            pieces.append(resampler(block.mean(axis=1)))
            del block
        pieces.append(resampler(np.zeros(0, dtype=np.float32), last=True))
    return np.concatenate(pieces), sample_rate, channels


def _decode_with_pyav(data: bytes, max_seconds: float | None) -> tuple[np.ndarray, int, int]:
    """Decode with FFmpeg's libraries into 16 kHz mono as it goes, stopping as soon as the audio
    passes max_seconds."""
    import av

    with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise AudioDecodeError("no audio stream")
        stream = container.streams.audio[0]
        channels = stream.codec_context.channels or 1
        source_rate = stream.codec_context.sample_rate or SAMPLE_RATE
        check_sample_rate(source_rate)
        declared = declared_seconds(container, stream)
        if max_seconds is not None and declared is not None and declared > max_seconds * DECLARED_LENGTH_MARGIN:
            raise AudioTooLong(declared, max_seconds)
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
                    raise AudioTooLong(max(declared or 0.0, decoded / SAMPLE_RATE), max_seconds)
        except av.FFmpegError:
            if not pieces:
                raise
            # a truncated or damaged tail: keep the audio decoded before it, as ffmpeg does
        for converted in resampler.resample(None):
            pieces.append(converted.to_ndarray().reshape(-1))
    if not pieces:
        raise AudioDecodeError("no audio frames")
    samples = np.concatenate(pieces).astype(np.float32)
    return np.clip(np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0), source_rate, channels


def declared_seconds(container, stream) -> float | None:
    """The length the container's header declares, where it declares one."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None
