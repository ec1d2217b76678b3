"""Long audio: on clips of known sentences at known times (two voices, long silence, noise and
chimes, speech with no pause, repeated sentences, a late start and a cut-off end) every sentence
is found where it was said, nothing is invented, segments keep off silence, noise and music,
start within half a second of their speech, are ordered, numbered, never overlap and stay inside
the audio, with words inside their segments. The default strategy (`auto`, which is `vad` on
every device) on every clip; `sequential` on the clip with the long silence; batch size changes
nothing that is heard.

The real Whisper base model on the CPU in float32; one transcription per clip and strategy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
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
from tests.support.speech import MEETING_SENTENCES, character_error_rate, concatenate, japanese_speech
from whisper_api.config import ModelSettings
from whisper_api.engine import Engine, resolve_strategy
from whisper_api.inference.coverage import ChunkPasses
from whisper_api.inference.long_form import VadStrategy
from whisper_api.inference.segments import renumbered
from whisper_api.transcript import Segment, Transcript, TranscriptionJob

STRATEGY = "auto"  # the default, on every device
MAX_SECONDS_OVER_NON_SPEECH = 2.0
MAX_MEDIAN_START_ERROR = 0.5
CLIPS = {
    build.__name__: build
    for build in (two_voice_dialog, silence_noise_and_tones, long_monologue, repeated_sentences, late_start_cut_off)
}
WITH_WORDS = "two_voice_dialog"
# openai/whisper's loop, checked on the clip whose 40 s silence is longer than a window
SEQUENTIAL_CLIP = "silence_noise_and_tones"
# (strategy, clip) pairs for the checks every strategy must pass
EVERY_STRATEGY = [(STRATEGY, name) for name in CLIPS] + [("sequential", SEQUENTIAL_CLIP)]
# Measured with whisper base, greedy, on CPU: 0.0-0.1 on three short sentences.
SHORT_CLIP_CER_LIMIT = 0.2


@pytest.fixture(scope="module")
def default_engine(engine: Engine, model_settings: ModelSettings) -> Engine:
    if model_settings.strategy == STRATEGY:
        return engine
    return engine.with_settings(strategy=STRATEGY)


@pytest.fixture(scope="module")
def engines(engine: Engine, default_engine: Engine) -> dict[str, Engine]:
    """The session's model under each strategy (one model, loaded once)."""
    return {STRATEGY: default_engine, "vad": engine.with_settings(strategy="vad"),
            "sequential": engine.with_settings(strategy="sequential")}


@pytest.fixture(scope="module")
def clips() -> dict[str, LongFormClip]:
    return {name: build() for name, build in CLIPS.items()}


@pytest.fixture(scope="module")
def transcripts(engines: dict[str, Engine], clips: dict[str, LongFormClip]) -> Callable[..., Transcript]:
    """Each clip is transcribed once per strategy, when a test first asks for it."""

    @functools.cache
    def transcript(name: str, strategy: str = STRATEGY) -> Transcript:
        job = TranscriptionJob(samples=clips[name].samples, language="ja", word_timestamps=name == WITH_WORDS)
        return engines[strategy].transcribe(job)

    return transcript


def scored(clips, transcripts, name: str, strategy: str = STRATEGY) -> tuple[LongFormClip, Transcript, ClipScore]:
    clip, transcript = clips[name], transcripts(name, strategy)
    return clip, transcript, score(clip, transcript.segments)


@pytest.mark.parametrize(("strategy", "name"), EVERY_STRATEGY)
def test_every_sentence_is_found_where_it_was_said(clips, transcripts, strategy, name):
    clip, _, result = scored(clips, transcripts, name, strategy)
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


@pytest.mark.parametrize(("strategy", "name"), EVERY_STRATEGY)
def test_segments_are_numbered_ordered_apart_and_inside_the_audio(clips, transcripts, strategy, name):
    clip, transcript, _ = scored(clips, transcripts, name, strategy)
    segments = transcript.segments
    assert segments
    assert [segment.id for segment in segments] == list(range(len(segments)))
    assert all(0.0 <= s.start <= s.end <= clip.duration + 0.01 for s in segments)
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:]))


def test_sequential_invents_nothing_in_the_long_silence(clips, transcripts):
    """A window that hears only silence is skipped, not filled (the pause's first seconds may
    still close the sentence before it)."""
    clip = clips[SEQUENTIAL_CLIP]
    silence = next(span for span in clip.non_speech if span.kind == "silence")
    inside = [segment for segment in transcripts(SEQUENTIAL_CLIP, "sequential").segments
              if silence.start + 2 < segment.start and segment.end < silence.end - 2]
    assert inside == []


def test_batch_size_does_not_change_what_is_heard(engine, clips, transcripts):
    """Chunks decoded one at a time and eight at a time give the same text (up to the numeric
    noise of batched matrix products)."""
    name = "silence_noise_and_tones"
    one_at_a_time = engine.with_settings(strategy="vad", batch_size=1).transcribe(
        TranscriptionJob(samples=clips[name].samples, language="ja"))
    assert character_error_rate(transcripts(name).text, one_at_a_time.text) <= 0.05


@pytest.mark.parametrize("strategy", ["vad", "sequential"])
def test_word_timestamps_lie_inside_their_segments_and_add_up_to_the_text(engines, strategy):
    samples, _ = concatenate(*[japanese_speech(text) for text in MEETING_SENTENCES[:2]], gap_seconds=1.0)
    transcript = engines[strategy].transcribe(TranscriptionJob(samples=samples, language="ja", word_timestamps=True))
    assert transcript.words
    for segment in transcript.segments:
        assert segment.words
        assert all(segment.start <= word.start <= word.end <= segment.end for word in segment.words)
    assert "".join(word.word for word in transcript.words).replace(" ", "") == transcript.text.replace(" ", "")


def test_the_language_is_detected_when_not_given(default_engine):
    samples, _ = concatenate(*[japanese_speech(text) for text in MEETING_SENTENCES[:3]])
    transcript = default_engine.transcribe(TranscriptionJob(samples=samples))
    assert transcript.language == "ja"
    assert character_error_rate("".join(MEETING_SENTENCES[:3]), transcript.text) <= SHORT_CLIP_CER_LIMIT, transcript.text


@pytest.mark.parametrize("device", ["cpu", "cuda", "directml"])
def test_auto_strategy_is_vad_on_every_device(device):
    assert resolve_strategy("auto", device) == "vad"
    assert resolve_strategy("sequential", device) == "sequential"


def test_engine_reports_its_strategy(engines):
    assert {name: engines[name].info.strategy for name in ("vad", "sequential")} == {
        "vad": "vad", "sequential": "sequential"}


def test_a_segment_never_starts_before_the_one_before_it_ends():
    # 12.34 s + 5.6 s and 17.94 s differ in the last bit of a float: the sum comes out later
    later = Segment(0, 1794, 12.34 + 5.6, 19.0, "次の文。", [1], 0.0, -0.2, 1.1, 0.01)
    placed = renumbered(later, 4, duration=60.0, previous_end=17.940000000000005)
    assert placed.id == 4
    assert placed.start >= 17.940000000000005 and placed.end == 19.0


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


@pytest.mark.parametrize(("chunks", "batch_size", "sizes"), [
    (20, 8, [1, 8, 8, 3]), (9, 8, [1, 8]), (8, 8, [8]), (3, 8, [3]), (0, 8, []), (5, 1, [1, 1, 1, 1, 1]),
])
def test_a_long_streamed_job_decodes_one_chunk_first_then_whole_batches(chunks, batch_size, sizes):
    """Its first text comes after one chunk's decoding."""
    batches = VadStrategy(None, batch_size).batches(list(range(chunks)), streamed=True)
    assert [len(batch) for batch in batches] == sizes
    assert [chunk for batch in batches for chunk in batch] == list(range(chunks))


@pytest.mark.parametrize(("chunks", "batch_size", "sizes"), [
    (20, 8, [8, 8, 4]), (9, 8, [8, 1]), (8, 8, [8]), (0, 8, []), (3, 1, [1, 1, 1]),
])
def test_a_job_nobody_streams_decodes_whole_batches_from_the_start(chunks, batch_size, sizes):
    """No one waits for its first text, so its first chunk does not decode alone."""
    batches = VadStrategy(None, batch_size).batches(list(range(chunks)), streamed=False)
    assert [len(batch) for batch in batches] == sizes
    assert [chunk for batch in batches for chunk in batch] == list(range(chunks))


@pytest.mark.parametrize(("streamed", "ahead"), [(False, 2), (True, 1)], ids=["nobody streams", "streamed"])
def test_batches_are_encoded_and_decoding_ahead_of_the_one_being_finished(engine, clips, monkeypatch, streamed, ahead):
    """While a batch is finished (its resumes and fallbacks), the next batches' rows are already
    decoding beside it and take the places its rows leave: two batches ahead for a job nobody
    streams, one for a streamed job (each batch's text goes out a batch's encoding sooner)."""
    events: list[str] = []
    start, covered = ChunkPasses.start, ChunkPasses.covered

    def recorded_start(self, *arguments, **options):
        events.append("start")
        return start(self, *arguments, **options)

    def recorded_covered(self, *arguments, **options):
        events.append("finish")
        return covered(self, *arguments, **options)

    monkeypatch.setattr(ChunkPasses, "start", recorded_start)
    monkeypatch.setattr(ChunkPasses, "covered", recorded_covered)
    monologue = clips["long_monologue"].samples
    job = TranscriptionJob(samples=np.concatenate([monologue] * 3), language="ja",
                           on_segments=(lambda segments: None) if streamed else None)
    engine.with_settings(strategy="vad", batch_size=1).transcribe(job)
    batches = events.count("start")
    assert batches >= 4 and events.count("finish") == batches, events
    in_line_at_each_finish = [events[:index].count("start") - events[:index].count("finish") - 1
                              for index, event in enumerate(events) if event == "finish"]
    assert max(in_line_at_each_finish) == ahead, events
