"""Temperature fallback (openai/whisper's schedule) on the real model: a row that passes the checks
at no temperature keeps its most confident text that does not loop, not the last, most random one."""

from __future__ import annotations

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
