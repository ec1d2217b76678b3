"""Chunk planning: speech regions become as few chunks of at most max_chunk_seconds as they
allow, as even as the pauses allow, then cut at the longest pauses, padded without overlapping;
speech with no pause is cut evenly at its quietest frames."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.long_clips import long_monologue, repeated_sentences, silence_noise_and_tones
from whisper_api.inference.chunks import CHUNK_PAD_SECONDS, CUT_WINDOW_SECONDS, Chunk, plan_chunks
from whisper_api.inference.vad import FRAME_SECONDS, SpeechDetector, SpeechRegion, VadOptions

OPTIONS = VadOptions()


def probabilities_for(duration: float, value: float = 0.9) -> np.ndarray:
    return np.full(int(np.ceil(duration / FRAME_SECONDS)), value, dtype=np.float32)


def regions(*spans: tuple[float, float]) -> list[SpeechRegion]:
    return [SpeechRegion(start, end) for start, end in spans]


def assert_well_formed(chunks: list[Chunk], speech: list[SpeechRegion], duration: float, limit: float) -> None:
    assert all(0.0 <= c.start < c.end <= duration for c in chunks)
    assert all(c.duration <= limit + 1e-6 for c in chunks)
    assert all(a.end <= b.start for a, b in zip(chunks, chunks[1:]))
    for chunk in chunks:
        assert all(chunk.start <= r.start and r.end <= chunk.end for r in chunk.regions)
    held = [r for chunk in chunks for r in chunk.regions]
    # every second of speech is in exactly one chunk (long regions arrive in pieces)
    assert sum(r.duration for r in held) == pytest.approx(sum(r.duration for r in speech), abs=1e-2)
    for region in speech:
        assert any(c.start <= region.start < c.end for c in chunks)
        assert any(c.start < region.end <= c.end for c in chunks)


def test_no_speech_no_chunks():
    assert plan_chunks([], probabilities_for(10.0, 0.0), 10.0, OPTIONS) == []


def test_speech_that_fits_is_one_padded_chunk():
    speech = regions((2.0, 5.0), (6.0, 9.0))
    (chunk,) = plan_chunks(speech, probabilities_for(12.0), 12.0, OPTIONS)
    assert (chunk.start, chunk.end) == pytest.approx((2.0 - CHUNK_PAD_SECONDS, 9.0 + CHUNK_PAD_SECONDS))
    assert chunk.regions == tuple(speech)


def test_padding_stops_at_the_edges_of_the_clip():
    (chunk,) = plan_chunks(regions((0.05, 4.0)), probabilities_for(4.1), 4.1, OPTIONS)
    assert (chunk.start, chunk.end) == (0.0, 4.1)


def test_chunks_are_cut_at_the_longest_pause_among_the_fewest_chunks():
    # 36 s of speech: two chunks are needed; pauses of 1 s, 3 s and 0.5 s: cut at the 3 s one
    speech = regions((0.0, 8.0), (9.0, 17.0), (20.0, 28.0), (28.5, 36.0))
    chunks = plan_chunks(speech, probabilities_for(36.0), 36.0, OPTIONS)
    assert [c.regions for c in chunks] == [tuple(speech[:2]), tuple(speech[2:])]
    assert_well_formed(chunks, speech, 36.0, OPTIONS.max_chunk_seconds)


def test_fewest_chunks_beat_a_longer_pause():
    # cutting at the 5 s pause leaves 30 s after it, three chunks; cutting at the 1 s pause, two
    speech = regions((0.0, 20.0), (25.0, 27.0), (28.0, 55.0))
    chunks = plan_chunks(speech, probabilities_for(55.0), 55.0, OPTIONS)
    assert [c.regions for c in chunks] == [tuple(speech[:2]), tuple(speech[2:])]
    assert_well_formed(chunks, speech, 55.0, OPTIONS.max_chunk_seconds)


def test_padding_never_runs_into_the_neighbouring_chunk():
    speech = regions((0.0, 20.0), (20.1, 35.0))
    first, second = plan_chunks(speech, probabilities_for(35.0), 35.0, OPTIONS)
    assert first.end == pytest.approx(20.05) == pytest.approx(second.start)


@pytest.mark.parametrize("limit", [30.0, 12.0])
def test_speech_longer_than_a_chunk_is_cut_evenly_at_its_quietest_frame(limit):
    options = VadOptions(max_chunk_seconds=limit)
    usable = limit - 2 * CHUNK_PAD_SECONDS
    pieces = int(np.ceil(70.0 / usable))
    even = 70.0 / pieces
    probabilities = probabilities_for(70.0)
    quiet = round((even - 1.5) / FRAME_SECONDS)  # inside the window around the even cut
    probabilities[quiet] = 0.2
    probabilities[round((even - CUT_WINDOW_SECONDS / 2 - 1.0) / FRAME_SECONDS)] = 0.0  # before the window
    speech = regions((0.0, 70.0))
    chunks = plan_chunks(speech, probabilities, 70.0, options)
    assert chunks[0].end == pytest.approx((quiet + 0.5) * FRAME_SECONDS, abs=1e-3)
    assert len(chunks) == pieces
    # the rest is cut evenly: no chunk is much longer than another
    lengths = [chunk.duration for chunk in chunks]
    assert max(lengths) - min(lengths) <= CUT_WINDOW_SECONDS + 2 * CHUNK_PAD_SECONDS
    assert_well_formed(chunks, speech, 70.0, limit)


def test_chunks_are_as_even_as_the_pauses_allow():
    # 45 s of sentences with a 2 s pause at 17 s and 0.6 s pauses elsewhere: two chunks, cut at
    # the pause nearest the middle, not at the longest one
    spans, start = [], 0.0
    while start < 45.0:
        pause = 2.0 if abs(start + 3.4 - 17.0) < 2.0 else 0.6
        spans.append((start, start + 3.4))
        start += 3.4 + pause
    speech = regions(*spans)
    duration = speech[-1].end
    chunks = plan_chunks(speech, probabilities_for(duration), duration, OPTIONS)
    assert len(chunks) == 2
    assert abs(chunks[0].duration - chunks[1].duration) <= 4.0 + 2 * CHUNK_PAD_SECONDS
    assert_well_formed(chunks, speech, duration, OPTIONS.max_chunk_seconds)


@pytest.fixture(scope="module")
def detector() -> SpeechDetector:
    return SpeechDetector(OPTIONS)


@pytest.mark.parametrize("build", [long_monologue, repeated_sentences, silence_noise_and_tones])
def test_real_speech_is_planned_into_well_formed_chunks(detector, build):
    clip = build()
    probabilities = detector.frame_probabilities(clip.samples)
    speech = detector.regions(clip.samples, probabilities)
    chunks = plan_chunks(speech, probabilities, clip.duration, OPTIONS)
    assert_well_formed(chunks, speech, clip.duration, OPTIONS.max_chunk_seconds)
    # no cut falls inside a sentence except where a pause never comes (the monologue)
    for left, right in zip(chunks, chunks[1:]):
        inside = [s for s in clip.sentences if s.start + 0.1 < left.end < s.end - 0.1]
        if build is long_monologue:
            continue
        assert not inside, f"cut at {left.end} inside {inside}"


def test_a_monologue_is_cut_between_words_not_at_the_limit(detector):
    """The monologue's only pauses are 0.1-0.3 s between sentences: the cut lands in one."""
    clip = long_monologue()
    probabilities = detector.frame_probabilities(clip.samples)
    chunks = plan_chunks(detector.regions(clip.samples, probabilities), probabilities, clip.duration, OPTIONS)
    assert len(chunks) == 2
    cut = chunks[0].end
    assert any(a.end - 0.05 <= cut <= b.start + 0.05 for a, b in zip(clip.sentences, clip.sentences[1:]))


def test_short_pauses_inside_regions_let_chunks_fill_their_windows():
    """Three 30 s regions of read speech whose phrases are 0.3 s apart (too short to end a VAD
    region): cut only at the regions' edges or evenly inside them they need six windows; cut at
    their inner pauses, four, each cut inside a pause."""
    spans = [(0.0, 30.0), (31.0, 61.0), (62.0, 92.0)]
    duration = 93.0
    probabilities = probabilities_for(duration)
    pauses = []
    for start, end in spans:
        for sentence_end in np.arange(start + 2.2, end - 1.0, 2.5):
            first, last = round(sentence_end / FRAME_SECONDS), round((sentence_end + 0.3) / FRAME_SECONDS)
            probabilities[first:last] = 0.05
            pauses.append((sentence_end, sentence_end + 0.3))
    for start, end in zip([end for _, end in spans], [start for start, _ in spans[1:]]):
        probabilities[round(start / FRAME_SECONDS) : round(end / FRAME_SECONDS)] = 0.0
    speech = regions(*spans)
    chunks = plan_chunks(speech, probabilities, duration, OPTIONS)
    assert len(chunks) == 4
    assert_well_formed(chunks, speech, duration, OPTIONS.max_chunk_seconds)
    for left in chunks[:-1]:
        in_a_pause = any(start - 0.05 <= left.end <= end + 0.05 for start, end in pauses)
        between_regions = any(a_end <= left.end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
        assert in_a_pause or between_regions, left.end


def test_a_quiet_frame_or_two_inside_a_word_is_no_place_to_cut():
    probabilities = probabilities_for(40.0)
    probabilities[round(14.0 / FRAME_SECONDS)] = 0.0  # one frame: a dip inside a word
    probabilities[round(20.0 / FRAME_SECONDS) : round(20.0 / FRAME_SECONDS) + 2] = 0.0
    speech = regions((0.0, 40.0))
    chunks = plan_chunks(speech, probabilities, 40.0, OPTIONS)
    assert len(chunks) == 2
    # the even split's quietest frame: the two-frame dip at 20 s, not a cut of its own at 14 s
    assert chunks[0].end == pytest.approx(20.0 + FRAME_SECONDS / 2, abs=0.05)
