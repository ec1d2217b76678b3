"""Offline test speech and scoring helpers.

Tests make their own audio (pyopenjtalk for Japanese, espeak-ng for English) so
they need no recordings and no network, and score transcripts with plain
character and word error rates.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import av
import numpy as np
import soundfile
import soxr

from whisper_api.audio import SAMPLE_RATE
from whisper_api.text_metrics import character_error_rate, word_error_rate  # noqa: F401 (tests import them from here)

JAPANESE_SENTENCES: tuple[str, ...] = (
    "今日はいい天気ですね。",
    "東京駅までの行き方を教えてください。",
    "駅の近くに新しい本屋ができました。",
    "週末は家族と公園に行きました。",
    "明日の会議は午後から始まります。",
)

# Twenty-four different sentences for long clips: a 30 s window holds about eight, so no window
# repeats itself and trips the compression-ratio fallback, as real speech would not.
MEETING_SENTENCES: tuple[str, ...] = (
    "今日はいい天気ですね。",
    "東京駅までの行き方を教えてください。",
    "駅の近くに新しい本屋ができました。",
    "週末は家族と公園に行きました。",
    "明日の会議は午後から始まります。",
    "この資料を来週までに確認してください。",
    "私は毎朝コーヒーを飲みます。",
    "電車が遅れて会社に遅刻しました。",
    "昨日の夜は雨がたくさん降りました。",
    "新しいプロジェクトの予算について話し合いましょう。",
    "子供たちは夏休みを楽しみにしています。",
    "駅前のレストランで昼ご飯を食べました。",
    "来月から新しい部署で働くことになりました。",
    "会議室の予約は私がしておきます。",
    "この問題についてもう少し考えてみます。",
    "お客様からの問い合わせが増えています。",
    "売り上げは前年と比べて少し伸びました。",
    "次の打ち合わせは木曜日の十時にしましょう。",
    "報告書は金曜日までに提出してください。",
    "新しいシステムの使い方を説明します。",
    "皆さん、今日は集まってくださってありがとうございます。",
    "質問があれば、いつでも聞いてください。",
    "この計画には大きな課題が三つあります。",
    "最後に、来週の予定を確認しましょう。",
)

ENGLISH_SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "Please send me the report before the meeting tomorrow.",
    "It is a beautiful day to go for a walk in the park.",
    "Can you tell me the way to the train station?",
)

ESPEAK_INSTALL_HINT = "apt-get install espeak-ng"

# Formats soundfile writes itself: format -> (soundfile format, subtype).
_SOUNDFILE_FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
}

# Formats written through PyAV: format -> (container muxer, audio codec).
_PYAV_FORMATS: dict[str, tuple[str, str]] = {
    "mp3": ("mp3", "libmp3lame"),
    "mpeg": ("mp3", "libmp3lame"),
    "mpga": ("mp3", "libmp3lame"),
    "m4a": ("ipod", "aac"),
    "mp4": ("mp4", "aac"),
    "webm": ("webm", "libopus"),
    "oga": ("ogg", "libopus"),
}

FORMATS: tuple[str, ...] = (*_SOUNDFILE_FORMATS, *_PYAV_FORMATS)

# Opus only encodes at these rates; other requested rates are written at 48 kHz.
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class SynthesizerMissingError(RuntimeError):
    """A speech synthesizer program is not installed (tests skip on this)."""


def _resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    if source_rate == target_rate:
        return samples.astype(np.float32)
    return soxr.resample(samples, source_rate, target_rate).astype(np.float32)


def _to_mono_float32(samples: np.ndarray, rate: int) -> np.ndarray:
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    return np.clip(_resample(samples, rate, SAMPLE_RATE), -1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Voice:
    """pyopenjtalk's voice controls: speaking rate (1.0 is normal) and pitch shift in half tones."""

    speed: float = 1.0
    half_tone: float = 0.0


DEFAULT_VOICE = Voice()
# A second speaker for dialogs: quicker and four half tones lower.
SECOND_VOICE = Voice(speed=1.15, half_tone=-4.0)


@functools.lru_cache(maxsize=256)
def _cached_japanese_speech(text: str, voice: Voice) -> np.ndarray:
    import pyopenjtalk

    with warnings.catch_warnings():
        # pyopenjtalk-plus's Sudachi setup emits a DeprecationWarning that is not ours.
        warnings.simplefilter("ignore", DeprecationWarning)
        samples, rate = pyopenjtalk.tts(text, speed=voice.speed, half_tone=voice.half_tone)
    return _to_mono_float32(np.asarray(samples) / 32768.0, rate)


def japanese_speech(text: str, voice: Voice = DEFAULT_VOICE) -> np.ndarray:
    """Japanese speech for text: float32 mono in [-1, 1] at 16 kHz."""
    return _cached_japanese_speech(text, voice).copy()


def espeak_available() -> bool:
    """Whether the espeak-ng program is installed."""
    return shutil.which("espeak-ng") is not None


@functools.lru_cache(maxsize=64)
def _cached_english_speech(text: str) -> np.ndarray:
    program = shutil.which("espeak-ng")
    if program is None:
        raise SynthesizerMissingError(
            f"espeak-ng is not installed; English test speech needs it: {ESPEAK_INSTALL_HINT}"
        )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "speech.wav"
        # Text goes through stdin so a leading "-" is never read as an option.
        subprocess.run(
            [program, "-v", "en-us", "-s", "150", "-w", str(path), "--stdin"],
            input=text.encode(),
            check=True,
            capture_output=True,
        )
        samples, rate = soundfile.read(path, dtype="float64")
    return _to_mono_float32(samples, rate)


def english_speech(text: str) -> np.ndarray:
    """English speech for text (espeak-ng): float32 mono in [-1, 1] at 16 kHz."""
    return _cached_english_speech(text).copy()


def silence(seconds: float) -> np.ndarray:
    """Digital silence of the given length at 16 kHz."""
    if seconds < 0:
        raise ValueError(f"seconds must not be negative: {seconds}")
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


def concatenate(
    *clips: np.ndarray, gap_seconds: float = 0.5
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Join 16 kHz clips with silence between them.

    Returns the joined audio and each clip's (start, end) in seconds within it,
    so long-audio tests know where every sentence should be timestamped.
    """
    gap = silence(gap_seconds)
    parts: list[np.ndarray] = []
    spans: list[tuple[float, float]] = []
    position = 0
    for index, clip in enumerate(clips):
        if index:
            parts.append(gap)
            position += len(gap)
        clip = np.asarray(clip, dtype=np.float32)
        parts.append(clip)
        spans.append((position / SAMPLE_RATE, (position + len(clip)) / SAMPLE_RATE))
        position += len(clip)
    joined = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return joined, spans


def encode(
    samples: np.ndarray,
    format: str,
    sample_rate: int = SAMPLE_RATE,
    channels: int = 1,
) -> bytes:
    """Encode 16 kHz mono samples as an in-memory file of the given format.

    sample_rate and channels describe the file: the audio is resampled from
    16 kHz and the mono signal copied to every channel, so tests can exercise
    the server's decoding of other rates and stereo input.
    """
    format = format.lower()
    if format not in FORMATS:
        raise ValueError(f"unsupported format {format!r}; choose from {FORMATS}")
    mono = np.asarray(samples, dtype=np.float32)
    if mono.ndim != 1:
        raise ValueError("samples must be one-dimensional (mono)")
    mono = np.clip(_resample(mono, SAMPLE_RATE, sample_rate), -1.0, 1.0)
    frames = np.repeat(mono[:, np.newaxis], channels, axis=1)  # (time, channels)
    buffer = io.BytesIO()
    if format in _SOUNDFILE_FORMATS:
        file_format, subtype = _SOUNDFILE_FORMATS[format]
        soundfile.write(buffer, frames, sample_rate, format=file_format, subtype=subtype)
    else:
        muxer, codec = _PYAV_FORMATS[format]
        _encode_with_pyav(buffer, frames, sample_rate, muxer, codec)
    return buffer.getvalue()


def _encode_with_pyav(
    buffer: io.BytesIO, frames: np.ndarray, sample_rate: int, muxer: str, codec: str
) -> None:
    channels = frames.shape[1]
    layout = "mono" if channels == 1 else "stereo" if channels == 2 else f"{channels}c"
    codec_rate = sample_rate
    if codec == "libopus" and sample_rate not in _OPUS_RATES:
        codec_rate = 48000
    with av.open(buffer, mode="w", format=muxer) as container:
        stream = container.add_stream(codec, rate=codec_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(frames.T), format="fltp", layout=layout
        )
        frame.sample_rate = sample_rate
        frame.pts = 0
        # PyAV's encoder resamples and re-chunks to the codec's frame size.
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def decoded_duration(data: bytes) -> float:
    """Seconds of audio PyAV decodes from an encoded file."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = 0
        rate = 0
        for frame in container.decode(stream):
            samples += frame.samples
            rate = frame.sample_rate
    return samples / rate if rate else 0.0
