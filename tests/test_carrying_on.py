"""A chunk whose text stops short of its speech carries on in its own window: the decoder goes on
from the text so far and a timestamp, with no second encoder pass. Carrying on from the model's
own text gives the rest of its own tokens (and the same word times), through the plain loop and
through the scheduler, and in the scheduler a row carries on in its place in the batch, with no
prefill of its own and no change to the rows beside it; a clip that needs resumes has each piece of its audio encoded once and
loses no sentence, within the DirectML rules.

The real Whisper base model on the CPU in float32."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import whisper_api.inference.coverage as coverage
from tests.support.directml_rules import DirectMLRules
from tests.support.long_clips import repeated_sentences
from tests.support.long_form_scoring import score
from tests.support.speech import MEETING_SENTENCES, concatenate, japanese_speech
from whisper_api.inference.decoder import MAX_NEW_TOKENS, Decoded, Decoder, DecodingRequest
from whisper_api.inference.model import SAMPLE_RATE, WINDOW_FRAMES
from whisper_api.transcript import TranscriptionJob

WORD_TIME_TOLERANCE_SECONDS = 0.04


@pytest.fixture(scope="module")
def encoded(engine) -> torch.Tensor:
    """About 28 s of six sentences: text with several segments."""
    audio, _ = concatenate(*[japanese_speech(text) for text in MEETING_SENTENCES[:6]], gap_seconds=0.8)
    with torch.no_grad():
        return engine.model.encode(engine.model.log_mel([audio[: 28 * SAMPLE_RATE]]))


def prefix(engine) -> tuple[int, ...]:
    tokens = engine.model.tokens
    return (tokens.start_of_transcript, tokens.languages["ja"], tokens.transcribe)


def segment_boundaries(tokens: list[int], timestamp_begin: int) -> list[int]:
    """Indexes of the opening timestamps that follow a closing one (a new segment starts there)."""
    return [index for index in range(1, len(tokens))
            if tokens[index] >= timestamp_begin and tokens[index - 1] >= timestamp_begin]


@pytest.mark.parametrize("through", ["scheduler", "plain loop"])
@pytest.mark.parametrize("word_timestamps", [False, True], ids=["tokens", "word times"])
def test_carrying_on_from_the_models_own_text_gives_the_rest_of_it(engine, encoded, through, word_timestamps):
    decoder = engine.decoder if through == "scheduler" else Decoder(engine.model)
    request = DecodingRequest(prefix(engine), word_timestamps=word_timestamps)
    with torch.no_grad():
        (whole,) = decoder.decode(encoded, request, [WINDOW_FRAMES])
    boundaries = segment_boundaries(whole.tokens, engine.model.tokens.timestamp_begin)
    assert len(boundaries) >= 3, "the chunk should have several segments"
    for opening in (boundaries[0], boundaries[len(boundaries) // 2]):
        carried = tuple(whole.tokens[: opening + 1])
        carrying_on = DecodingRequest((*prefix(engine), *carried), word_timestamps=word_timestamps,
                                      max_new_tokens=MAX_NEW_TOKENS - len(carried), carried=len(carried))
        with torch.no_grad():
            (rest,) = decoder.decode(encoded, carrying_on, [WINDOW_FRAMES])
        assert rest.tokens == whole.tokens
        if word_timestamps:
            assert np.allclose(rest.token_spans, whole.token_spans, atol=WORD_TIME_TOLERANCE_SECONDS)


class CarriesOnOnce:
    """Carries a row on once, from `carried`, and keeps what it is given."""

    def __init__(self, carried: tuple[int, ...]) -> None:
        self.carried = carried
        self.seen: list[Decoded] = []

    def after(self, result: Decoded) -> tuple[int, ...] | Decoded:
        self.seen.append(result)
        return self.carried if len(self.seen) == 1 else result


def test_a_row_carries_on_in_its_place_as_a_row_prefilled_with_its_text_would(engine, encoded, monkeypatch):
    """Resumed where the model opened the segment after next: what the row wrote past its closed
    text is in its cache, and must not be seen."""
    request = DecodingRequest(prefix(engine))
    with torch.no_grad():
        (whole,) = engine.decoder.decode(encoded, request, [WINDOW_FRAMES])
    boundaries = segment_boundaries(whole.tokens, engine.model.tokens.timestamp_begin)
    opening = boundaries[1]
    carried = (*whole.tokens[:opening], whole.tokens[boundaries[2]])
    prefilled = DecodingRequest((*prefix(engine), *carried), max_new_tokens=MAX_NEW_TOKENS - len(carried),
                                carried=len(carried))
    with torch.no_grad():
        (expected,) = engine.decoder.decode(encoded, prefilled, [WINDOW_FRAMES])
    assert expected.tokens[len(carried):] != whole.tokens[opening + 1 :]
    continuation = CarriesOnOnce(carried)
    prefills: list[int] = []
    original = Decoder.prefill

    def counted(self, encoded, request, rows, cache=None):
        prefills.append(rows)
        return original(self, encoded, request, rows, cache)

    monkeypatch.setattr(Decoder, "prefill", counted)
    requests = [DecodingRequest(prefix(engine), continuation=continuation), request]
    with torch.no_grad(), DirectMLRules() as rules:
        carried_on, beside = engine.decoder.decode_rows(encoded.expand(2, -1, -1), requests, [WINDOW_FRAMES] * 2)
    assert not rules.violations(), rules.report()
    assert prefills == [2], "both rows prefilled together, and nothing prefilled again for the carry-on"
    first, last = continuation.seen
    assert first.tokens == whole.tokens
    assert last is carried_on and carried_on.tokens == expected.tokens
    assert carried_on.avg_logprob == pytest.approx(expected.avg_logprob, abs=1e-4)
    assert beside.tokens == whole.tokens, "the row beside it decodes as alone"


def test_a_resumed_row_opens_with_text_after_its_timestamp(engine):
    rules = engine.decoder.rules
    at = rules.timestamp_begin + 700  # 14.00 s
    state, forbidden = rules.opening(2, at)
    allowed = (~forbidden[0]).nonzero().flatten()
    assert int(allowed.max()) < engine.model.tokens.end_of_text, "text only: no timestamp, no end-of-text"
    assert len(allowed) > 1000
    after_text = rules.forbidden(1, rules.advance(state, torch.tensor([allowed[0], allowed[0]])))
    timestamps = (~after_text[0, rules.timestamp_begin:]).nonzero().flatten() + rules.timestamp_begin
    assert int(timestamps.min()) > at, "the text's closing timestamp comes after the one it opened at"


def test_a_clip_whose_text_stops_short_has_its_audio_encoded_once_and_loses_nothing(engine, monkeypatch, caplog):
    clip = repeated_sentences()
    encoded_spans: list[tuple[float, float]] = []
    original = coverage.speech_only

    def recording(samples: np.ndarray, chunk):
        encoded_spans.append((chunk.start, chunk.end))
        return original(samples, chunk)

    monkeypatch.setattr(coverage, "speech_only", recording)
    with caplog.at_level(logging.INFO, logger=coverage.__name__), DirectMLRules() as rules:
        transcript = engine.with_settings(strategy="vad").transcribe(TranscriptionJob(samples=clip.samples, language="ja"))
    assert "text stops at" in caplog.text, "this clip's text stops short of its speech: it needs a resume"
    assert "carrying on in place" in caplog.text, "first passes carry on in their place in the batch"
    assert not rules.violations(), rules.report()  # carrying on keeps the DirectML rules
    spans = sorted(encoded_spans)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans
    result = score(clip, transcript.segments)
    assert result.missing == (), f"{result.found}/{result.sentences} found"
