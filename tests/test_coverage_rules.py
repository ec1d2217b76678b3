"""The long-form rules that keep speech covered and segments on it, on hand-made chunks: where a
resume pass starts, how segment edges move out of pauses, what a chunk's audio keeps, and how far
the sequential loop moves after a single closing timestamp."""

from __future__ import annotations

import numpy as np
import pytest

from whisper_api.inference.chunks import Chunk
from whisper_api.inference.coverage import speech_only, uncovered_rest
from whisper_api.inference.long_form import SequentialStrategy, held_to_speech
from whisper_api.inference.segments import ChunkText
from whisper_api.inference.vad import SpeechRegion
from whisper_api.transcript import Segment, Word

REGIONS = (SpeechRegion(1.0, 5.0), SpeechRegion(6.0, 10.0), SpeechRegion(12.0, 14.0))
CHUNK = Chunk(0.8, 14.2, REGIONS)


def segment(start: float, end: float, words: list[Word] | None = None) -> Segment:
    return Segment(0, 0, start, end, "テキスト", [1], 0.0, -0.2, 1.2, 0.01, words or [])


def text_ending_at(end: float) -> ChunkText:
    return ChunkText([segment(1.0, end)], single_timestamp_ending=False, last_timestamp=end)


def test_text_that_covers_the_speech_needs_no_resume():
    assert uncovered_rest(CHUNK, (CHUNK, text_ending_at(13.6))) is None


def test_text_that_stops_before_the_last_region_resumes_just_before_it():
    rest = uncovered_rest(CHUNK, (CHUNK, text_ending_at(9.9)))
    assert rest is not None
    assert rest.regions == (SpeechRegion(12.0, 14.0),)
    assert rest.start == pytest.approx(11.8) and rest.end == CHUNK.end


def test_text_that_stops_inside_a_region_resumes_where_it_stopped():
    rest = uncovered_rest(CHUNK, (CHUNK, text_ending_at(7.5)))
    assert rest is not None and rest.start == 7.5
    assert rest.regions == (SpeechRegion(6.0, 10.0), SpeechRegion(12.0, 14.0))


def test_a_pass_that_found_nothing_ends_the_resumes():
    assert uncovered_rest(CHUNK, (CHUNK, ChunkText([], False, 0.0))) is None


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ((0.2), 4.0, (1.0, 4.0)),  # opened early, in the silence before the speech
        (6.5, 11.5, (6.5, 10.0)),  # closed late, in the pause after the speech
        (5.2, 11.0, (6.0, 10.0)),  # both edges in pauses
        (2.0, 9.0, (2.0, 9.0)),  # both on speech: untouched
    ],
)
def test_segment_edges_in_pauses_move_onto_the_speech(start, end, expected):
    held = held_to_speech(segment(start, end, [Word("語", start, end)]), REGIONS)
    assert (held.start, held.end) == pytest.approx(expected)
    assert held.start <= held.words[0].start <= held.words[0].end <= held.end


def test_a_chunk_keeps_its_speech_and_silences_its_pauses():
    samples = np.ones(16000 * 15, dtype=np.float32)
    audio = speech_only(samples, CHUNK)
    assert len(audio) == round((CHUNK.end - CHUNK.start) * 16000)
    seconds = 0.8 + np.arange(len(audio)) / 16000
    in_speech = np.zeros(len(audio), dtype=bool)
    for region in REGIONS:
        in_speech |= (seconds >= region.start + 0.01) & (seconds < region.end - 0.01)
    assert np.all(audio[in_speech] == 1.0)
    assert np.all(audio[(seconds > 10.01) & (seconds < 11.99)] == 0.0)
    assert samples.min() == 1.0  # the request's audio itself is left alone


def single_timestamp_text(last_timestamp: float) -> ChunkText:
    return ChunkText([segment(0.0, last_timestamp)], single_timestamp_ending=True, last_timestamp=last_timestamp)


def test_a_single_closing_timestamp_before_more_speech_does_not_consume_the_window():
    regions = [SpeechRegion(0.0, 8.0), SpeechRegion(12.0, 20.0)]
    assert SequentialStrategy.consumed(single_timestamp_text(8.0), 3000, 0.0, regions) == 800


def test_a_single_closing_timestamp_with_nothing_after_it_consumes_the_window():
    regions = [SpeechRegion(0.0, 8.0), SpeechRegion(40.0, 45.0)]
    assert SequentialStrategy.consumed(single_timestamp_text(8.0), 3000, 0.0, regions) == 3000


class ScriptedDecoder:
    """Answers the sequential loop's windows in turn with scripted tokens and keeps the prefix each
    was decoded with: what the loop puts in the next window's prompt is under test, not the model."""

    def __init__(self, engine, windows: list[list[int]]) -> None:
        self.tokens = engine.decoder.tokens
        self.windows = windows
        self.prefixes: list[tuple[int, ...]] = []

    def decode(self, encoded, request, frames, generator=None):
        from whisper_api.inference.decoder import Decoded

        self.prefixes.append(request.prefix)
        tokens = self.windows[min(len(self.prefixes) - 1, len(self.windows) - 1)]
        return [Decoded(list(tokens), -0.3, 0.01, request.temperature, 1.2)]


def test_the_next_window_is_prompted_with_closed_segments_only(engine):
    """openai/whisper adds the closed segments' tokens to the context; the text after the last
    pair is decoded again in the next window, so its prompt must not hold it already."""
    from tests.support.speech import MEETING_SENTENCES, concatenate, japanese_speech
    from whisper_api.inference.fallback import FallbackDecoder, QualityOptions
    from whisper_api.inference.clip import ClipDecoding
    from whisper_api.transcript import TranscriptionJob

    model = engine.model
    begin = model.tokens.timestamp_begin
    closed = [begin, *model.text_tokens("本日の会議を始めます。"), begin + 500]
    open_tail = [begin + 500, *model.text_tokens("次の議題は")]  # no timestamp closes it
    scripted = ScriptedDecoder(engine, [closed + open_tail, []])
    clip = ClipDecoding(model, engine.decoder, FallbackDecoder(scripted, QualityOptions()), engine.detector)
    audio, _ = concatenate(*[japanese_speech(text) for text in MEETING_SENTENCES * 3], gap_seconds=0.5)
    language, segments = SequentialStrategy(clip).transcribe(TranscriptionJob(samples=audio, language="ja"))
    assert len(scripted.prefixes) >= 2
    start = model.tokens.transcript_start("ja", "transcribe")
    assert scripted.prefixes[1] == (model.tokens.start_of_previous, *closed, *start)
    assert segments[0].text == model.decode_text(closed)
