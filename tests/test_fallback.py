"""Temperature fallback (openai/whisper's schedule) on the real model: a row that passes the checks
at no temperature keeps its most confident text that does not loop, not the last, most random one."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.support.speech import MEETING_SENTENCES, character_error_rate, concatenate, japanese_speech
from whisper_api.inference.fallback import FallbackDecoder, QualityOptions
from whisper_api.inference.model import SAMPLE_RATE, WINDOW_FRAMES


class Recording:
    """The real decoder, with every result it returns kept (in order)."""

    def __init__(self, decoder) -> None:
        self.decoder = decoder
        self.tokens = decoder.tokens
        self.results = []

    def decode(self, *arguments, **keywords):
        results = self.decoder.decode(*arguments, **keywords)
        self.results.append(results)
        return results


@pytest.fixture(scope="module")
def encoded(engine) -> torch.Tensor:
    audio, _ = concatenate(*[japanese_speech(text) for text in MEETING_SENTENCES[:3]], gap_seconds=0.8)
    with torch.no_grad():
        return engine.model.encode(engine.model.log_mel([audio[: 28 * SAMPLE_RATE]]))


def prefix(engine) -> tuple[int, ...]:
    tokens = engine.model.tokens
    return (tokens.start_of_transcript, tokens.languages["ja"], tokens.transcribe)


def test_a_row_no_temperature_satisfies_keeps_its_most_confident_text(engine, encoded):
    # no text has an average log probability above 0: every temperature fails
    recording = Recording(engine.decoder)
    fallback = FallbackDecoder(recording, QualityOptions(logprob_threshold=0.0, temperature_increment=0.5))
    (kept,) = fallback.decode(encoded, [WINDOW_FRAMES], prefix(engine), 0.0, False, torch.Generator().manual_seed(0))
    tried = [results[0] for results in recording.results]
    assert [result.temperature for result in tried] == [0.0, 0.5, 1.0]
    best = max(tried, key=lambda result: result.avg_logprob)
    assert kept.temperature == best.temperature == 0.0  # greedy is the most confident here
    assert kept.tokens == best.tokens
    reference = "".join(MEETING_SENTENCES[:3])
    assert character_error_rate(reference, engine.model.decode_text(kept.tokens)) < 0.3


def test_a_row_that_passes_stops_the_schedule(engine, encoded):
    recording = Recording(engine.decoder)
    fallback = FallbackDecoder(recording, QualityOptions())
    (kept,) = fallback.decode(encoded, [WINDOW_FRAMES], prefix(engine), 0.0, False, torch.Generator().manual_seed(0))
    assert len(recording.results) == 1 and kept.temperature == 0.0


class Scripted:
    """A decoder that answers each temperature with the result the test scripts for it: the
    fallback's choices are the behaviour under test, not the model's text."""

    def __init__(self, engine, by_temperature: dict[float, list[int]], avg_logprob: float = -0.3,
                 no_speech_prob: float = 0.01) -> None:
        self.tokens = engine.decoder.tokens
        self.model = engine.model
        self.by_temperature = by_temperature
        self.avg_logprob, self.no_speech_prob = avg_logprob, no_speech_prob
        self.temperatures: list[float] = []

    def decode(self, encoded, request, frames, generator=None):
        from whisper_api.inference.decoder import Decoded, compression_ratio

        self.temperatures.append(request.temperature)
        tokens = self.by_temperature[request.temperature]
        text = self.model.decode_text(tokens)
        return [Decoded(list(tokens), self.avg_logprob, self.no_speech_prob, request.temperature,
                        compression_ratio(text))]


@pytest.mark.parametrize("text", [" Go! Go! Go! Go! Go! Go! Go!", " No, no, no, no, no, no, no."])
def test_a_repeated_phrase_that_passes_the_checks_comes_back_whole(engine, encoded, text):
    begin = engine.model.tokens.timestamp_begin
    tokens = [begin, *engine.model.text_tokens(text), begin + 150]
    scripted = Scripted(engine, {0.0: tokens})
    (kept,) = FallbackDecoder(scripted, QualityOptions()).decode(
        encoded, [WINDOW_FRAMES], prefix(engine), 0.0, False, torch.Generator().manual_seed(0))
    assert scripted.temperatures == [0.0]
    assert kept.tokens == tokens


def test_text_that_passes_after_a_fallback_is_kept_where_the_model_heard_no_speech(engine, encoded):
    """openai/whisper's silence rule needs both: no speech heard and text it is unsure of. The
    no-speech probability is the same at every temperature, so it says nothing about a fallback."""
    begin = engine.model.tokens.timestamp_begin
    looping = [begin, *engine.model.text_tokens("ありがとうございます。" * 8), begin + 300]
    passing = [begin, *engine.model.text_tokens("本日の会議を始めます。"), begin + 120]
    scripted = Scripted(engine, {0.0: looping, 0.2: passing}, no_speech_prob=0.9)
    fallback = FallbackDecoder(scripted, QualityOptions())
    (kept,) = fallback.decode(encoded, [WINDOW_FRAMES], prefix(engine), 0.0, False, torch.Generator().manual_seed(0))
    assert scripted.temperatures == [0.0, 0.2]
    assert kept.tokens == passing and kept.temperature == 0.2
    assert not fallback.is_silence(kept)
    unsure = replace(kept, avg_logprob=-1.5)
    assert fallback.is_silence(unsure)  # openai's rule itself still holds
