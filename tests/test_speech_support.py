"""Checks of the offline test speech and scoring helpers themselves."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from tests.support.speech import (
    ENGLISH_SENTENCES,
    ESPEAK_INSTALL_HINT,
    FORMATS,
    JAPANESE_SENTENCES,
    SAMPLE_RATE,
    character_error_rate,
    concatenate,
    decoded_duration,
    encode,
    english_speech,
    espeak_available,
    japanese_speech,
    silence,
    word_error_rate,
)

pytestmark = pytest.mark.model  # child processes, model conversion or speech synthesis: not pure logic

needs_espeak = pytest.mark.skipif(
    not espeak_available(), reason=f"espeak-ng is not installed ({ESPEAK_INSTALL_HINT})"
)


def _check_speech(samples: np.ndarray) -> None:
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert np.all(np.abs(samples) <= 1.0)
    assert 0.5 < len(samples) / SAMPLE_RATE < 10.0
    assert np.sqrt(np.mean(samples**2)) > 0.01  # not silent


@pytest.mark.parametrize("text", JAPANESE_SENTENCES)
def test_japanese_speech(text: str) -> None:
    _check_speech(japanese_speech(text))


@needs_espeak
@pytest.mark.parametrize("text", ENGLISH_SENTENCES)
def test_english_speech(text: str) -> None:
    _check_speech(english_speech(text))


def test_cached_speech_is_not_shared() -> None:
    first = japanese_speech(JAPANESE_SENTENCES[0])
    first[:] = 0.0
    assert np.any(japanese_speech(JAPANESE_SENTENCES[0]) != 0.0)


def test_silence() -> None:
    samples = silence(1.5)
    assert samples.dtype == np.float32
    assert len(samples) == 24000
    assert not np.any(samples)


def test_concatenate_spans() -> None:
    first, second = japanese_speech(JAPANESE_SENTENCES[0]), japanese_speech(JAPANESE_SENTENCES[1])
    joined, spans = concatenate(first, second, gap_seconds=2.0)
    assert len(joined) == len(first) + 2 * SAMPLE_RATE + len(second)
    assert spans[0] == (0.0, len(first) / SAMPLE_RATE)
    assert spans[1][0] == pytest.approx(spans[0][1] + 2.0)
    start = round(spans[1][0] * SAMPLE_RATE)
    np.testing.assert_array_equal(joined[start : start + len(second)], second)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("sample_rate", [SAMPLE_RATE, 44100])
@pytest.mark.parametrize("format", FORMATS)
def test_encode_decodes_back(format: str, sample_rate: int, channels: int) -> None:
    samples = japanese_speech(JAPANESE_SENTENCES[0])
    data = encode(samples, format, sample_rate=sample_rate, channels=channels)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.channels == channels
        decoded = np.concatenate(
            [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        )
    assert decoded_duration(data) == pytest.approx(len(samples) / SAMPLE_RATE, abs=0.1)
    original_loudness = np.sqrt(np.mean(samples**2))
    decoded_loudness = np.sqrt(np.mean(decoded.astype(np.float64) ** 2))
    if np.issubdtype(decoded.dtype, np.integer):
        decoded_loudness /= np.iinfo(decoded.dtype).max
    assert decoded_loudness == pytest.approx(original_loudness, rel=0.3)


def test_encode_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unsupported format"):
        encode(silence(1.0), "aiff")


def test_character_error_rate() -> None:
    assert character_error_rate("今日はいい天気ですね。", "今日はいい天気ですね。") == 0.0
    # Punctuation, spaces and full-width forms are ignored.
    assert character_error_rate("今日は、いい天気ですね！", "今日は いい天気ですね!") == 0.0
    assert character_error_rate("ＡＢＣ", "abc") == 0.0
    # One substitution out of ten scored characters.
    assert character_error_rate("今日はいい天気ですね。", "今日はいい電気ですね。") == pytest.approx(1 / 10)
    assert character_error_rate("あいう", "") == 1.0
    assert character_error_rate("あいう", "あいうえお") == pytest.approx(2 / 3)
    assert character_error_rate("", "") == 0.0


def test_word_error_rate() -> None:
    reference = "The quick brown fox jumps over the lazy dog."
    assert word_error_rate(reference, "the quick brown fox jumps over the lazy dog") == 0.0
    assert word_error_rate(reference, "The quick brown cat jumps over the lazy dog.") == pytest.approx(1 / 9)
    assert word_error_rate(reference, "quick brown fox jumps over the lazy dog") == pytest.approx(1 / 9)
    assert word_error_rate("Hello, world!", "hello world extra") == pytest.approx(1 / 2)
    assert word_error_rate("Hello", "") == 1.0
