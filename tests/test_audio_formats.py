"""Every audio format Azure accepts decodes in memory (no system ffmpeg) and transcribes like the wav."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import soundfile

from tests.conftest import API_KEY
from tests.support.speech import FORMATS, JAPANESE_SENTENCES, character_error_rate, encode, japanese_speech
from whisper_api.audio import SAMPLE_RATE, SUPPORTED_FORMATS, AudioDecodeError, decode

SENTENCE = JAPANESE_SENTENCES[3]


def transcribe(url: str, audio: bytes, filename: str) -> str:
    response = requests.post(
        f"{url}/v1/audio/transcriptions", headers={"Authorization": f"Bearer {API_KEY}"},
        files={"file": (filename, audio)}, data={"model": "whisper", "language": "ja"}, timeout=120,
    )
    assert response.status_code == 200, response.text
    return response.json()["text"]


@pytest.fixture(scope="module")
def wav_text(live_server) -> str:
    return transcribe(live_server, encode(japanese_speech(SENTENCE), "wav"), "speech.wav")


def test_every_azure_format_is_covered():
    assert set(FORMATS) == set(SUPPORTED_FORMATS)


@pytest.mark.parametrize("audio_format", [name for name in SUPPORTED_FORMATS if name != "wav"])
def test_each_format_transcribes_to_the_same_text_as_the_wav(live_server, wav_text, audio_format):
    audio = encode(japanese_speech(SENTENCE), audio_format)
    text = transcribe(live_server, audio, f"speech.{audio_format}")
    assert character_error_rate(wav_text, text) == 0.0, (audio_format, text, wav_text)


@pytest.mark.parametrize("sample_rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_any_rate_and_channel_count_becomes_16k_mono(sample_rate, channels):
    seconds = 0.5
    tone = np.sin(2 * np.pi * 440 * np.arange(int(sample_rate * seconds)) / sample_rate).astype(np.float32) * 0.5
    import io

    buffer = io.BytesIO()
    soundfile.write(buffer, np.repeat(tone[:, None], channels, axis=1), sample_rate, format="WAV", subtype="PCM_24")
    audio = decode(buffer.getvalue())
    assert audio.samples.dtype == np.float32
    assert audio.samples.ndim == 1
    assert abs(len(audio.samples) - SAMPLE_RATE * seconds) <= 2
    assert (audio.source_sample_rate, audio.source_channels) == (sample_rate, channels)
    assert 0.3 < np.abs(audio.samples).max() <= 0.55


@pytest.mark.parametrize("data", [b"", b"RIFF\x00\x00", b"hello world" * 50, bytes(range(256)) * 40])
def test_bytes_that_are_not_audio_raise_a_decode_error(data):
    with pytest.raises(AudioDecodeError):
        decode(data)
