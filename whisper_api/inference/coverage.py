"""A batch of chunks through the decoder until every chunk's speech is covered by text.

A chunk's audio is encoded once. Its first pass is handed to the decoder without waiting (the next
batch's audio is encoded meanwhile); empty text over speech the VAD is sure of is decoded again one
temperature up; text that stops over a second before the chunk's speech ends carries on in the
same window, from a timestamp where the untranscribed speech starts.

Where the scheduler decodes a greedy first pass, a row carries on the moment its text ends, in
its place in the batch (`CarriesOnInPlace`): its cache already holds its text and the encoder's
keys and values, so nothing is prefilled or projected again, and the row never waits for the
rest of its batch. What cannot go on that way (a row that falls back to a higher temperature, a
text near its token limit, word timestamps, the plain loop) carries on through rows of its own
afterwards, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..cancellation import raise_if_cancelled
from ..transcript import TranscriptionJob
from .chunks import Chunk
from .clip import ClipDecoding
from .decoder import MAX_NEW_TOKENS, Decoded
from .fallback import FallbackDecoder
from .model import FRAMES_PER_SECOND, SAMPLE_RATE, TIME_PRECISION, WINDOW_SECONDS, LoadedModel
from .segments import ChunkText
from .vad import FRAME_SECONDS, SpeechRegion

log = logging.getLogger(__name__)

# Text that stops this long before its chunk's speech ends leaves speech untranscribed.
UNCOVERED_SPEECH_SECONDS = 1.0
MAX_RESUMES_PER_CHUNK = 3
# A text with fewer tokens than this left of its limit resumes in a window of its own instead.
MIN_TOKENS_TO_CARRY_ON = 32
# Empty text over speech the VAD is this sure of (mean frame probability) is decoded again.
CONFIDENT_SPEECH = 0.8


class ChunkPasses:
    """One job's chunks through the decoder: a first pass, then the passes that make sure every
    speech region ends up covered by text.

    A chunk's audio is encoded once. Text that stops over a second before its chunk's speech
    ends is carried on in the same window: its tokens so far, closed by their last timestamp, and
    a timestamp where the untranscribed speech starts become the row's prefix, and the decoder
    goes on from there (no second encoder pass; rows of every chunk that carry on, and other
    jobs' rows, share the steps). Only a text that has used most of its token limit resumes in a
    window of its own, from where it stopped."""

    def __init__(self, clip: ClipDecoding, job: TranscriptionJob, prompt: list[int], generator: torch.Generator
                 ) -> None:
        self.clip = clip
        self.job = job
        self.prompt = prompt
        self.generator = generator
        self.language = job.language

    def encode(self, chunks: list[Chunk]) -> torch.Tensor:
        raise_if_cancelled(self.job.cancellation)
        encoded = self.clip.encode([speech_only(self.job.samples, chunk) for chunk in chunks])
        if self.language is None:
            self.language = self.clip.detect_language(encoded)
        return encoded

    @property
    def prefix(self) -> tuple[int, ...]:
        return self.clip.prefix(self.language, self.job.task, self.prompt)

    def decode_rows(self, encoded: torch.Tensor, chunks: list[Chunk], carried: list[tuple[int, ...]] | None = None,
                    forced_fallback: bool = False) -> list[Decoded | None]:
        """Each chunk's text (None where it is silence), a row carrying on `carried[row]` where
        that is not empty."""
        raise_if_cancelled(self.job.cancellation)
        carried = carried or [()] * len(chunks)
        prefixes = [(*self.prefix, *tokens) for tokens in carried]
        results = self.clip.fallback.decode(
            encoded, [chunk_frames(chunk) for chunk in chunks], prefixes, self.job.temperature,
            self.job.word_timestamps, self.generator, first_temperature_forced=forced_fallback,
            cancellation=self.job.cancellation, carried=[len(tokens) for tokens in carried],
        )
        return self.unless_silence(results)

    def unless_silence(self, results: list[Decoded]) -> list[Decoded | None]:
        return [None if self.clip.fallback.is_silence(result) else result for result in results]

    def text(self, encoded: torch.Tensor, row: int, chunk: Chunk, result: Decoded | None) -> ChunkText:
        if result is None or not result.tokens:
            return ChunkText([], False, 0.0)
        return self.clip.split(self.job, encoded[row : row + 1], self.prefix, result, chunk.start, chunk.duration,
                               self.language)

    def start(self, chunks: list[Chunk], carry_on: bool = True) -> "StartedBatch":
        """The chunks encoded and their first pass handed to the decoder (not waited for); with
        `carry_on`, rows whose text stops short go on in their place (`CarriesOnInPlace`)."""
        encoded = self.encode(chunks)
        continuations = [CarriesOnInPlace(self.clip.model, self.clip.fallback, chunk) if carry_on else None
                         for chunk in chunks]
        collect = self.clip.fallback.submit(
            encoded, [chunk_frames(chunk) for chunk in chunks], self.prefix, self.job.temperature,
            self.job.word_timestamps, self.generator, cancellation=self.job.cancellation,
            continuations=continuations)
        return StartedBatch(chunks, encoded, collect, continuations)

    def first_pass(self, started: "StartedBatch") -> list[Decoded | None]:
        return self.unless_silence(started.collect())

    def texts(self, started: "StartedBatch") -> list[tuple[Chunk, ChunkText]]:
        """The first pass's text, nothing more."""
        results = self.first_pass(started)
        return [(chunk, self.text(started.encoded, row, chunk, result))
                for row, (chunk, result) in enumerate(zip(started.chunks, results))]

    def covered(self, started: "StartedBatch", probabilities: np.ndarray) -> list[tuple[Chunk, ChunkText]]:
        """The chunks' text, and more where it stops short of a chunk's speech: empty text over
        speech the VAD is sure of is decoded again one temperature up; text that stops over a
        second before its chunk's speech ends is carried on from there."""
        chunks, encoded = started.chunks, started.encoded
        windows = [Window(chunk, of=index, row=index) for index, chunk in enumerate(chunks)]
        results = self.first_pass(started)
        for window, result, continuation in zip(windows, results, started.continuations):
            window.result = result
            if continuation is not None and continuation.result is result:  # it ended carrying on
                window.resumes, window.done = continuation.resumes, continuation.settled
        empty = [window for window in windows if not has_text(self.clip.model, window.result)
                 and speech_confidence(probabilities, window.chunk.start, window.chunk.end) >= CONFIDENT_SPEECH]
        if empty:
            for window in empty:
                log.info("chunk %.1f-%.1f s: no text over confident speech, decoding it again at a higher "
                         "temperature", window.chunk.start, window.chunk.end)
            rows = torch.tensor([window.row for window in empty], device=encoded.device)
            again = self.decode_rows(encoded.index_select(0, rows), [window.chunk for window in empty],
                                     forced_fallback=True)
            for window, result in zip(empty, again):
                window.result = result
        while True:
            resumed = [(window, point) for window in windows
                       if not window.done and window.resumes < MAX_RESUMES_PER_CHUNK
                       and (point := resume_point(self.clip.model, window.chunk, window.result)) is not None]
            if not resumed:
                break
            encoded, windows = self.carry_on(encoded, windows, resumed)
        pieces: dict[int, list[tuple[Chunk, ChunkText]]] = {}
        for window in windows:
            pieces.setdefault(window.of, []).append(
                (window.chunk, self.text(encoded, window.row, window.chunk, window.result)))
        return [piece for index in sorted(pieces) for piece in pieces[index]]

    def carry_on(self, encoded: torch.Tensor, windows: list["Window"], resumed: list[tuple["Window", "ResumePoint"]]
                 ) -> tuple[torch.Tensor, list["Window"]]:
        """One round of resumes, all rows decoded together: rows with room left carry on in their
        own window; the others resume in a new window from where their text stopped."""
        rows: list[Window] = []
        carried: list[tuple[int, ...]] = []
        fresh: list[Window] = []
        for window, point in resumed:
            window.resumes += 1
            log_resume(window.chunk, point, "decoding from there")
            if point.fits_in_its_window:
                rows.append(window)
                carried.append(point.carried)
            else:
                rest = Window(Chunk(round(point.resume_from, 3), window.chunk.end, point.regions), of=window.of,
                              resumes=window.resumes)
                window.done = True
                fresh.append(rest)
                rows.append(rest)
                carried.append(())
        if fresh:  # their windows' encoder states join the others'
            encoded = torch.cat([encoded, self.encode([window.chunk for window in fresh])])
            for offset, window in enumerate(fresh):
                window.row = encoded.shape[0] - len(fresh) + offset
            windows = windows + fresh
        taken = encoded.index_select(0, torch.tensor([window.row for window in rows], device=encoded.device))
        results = self.decode_rows(taken, [window.chunk for window in rows], carried)
        for window, tokens, result in zip(rows, carried, results):
            if not tokens:
                window.result = result
            elif result is not None and has_text(self.clip.model, result, after=len(tokens)):
                window.result = result
            else:  # nothing more to hear there: the text stays as it was
                window.done = True
        return encoded, windows


@dataclass(frozen=True)
class StartedBatch:
    """Chunks encoded, their first pass in the decoder's hands: `collect()` waits for it."""

    chunks: list[Chunk]
    encoded: torch.Tensor
    collect: Callable[[], list[Decoded]]
    continuations: list["CarriesOnInPlace | None"]


@dataclass(eq=False)
class Window:
    """A chunk's (or its rest's) encoder row and its text so far; `of` is the chunk it belongs to."""

    chunk: Chunk
    of: int
    row: int = -1
    result: Decoded | None = None
    done: bool = False  # no more resumes: nothing more was found, or a rest of it goes on
    resumes: int = 0


@dataclass(eq=False)
class CarriesOnInPlace:
    """A first-pass row's carry-ons in its place in the scheduler's batch (ContinuesInPlace).

    When the row's text ends, and it passes the quality checks, stops over a second before the
    chunk's speech ends and has room left, the row goes on from its closed text and a timestamp
    where the untranscribed speech starts (as `ChunkPasses.carry_on` would, without a prefill).
    A carry-on that finds no more text gives the text before it back (and no more are tried);
    one that fails the checks gives it back too, and the resume is made afresh (one temperature
    up if it fails again) once the first pass is in."""

    model: LoadedModel
    fallback: FallbackDecoder
    chunk: Chunk
    resumes: int = 0
    settled: bool = False  # a carry-on found nothing more to hear
    before: Decoded | None = None  # the text before the last carry-on
    carried: int = 0  # tokens of `before` the last carry-on went on from
    result: Decoded | None = None  # what the row ended with

    def after(self, result: Decoded) -> tuple[int, ...] | Decoded:
        if self.before is not None:
            if not has_text(self.model, result, after=self.carried):
                self.settled = True
                return self._ends(self.before)
            if self.fallback.needs_fallback(result):
                return self._ends(self.before)
        if (self.fallback.needs_fallback(result) or self.fallback.is_silence(result)
                or self.resumes >= MAX_RESUMES_PER_CHUNK):
            return self._ends(result)
        point = resume_point(self.model, self.chunk, result)
        if point is None or not point.fits_in_its_window:
            return self._ends(result)
        log_resume(self.chunk, point, "carrying on in place")
        self.before, self.carried = result, len(point.carried)
        self.resumes += 1
        return point.carried

    def _ends(self, result: Decoded) -> Decoded:
        self.result = result
        return result


@dataclass(frozen=True)
class ResumePoint:
    stopped: float  # seconds in the clip where the text stops
    resume_from: float  # where the untranscribed speech starts (a little before it)
    regions: tuple[SpeechRegion, ...]  # the speech regions not transcribed
    carried: tuple[int, ...]  # the text so far, closed, and the timestamp it goes on at

    @property
    def fits_in_its_window(self) -> bool:
        """Room is left under the token limit to carry on in the same window (else the rest of
        the speech resumes in a window of its own)."""
        return MAX_NEW_TOKENS - len(self.carried) >= MIN_TOKENS_TO_CARRY_ON


def log_resume(chunk: Chunk, point: ResumePoint, how: str) -> None:
    log.info("chunk %.1f-%.1f s: text stops at %.1f s before its speech ends at %.1f s; %s", chunk.start, chunk.end,
             point.stopped, chunk.regions[-1].end, how)


def has_text(model: LoadedModel, result: Decoded | None, after: int = 0) -> bool:
    return result is not None and any(token < model.tokens.end_of_text for token in result.tokens[after:])


def resume_point(model: LoadedModel, chunk: Chunk, result: Decoded | None) -> ResumePoint | None:
    """Where a chunk's text must go on: it stops (at its last closing timestamp) over a second
    before the chunk's speech ends; None when it covers the speech or ends in open text."""
    if result is None:
        return None
    timestamp_begin = model.tokens.timestamp_begin
    tokens = result.tokens
    closing = next((index for index in range(len(tokens) - 1, 0, -1)
                    if tokens[index] >= timestamp_begin and tokens[index - 1] < timestamp_begin), None)
    if closing is None or any(token < timestamp_begin for token in tokens[closing:]):
        return None  # no closed text, or text after the last timestamp that none closes
    stopped = chunk.start + (tokens[closing] - timestamp_begin) * TIME_PRECISION
    rest = uncovered_from(chunk, stopped)
    if rest is None:
        return None
    resume_from, regions = rest
    at = max(round((resume_from - chunk.start) / TIME_PRECISION), tokens[closing] - timestamp_begin)
    if at * TIME_PRECISION >= min(chunk.duration, WINDOW_SECONDS):
        return None
    return ResumePoint(stopped, resume_from, regions, (*tokens[: closing + 1], timestamp_begin + at))


def chunk_frames(chunk: Chunk) -> int:
    return min(round(chunk.duration * FRAMES_PER_SECOND), WINDOW_SECONDS * FRAMES_PER_SECOND)


def uncovered_from(chunk: Chunk, stopped: float) -> tuple[float, tuple[SpeechRegion, ...]] | None:
    """Where speech left untranscribed after `stopped` (seconds in the clip) resumes, and its
    regions, when over a second of the chunk's speech remains after it."""
    remaining = [region for region in chunk.regions if region.end > stopped + UNCOVERED_SPEECH_SECONDS]
    if not remaining or chunk.regions[-1].end - stopped < UNCOVERED_SPEECH_SECONDS:
        return None
    return max(stopped, remaining[0].start - 0.2, chunk.start), tuple(remaining)


def uncovered_rest(chunk: Chunk, last: tuple[Chunk, ChunkText]) -> Chunk | None:
    """The part of `chunk` after the last text decoded in it, where speech remains untranscribed
    for over a second; None when the text covers the speech (or the last pass found nothing)."""
    _, text = last
    if not text.segments:
        return None
    rest = uncovered_from(chunk, text.segments[-1].end)
    if rest is None:
        return None
    start, regions = rest
    return Chunk(round(start, 3), chunk.end, regions)


def speech_only(samples: np.ndarray, chunk: Chunk) -> np.ndarray:
    """The chunk's audio with everything between its speech regions silenced: noise or music in
    a pause inside a chunk is what Whisper mishears or invents text over."""
    first = int(chunk.start * SAMPLE_RATE)
    audio = samples[first : int(chunk.end * SAMPLE_RATE)].copy()
    kept = np.zeros(len(audio), dtype=bool)
    for region in chunk.regions:
        kept[max(int(region.start * SAMPLE_RATE) - first, 0) : max(int(region.end * SAMPLE_RATE) - first, 0)] = True
    audio[~kept] = 0.0
    return audio


def speech_confidence(probabilities: np.ndarray, start: float, end: float) -> float:
    frames = probabilities[int(start / FRAME_SECONDS) : max(int(end / FRAME_SECONDS), int(start / FRAME_SECONDS) + 1)]
    return float(frames.mean()) if frames.size else 0.0
