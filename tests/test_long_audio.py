"""Long audio: both strategies transcribe a clip of known sentences at known offsets whole, with
segment timestamps in order, inside the audio and on the speech; loops are cut; `auto` is vad."""

from __future__ import annotations

import dataclasses
import unicodedata

import numpy as np
import pytest

from tests.support.speech import MEETING_SENTENCES, SAMPLE_RATE, character_error_rate, concatenate, japanese_speech
from whisper_api.engine import Engine, resolve_strategy
from whisper_api.inference.segments import renumbered
from whisper_api.repetition import trim_repetition
from whisper_api.transcript import Segment, Transcript, TranscriptionJob

# Twelve different sentences, so that no 30 s window repeats itself (a repeating window trips the
# compression-ratio fallback, which is right for a loop and wrong for a test clip).
SENTENCES = MEETING_SENTENCES[:12]
PAUSE_SECONDS = 35.0  # longer than a window: at least one window hears nothing but the noise floor
NOISE_DBFS = -50.0  # above the -60 dBFS silence gate, so the model itself must find no speech
# Measured with whisper base, greedy, on CPU: 0.08 (sequential, vad).
CLIP_CER_LIMIT = 0.2
# A sentence counts as heard where its segment has most of its characters, in order.
SENTENCE_COVERAGE_LIMIT = 0.7
# Whisper base puts a boundary at the next onset rather than at the end of the speech, and
# after a long pause may start the segment at the window's start: allow for both.
TIME_TOLERANCE_SECONDS = 0.5

STRATEGIES = ("vad", "sequential")


@dataclasses.dataclass(frozen=True)
class LongClip:
    samples: np.ndarray
    spans: list[tuple[float, float]]  # one per sentence, seconds
    pause: tuple[float, float]

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@pytest.fixture(scope="module")
def long_clip() -> LongClip:
    """Six sentences, 35 s of faint noise, six sentences: about 82 s, four 30 s windows."""
    first, first_spans = concatenate(*[japanese_speech(text) for text in SENTENCES[:6]], gap_seconds=1.0)
    second, second_spans = concatenate(*[japanese_speech(text) for text in SENTENCES[6:]], gap_seconds=1.0)
    noise = np.random.default_rng(0).standard_normal(round(PAUSE_SECONDS * SAMPLE_RATE))
    noise = (noise * 10 ** (NOISE_DBFS / 20)).astype(np.float32)
    offset = (len(first) + len(noise)) / SAMPLE_RATE
    spans = first_spans + [(start + offset, end + offset) for start, end in second_spans]
    pause = (len(first) / SAMPLE_RATE, offset)
    return LongClip(np.concatenate([first, noise, second]), spans, pause)


@pytest.fixture(scope="module")
def engines(engine: Engine, model_settings) -> dict[str, Engine]:
    """The session's model under each strategy (one model, loaded once)."""
    return {strategy: engine.with_settings(strategy=strategy) for strategy in STRATEGIES}


@pytest.fixture(scope="module")
def transcripts(engines: dict[str, Engine], long_clip: LongClip) -> dict[str, Transcript]:
    return {
        strategy: engines[strategy].transcribe(TranscriptionJob(samples=long_clip.samples, language="ja"))
        for strategy in STRATEGIES
    }


def characters(text: str) -> str:
    normalized = unicodedata.normalize("NFKC", text)
    return "".join(c for c in normalized if not c.isspace() and not unicodedata.category(c).startswith("P"))


def coverage(sentence: str, text: str) -> float:
    """Share of the sentence's characters found in `text` in order (longest common subsequence)."""
    reference, hypothesis = characters(sentence), characters(text)
    previous = [0] * (len(hypothesis) + 1)
    for expected in reference:
        current = [0]
        for column, actual in enumerate(hypothesis, start=1):
            current.append(previous[column - 1] + 1 if expected == actual else max(previous[column], current[-1]))
        previous = current
    return previous[-1] / len(reference)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_long_audio_is_transcribed_whole(transcripts, strategy):
    transcript = transcripts[strategy]
    assert character_error_rate("".join(SENTENCES), transcript.text) <= CLIP_CER_LIMIT, transcript.text


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_segments_are_in_order_numbered_and_inside_the_audio(transcripts, long_clip, strategy):
    segments = transcripts[strategy].segments
    assert segments
    assert [segment.id for segment in segments] == list(range(len(segments)))
    assert all(0 <= segment.start <= segment.end <= long_clip.duration for segment in segments)
    assert all(earlier.end <= later.start for earlier, later in zip(segments, segments[1:])), [
        (segment.start, segment.end) for segment in segments
    ]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_sentence_is_heard_once_in_a_segment_at_its_time(transcripts, long_clip, strategy):
    segments = transcripts[strategy].segments
    for sentence, (start, end) in zip(SENTENCES, long_clip.spans):
        holding = [segment for segment in segments if coverage(sentence, segment.text) >= SENTENCE_COVERAGE_LIMIT]
        assert len(holding) == 1, (sentence, [(s.start, s.end, s.text) for s in holding])
        segment = holding[0]
        middle = (start + end) / 2
        assert segment.start - TIME_TOLERANCE_SECONDS <= middle <= segment.end + TIME_TOLERANCE_SECONDS, (
            sentence, (start, end), (segment.start, segment.end)
        )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_text_is_invented_in_a_long_pause(transcripts, long_clip, strategy):
    pause_start, pause_end = long_clip.pause
    # the pause's first seconds may close the sentence before it; nothing may start inside it
    inside = [
        segment for segment in transcripts[strategy].segments
        if pause_start + 2 < segment.start and segment.end < pause_end - 2
    ]
    assert inside == []


def test_vad_detects_the_language_and_matches_the_short_clip(engines):
    samples, _ = concatenate(*[japanese_speech(text) for text in SENTENCES[:3]])
    transcript = engines["vad"].transcribe(TranscriptionJob(samples=samples))
    assert transcript.language == "ja"
    assert character_error_rate("".join(SENTENCES[:3]), transcript.text) <= CLIP_CER_LIMIT, transcript.text


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_word_timestamps_lie_inside_their_segments(engines, strategy):
    samples, _ = concatenate(*[japanese_speech(text) for text in SENTENCES[:2]], gap_seconds=1.0)
    transcript = engines[strategy].transcribe(TranscriptionJob(samples=samples, language="ja", word_timestamps=True))
    assert transcript.words
    for segment in transcript.segments:
        assert segment.words
        assert all(segment.start <= word.start <= word.end <= segment.end for word in segment.words)
    assert "".join(word.word for word in transcript.words).replace(" ", "") == transcript.text.replace(" ", "")


def test_batch_size_does_not_change_what_is_heard(engine, long_clip):
    """Chunks decoded one at a time and eight at a time give the same text (up to the numeric
    noise of batched matrix products)."""
    texts = [
        engine.with_settings(strategy="vad", batch_size=batch_size).transcribe(
            TranscriptionJob(samples=long_clip.samples, language="ja")
        ).text
        for batch_size in (1, 8)
    ]
    assert character_error_rate(texts[0], texts[1]) <= 0.05, texts


@pytest.mark.parametrize("device", ["cpu", "cuda", "directml"])
def test_auto_strategy_is_vad_on_every_device(device):
    assert resolve_strategy("auto", device) == "vad"
    assert resolve_strategy("sequential", device) == "sequential"


def test_engine_reports_its_strategy(engines):
    assert {name: engine.info.strategy for name, engine in engines.items()} == {
        "vad": "vad", "sequential": "sequential"
    }


def test_a_loop_is_kept_once_and_closed_by_its_timestamp(engine):
    tokenizer = engine.model.tokenizer
    timestamp_begin = engine.model.tokens.timestamp_begin
    phrase = tokenizer.encode("ありがとうございます。", add_special_tokens=False)
    tokens = [timestamp_begin]
    for index in range(10):
        tokens += phrase + [timestamp_begin + 100 * (index + 1)] * 2
    trimmed = trim_repetition(tokens, engine.model.tokens.end_of_text)
    assert trimmed == [timestamp_begin, *phrase, timestamp_begin + 100]


@pytest.mark.parametrize("text", ["はい、はい、はい。", "もしもし、聞こえますか。もしもし。", "ラララ、ラララ、ラララ。"])
def test_ordinary_repetition_is_left_alone(engine, text):
    tokens = engine.model.tokenizer.encode(text, add_special_tokens=False)
    assert trim_repetition(tokens, engine.model.tokens.end_of_text) == tokens


def test_a_segment_never_starts_before_the_one_before_it_ends():
    # 12.34 s + 5.6 s and 17.94 s differ in the last bit of a float: the sum comes out later
    later = Segment(0, 1794, 12.34 + 5.6, 19.0, "次の文。", [1], 0.0, -0.2, 1.1, 0.01)
    placed = renumbered(later, 4, duration=60.0, previous_end=17.940000000000005)
    assert placed.id == 4
    assert placed.start >= 17.940000000000005 and placed.end == 19.0
