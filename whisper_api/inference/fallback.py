"""Decoding with openai/whisper's quality checks: temperature fallback and the no-speech rule.

A batch of chunks is decoded at the request's temperature; the rows whose text loops (compression
ratio) or that the model is unsure of (average log probability) are decoded again, together, at
the next temperature, until they pass or the schedule ends (then the most confident text that
does not loop is kept). A row the model hears no speech in
(no-speech probability over its threshold) while its text fails the checks is silence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from ..cancellation import Cancellation
from .repetition import trim_repetition
from .decoder import ContinuesInPlace, Decoded, Decoder, DecodingRequest


@dataclass(frozen=True)
class QualityOptions:
    beam_size: int = 1
    compression_ratio_threshold: float = 2.4
    logprob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    temperature_increment: float = 0.2
    # Benchmarks only: decode exactly this many tokens per chunk, as a random-weight model is made to.
    forced_new_tokens: int | None = None


def temperature_schedule(start: float, increment: float) -> list[float]:
    temperatures = [round(start, 2)]
    while temperatures[-1] + increment <= 1.0 + 1e-6:
        temperatures.append(round(temperatures[-1] + increment, 2))
    return temperatures


class FallbackDecoder:
    def __init__(self, decoder: Decoder, options: QualityOptions) -> None:
        self.decoder = decoder
        self.options = options

    def is_silence(self, result: Decoded) -> bool:
        """openai/whisper's rule: the model hears no speech and is unsure of what it wrote. Text
        it is sure of stays, whatever temperature it came from (the no-speech probability is the
        same at every temperature: a rule on the temperature would drop every chunk that needed a
        fallback and then passed)."""
        return (result.no_speech_prob > self.options.no_speech_threshold
                and result.avg_logprob < self.options.logprob_threshold)

    def needs_fallback(self, result: Decoded) -> bool:
        if self.is_silence(result):
            return False  # skipped anyway: no retry
        return (result.looped or result.compression_ratio > self.options.compression_ratio_threshold
                or result.avg_logprob < self.options.logprob_threshold)

    def decode(self, encoded: torch.Tensor, frames: list[int], prefix: tuple[int, ...] | list[tuple[int, ...]],
               temperature: float, word_timestamps: bool, generator: torch.Generator,
               first_temperature_forced: bool = False, cancellation: Cancellation | None = None,
               carried: list[int] | None = None) -> list[Decoded]:
        """Each row decoded at the first temperature it passes the checks at; a row that passes at
        none keeps its most confident text that does not loop (faster-whisper's choice: the last
        temperature's text is the most random one, often invented), its repeats trimmed.
        `first_temperature_forced` starts one step up the schedule. `prefix` is every row's, or
        each row's own, whose last `carried[row]` tokens are that row's earlier text it carries on
        (then its text and the new tokens share the token limit)."""
        run = FallbackRun(self, encoded, frames, prefix, temperature, word_timestamps, generator,
                          first_temperature_forced, cancellation, carried)
        return run.decode_at(run.schedule)

    def submit(self, encoded: torch.Tensor, frames: list[int], prefix: tuple[int, ...] | list[tuple[int, ...]],
               temperature: float, word_timestamps: bool, generator: torch.Generator,
               first_temperature_forced: bool = False, cancellation: Cancellation | None = None,
               carried: list[int] | None = None, continuations: list[ContinuesInPlace] | None = None
               ) -> Callable[[], list[Decoded]]:
        """`decode`, with the first temperature's rows handed to the decoder now and everything
        after (waiting for them, the fallbacks) when the returned function is called: the rows
        decode while the caller prepares more work (the next batch's audio), beside it.
        `continuations`, one a row, let greedy rows go on past the end of their text in their
        place (ContinuesInPlace); rows decoded again one temperature up do not."""
        run = FallbackRun(self, encoded, frames, prefix, temperature, word_timestamps, generator,
                          first_temperature_forced, cancellation, carried, continuations)
        taken, requests, pending_frames = run.rows_at(run.schedule[0])
        first = self.decoder.submit_rows(taken, requests, pending_frames, generator)

        def collect() -> list[Decoded]:
            run.take(first())
            return run.decode_at(run.schedule[1:])

        return collect

    def finished(self, passed: list[Decoded | None], candidates: list[list[Decoded]]) -> list[Decoded]:
        end_of_text = self.decoder.tokens.end_of_text
        finished = []
        for result, tried in zip(passed, candidates):
            if result is None:  # every temperature failed: its repeats carry nothing, keep them once
                result = self.most_confident(tried)
                tokens = trim_repetition(result.tokens, end_of_text)
                spans = result.token_spans[: len(tokens)] if result.token_spans is not None else None
                result = replace(result, tokens=tokens, token_spans=spans)
            finished.append(result)
        return finished

    def request(self, prefix: tuple[int, ...], carried: int, temperature: float, word_timestamps: bool,
                cancellation: Cancellation | None, continuation: ContinuesInPlace | None = None) -> DecodingRequest:
        beam_size = self.options.beam_size if temperature == 0 else 1
        if temperature != 0 or beam_size > 1 or word_timestamps:
            continuation = None  # greedy rows only: the others resume through a prefill of their own
        request = DecodingRequest(prefix, temperature, beam_size,
                                  word_timestamps, compression_ratio_threshold=self.options.compression_ratio_threshold,
                                  cancellation=cancellation, carried=carried, continuation=continuation)
        if self.options.forced_new_tokens:
            return replace(request, max_new_tokens=self.options.forced_new_tokens,
                           min_new_tokens=self.options.forced_new_tokens)
        # a carried text has used part of the row's token limit (and the cache keeps its length)
        return replace(request, max_new_tokens=request.max_new_tokens - carried)

    def most_confident(self, tried: list[Decoded]) -> Decoded:
        """Of a row's texts that all failed the checks: the highest average log probability among
        those that do not loop (or among all, when every one loops)."""
        not_looping = [result for result in tried if not result.looped
                       and result.compression_ratio <= self.options.compression_ratio_threshold]
        return max(not_looping or tried, key=lambda result: result.avg_logprob)


class FallbackRun:
    """One call's rows through the temperature schedule: which still need a try, what each got."""

    def __init__(self, fallback: FallbackDecoder, encoded: torch.Tensor, frames: list[int],
                 prefix: tuple[int, ...] | list[tuple[int, ...]], temperature: float, word_timestamps: bool,
                 generator: torch.Generator, first_temperature_forced: bool, cancellation: Cancellation | None,
                 carried: list[int] | None, continuations: list[ContinuesInPlace] | None = None) -> None:
        self.fallback = fallback
        self.encoded = encoded
        self.frames = frames
        rows = encoded.shape[0]
        self.prefixes = list(prefix) if isinstance(prefix, list) else [prefix] * rows
        self.carried = carried or [0] * rows
        self.continuations: list[ContinuesInPlace | None] = list(continuations or [None] * rows)
        self.word_timestamps = word_timestamps
        self.generator = generator
        self.cancellation = cancellation
        schedule = temperature_schedule(temperature, fallback.options.temperature_increment)
        self.schedule = schedule[1:] if first_temperature_forced and len(schedule) > 1 else schedule
        self.candidates: list[list[Decoded]] = [[] for _ in range(rows)]
        self.passed: list[Decoded | None] = [None] * rows
        self.pending = list(range(rows))

    def rows_at(self, temperature: float) -> tuple[torch.Tensor, list[DecodingRequest], list[int]]:
        """The pending rows' encoder states, requests at `temperature` and frames."""
        pending, encoded = self.pending, self.encoded
        requests = [self.fallback.request(self.prefixes[row], self.carried[row], temperature, self.word_timestamps,
                                          self.cancellation, self.continuations[row]) for row in pending]
        taken = encoded.index_select(0, torch.tensor(pending, device=encoded.device)) if len(pending) < len(
            self.passed) else encoded
        return taken, requests, [self.frames[row] for row in pending]

    def decode_at(self, temperatures: list[float]) -> list[Decoded]:
        """The pending rows through `temperatures` in turn, until none is pending; every row's result."""
        decoder = self.fallback.decoder
        for temperature in temperatures:
            if not self.pending:
                break
            taken, requests, frames = self.rows_at(temperature)
            if len(set(requests)) == 1:  # the decoder's plain call (a test's stand-in has only that one)
                self.take(decoder.decode(taken, requests[0], frames, self.generator))
            else:
                self.take(decoder.decode_rows(taken, requests, frames, self.generator))
        return self.results()

    def take(self, decoded: list[Decoded]) -> None:
        still: list[int] = []
        for row, result in zip(self.pending, decoded):
            self.candidates[row].append(result)
            if self.fallback.needs_fallback(result):
                still.append(row)
            else:
                self.passed[row] = result
        self.pending = still

    def results(self) -> list[Decoded]:
        return self.fallback.finished(self.passed, self.candidates)
