"""The long-form scorer measures what it claims: on segment lists written by hand against a
clip's known spans, it finds, misses, counts invented text, time over non-speech and start
errors as a person would."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.support.long_clips import silence_noise_and_tones
from tests.support.long_form_scoring import best_substring, score


@dataclass(frozen=True)
class Timed:
    start: float
    end: float
    text: str


@pytest.fixture(scope="module")
def clip():
    return silence_noise_and_tones()


def test_segments_on_the_sentences_score_perfectly(clip):
    result = score(clip, [Timed(s.start, s.end, s.text) for s in clip.sentences])
    assert (result.found, result.sentences, result.invented_characters) == (8, 8, 0)
    assert result.seconds_over_non_speech == 0 and result.median_start_error == 0


def test_text_moved_into_the_silence_is_missing_and_invented(clip):
    segments = [Timed(s.start, s.end, s.text) for s in clip.sentences]
    silence = next(n for n in clip.non_speech if n.kind == "silence")
    moved = clip.sentences[2]
    segments[2] = Timed(silence.start + 10, silence.start + 13, moved.text)
    result = score(clip, segments)
    assert result.missing == (moved.text,)
    assert result.invented_characters == len(moved.text) - 1  # the full stop is not counted
    assert result.seconds_over_non_speech == pytest.approx(3.0)


def test_a_segment_stretched_over_the_tones_is_counted(clip):
    segments = [Timed(s.start, s.end, s.text) for s in clip.sentences]
    tones = next(n for n in clip.non_speech if n.kind == "tones")
    last_before = max(i for i, s in enumerate(clip.sentences) if s.end <= tones.start)
    segments[last_before] = Timed(segments[last_before].start, tones.start + 6.5, segments[last_before].text)
    assert score(clip, segments).seconds_over_non_speech == pytest.approx(6.5, abs=0.01)


def test_start_errors_are_measured_from_the_nearest_sentence_start(clip):
    segments = [Timed(s.start + 0.8, s.end, s.text) for s in clip.sentences]
    assert score(clip, segments).median_start_error == pytest.approx(0.8)


def test_a_sentence_inside_a_longer_segment_is_found():
    assert best_substring("東京駅", "はい、東京駅までの行き方") == "東京駅"
