"""The engine transcribes real speech correctly with the real Whisper base model."""

from __future__ import annotations

import pytest

from tests.support.recordings import FIXTURES, reference_transcript
from tests.support.speech import (
    ENGLISH_SENTENCES,
    JAPANESE_SENTENCES,
    SAMPLE_RATE,
    character_error_rate,
    concatenate,
    english_speech,
    espeak_available,
    japanese_speech,
    silence,
    word_error_rate,
)
from whisper_api.audio import decode
from whisper_api.transcript import TranscriptionJob

# Measured with whisper base, greedy, on CPU: the worst sentence is 0.25 CER
# (新しい heard as あったらしい); 0.35 leaves room for numeric drift, not for a broken decoder
# (a wrong language or a truncated window scores near 1.0).
JAPANESE_SENTENCE_CER_LIMIT = 0.35
# Measured: at most 0.11 WER per espeak-ng sentence ("jump" for "jumps").
ENGLISH_SENTENCE_WER_LIMIT = 0.25

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed (apt-get install espeak-ng)")


@pytest.mark.parametrize("sentence", JAPANESE_SENTENCES)
def test_japanese_speech_is_transcribed_closely(engine, sentence):
    transcript = engine.transcribe(TranscriptionJob(samples=japanese_speech(sentence), language="ja"))
    assert character_error_rate(sentence, transcript.text) <= JAPANESE_SENTENCE_CER_LIMIT, transcript.text


@needs_espeak
@pytest.mark.parametrize("sentence", ENGLISH_SENTENCES)
def test_english_speech_is_transcribed_closely(engine, sentence):
    transcript = engine.transcribe(TranscriptionJob(samples=english_speech(sentence), language="en"))
    assert word_error_rate(sentence, transcript.text) <= ENGLISH_SENTENCE_WER_LIMIT, transcript.text


def test_language_is_detected_when_not_given(engine):
    transcript = engine.transcribe(TranscriptionJob(samples=japanese_speech(JAPANESE_SENTENCES[0])))
    assert transcript.language == "ja"


@pytest.mark.parametrize("name", ["en_jfk.wav", "en_jfk.mp3"])
def test_real_human_speech_matches_its_reference(engine, name):
    audio = decode((FIXTURES / name).read_bytes())
    transcript = engine.transcribe(TranscriptionJob(samples=audio.samples, language="en"))
    # whisper base transcribes this clip word for word; punctuation is not scored
    assert word_error_rate(reference_transcript(name), transcript.text) == 0.0, transcript.text


def test_audio_longer_than_30_seconds_is_transcribed_whole(engine):
    clips = [japanese_speech(sentence) for sentence in JAPANESE_SENTENCES] * 2
    samples, spans = concatenate(*clips, gap_seconds=1.0)
    duration = len(samples) / SAMPLE_RATE
    assert duration > 35
    transcript = engine.transcribe(TranscriptionJob(samples=samples, language="ja"))

    reference = "".join(JAPANESE_SENTENCES) * 2
    assert character_error_rate(reference, transcript.text) <= 0.2, transcript.text
    # the last sentence, spoken after the 30 s mark, is there
    assert character_error_rate(JAPANESE_SENTENCES[-1], transcript.text[-len(JAPANESE_SENTENCES[-1]) - 2 :]) <= 0.35
    starts = [segment.start for segment in transcript.segments]
    assert starts == sorted(starts)
    assert all(0 <= segment.start <= segment.end <= duration for segment in transcript.segments)
    assert transcript.segments[-1].end > spans[-2][1], "segments stop before the last sentence"
    assert [segment.id for segment in transcript.segments] == list(range(len(transcript.segments)))


def test_silence_produces_no_invented_text(engine):
    transcript = engine.transcribe(TranscriptionJob(samples=silence(10.0), language="ja"))
    assert transcript.text == ""
    assert transcript.segments == []


@pytest.mark.parametrize("strategy", ["vad", "sequential"])
def test_openai_whispers_own_expectations_on_the_jfk_clip(engine, strategy):
    """openai/whisper's tests/test_transcribe.py, on the same clip and the same base weights."""
    audio = decode((FIXTURES / "en_jfk.wav").read_bytes())
    transcript = engine.with_settings(strategy=strategy).transcribe(
        TranscriptionJob(samples=audio.samples, language="en", word_timestamps=True))
    text = transcript.text.lower()
    assert "my fellow americans" in text and "your country" in text and "do for you" in text
    assert transcript.words
    for word in transcript.words:
        assert word.start < word.end, word
    americans = next(word for word in transcript.words if word.word.strip(" ,.").lower() == "americans")
    assert americans.start <= 1.8 <= americans.end
    for segment in transcript.segments:  # with words on, a segment spans exactly its words
        assert (segment.start, segment.end) == (segment.words[0].start, segment.words[-1].end)
