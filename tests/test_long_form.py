"""Long audio with the default strategy: on clips of known sentences at known times (two voices,
long silence, noise and chimes, speech with no pause, repeated sentences, a late start and a
cut-off end) every sentence is found where it was said, nothing is invented, segments keep off
silence, noise and music, start within half a second of their speech, are ordered, never
overlap and stay inside the audio, with words inside their segments.

The real Whisper base model on the CPU in float32; one transcription per clip.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

from tests.support.long_clips import (
    LongFormClip,
    late_start_cut_off,
    long_monologue,
    repeated_sentences,
    silence_noise_and_tones,
    two_voice_dialog,
)
from tests.support.long_form_scoring import SENTENCE_CER_LIMIT, ClipScore, score, sentence_error
from whisper_api.config import ModelSettings
from whisper_api.engine import Engine
from whisper_api.transcript import Transcript, TranscriptionJob

STRATEGY = "auto"  # the default, on every device
MAX_SECONDS_OVER_NON_SPEECH = 2.0
MAX_MEDIAN_START_ERROR = 0.5
CLIPS = {
    build.__name__: build
    for build in (two_voice_dialog, silence_noise_and_tones, long_monologue, repeated_sentences, late_start_cut_off)
}
WITH_WORDS = "two_voice_dialog"


@pytest.fixture(scope="module")
def default_engine(engine: Engine, model_settings: ModelSettings) -> Engine:
    if model_settings.strategy == STRATEGY:
        return engine
    return engine.with_settings(strategy=STRATEGY)


@pytest.fixture(scope="module")
def clips() -> dict[str, LongFormClip]:
    return {name: build() for name, build in CLIPS.items()}


@pytest.fixture(scope="module")
def transcripts(default_engine: Engine, clips: dict[str, LongFormClip]) -> Callable[[str], Transcript]:
    """Each clip is transcribed once, when a test first asks for it."""

    @functools.cache
    def transcript(name: str) -> Transcript:
        job = TranscriptionJob(samples=clips[name].samples, language="ja", word_timestamps=name == WITH_WORDS)
        return default_engine.transcribe(job)

    return transcript


def scored(clips, transcripts, name: str) -> tuple[LongFormClip, Transcript, ClipScore]:
    clip, transcript = clips[name], transcripts(name)
    return clip, transcript, score(clip, transcript.segments)


@pytest.mark.parametrize("name", CLIPS)
def test_every_sentence_is_found_where_it_was_said(clips, transcripts, name):
    clip, _, result = scored(clips, transcripts, name)
    assert result.missing == (), f"{result.found}/{result.sentences} found; missing {result.missing}"


@pytest.mark.parametrize("name", CLIPS)
def test_no_text_is_invented_outside_the_sentences(clips, transcripts, name):
    _, _, result = scored(clips, transcripts, name)
    assert result.invented_characters == 0, result.invented_text


@pytest.mark.parametrize("name", CLIPS)
def test_segments_keep_off_silence_noise_and_tones(clips, transcripts, name):
    _, transcript, result = scored(clips, transcripts, name)
    assert result.seconds_over_non_speech <= MAX_SECONDS_OVER_NON_SPEECH, [
        (s.start, s.end, s.text) for s in transcript.segments
    ]


@pytest.mark.parametrize("name", CLIPS)
def test_segments_never_stretch_over_a_pause_of_a_second_or_more(clips, transcripts, name):
    _, transcript, result = scored(clips, transcripts, name)
    assert result.segments_across_long_pauses == 0, [(s.start, s.end, s.text) for s in transcript.segments]


@pytest.mark.parametrize("name", CLIPS)
def test_segments_start_within_half_a_second_of_their_speech(clips, transcripts, name):
    _, transcript, result = scored(clips, transcripts, name)
    assert result.median_start_error is not None
    assert result.median_start_error <= MAX_MEDIAN_START_ERROR, [(s.start, s.end, s.text) for s in transcript.segments]


@pytest.mark.parametrize("name", CLIPS)
def test_segments_are_ordered_apart_and_inside_the_audio(clips, transcripts, name):
    clip, transcript, _ = scored(clips, transcripts, name)
    segments = transcript.segments
    assert segments
    assert all(0.0 <= s.start <= s.end <= clip.duration + 0.01 for s in segments)
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:]))


def test_words_lie_inside_their_segments(clips, transcripts):
    _, transcript, _ = scored(clips, transcripts, WITH_WORDS)
    assert transcript.words
    for segment in transcript.segments:
        assert segment.words, segment.text
        for word in segment.words:
            assert segment.start - 0.01 <= word.start <= word.end <= segment.end + 0.01, (segment, word)
        assert all(a.start <= b.start for a, b in zip(segment.words, segment.words[1:]))


# The failures issue 10 reported, as they were seen.
def test_the_tail_of_the_repeated_sentences_is_not_dropped(clips, transcripts):
    """sequential wrote the previous sentence again, ended the window on one timestamp and
    consumed it: the last sentences vanished."""
    clip = clips["repeated_sentences"]
    transcript = transcripts("repeated_sentences")
    tail = [s for s in clip.sentences if s.start > clip.duration - 20.0]
    assert len(tail) >= 4
    errors = [round(sentence_error(s, transcript.segments), 2) for s in tail]
    assert all(error < SENTENCE_CER_LIMIT for error in errors), errors


def test_the_first_sentence_after_a_40_second_silence_is_found(clips, transcripts):
    clip = clips["silence_noise_and_tones"]
    silence = next(span for span in clip.non_speech if span.kind == "silence")
    first_after = next(s for s in clip.sentences if s.start >= silence.end)
    error = sentence_error(first_after, transcripts("silence_noise_and_tones").segments)
    assert error < SENTENCE_CER_LIMIT, (first_after.text, error)
