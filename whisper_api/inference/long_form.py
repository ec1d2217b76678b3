"""Long-form strategies: a clip of any length -> language and segments, in order.

`vad` (the default): Silero VAD finds the speech; it is cut into chunks of at most 30 s at the
longest pauses; chunks are decoded `batch_size` at a time, each on its own with the request's
prompt (never conditioned on the previous chunk's text: a model that repeats the previous text
over new audio is how sentences get lost), and their segments are mapped back to the clip and
held to the speech they cover. A chunk whose text stops short of its speech is carried on from
where the text stopped, in the same window (its audio is encoded once).

`sequential`: openai/whisper's loop, one 30 s window after another, conditioned on the previous
text; the VAD lets it jump over silence and never consume a window past speech the model did not
transcribe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..cancellation import raise_if_cancelled
from ..transcript import Segment, TranscriptionJob
from .chunks import Chunk, plan_chunks
from .decoder import MAX_NEW_TOKENS, Decoded, Decoder
from .fallback import FallbackDecoder
from .logprobs import chosen_logprobs, with_logprobs
from .model import (FRAMES_PER_SECOND, HOP_LENGTH, SAMPLE_RATE, TIME_PRECISION, WINDOW_SAMPLES, WINDOW_SECONDS,
                    LoadedModel)
from .segments import ChunkText, renumbered, split_segments
from .vad import FRAME_SECONDS, SpeechDetector, SpeechRegion, VadOptions, speech_regions

log = logging.getLogger(__name__)

MAX_PROMPT_TOKENS = 448 - MAX_NEW_TOKENS - 4 - 1  # room for <|startofprev|> and the task tokens
SAMPLING_SEED = 0
# Text that stops this long before its chunk's speech ends leaves speech untranscribed.
UNCOVERED_SPEECH_SECONDS = 1.0
MAX_RESUMES_PER_CHUNK = 3
# A text with fewer tokens than this left of its limit resumes in a window of its own instead.
MIN_TOKENS_TO_CARRY_ON = 32
# Empty text over speech the VAD is this sure of (mean frame probability) is decoded again.
CONFIDENT_SPEECH = 0.8
ONSET_LEAD_SECONDS = 0.5
# The sequential loop forgets the previous text across a pause this long.
STALE_CONTEXT_SECONDS = 10.0
# A job with more chunks than one batch decodes this many first, on their own: their text
# (streamed, or in the progress) comes after one chunk's decoding instead of a whole batch's.
# Streamed or not, a job is batched the same way, so both give the same text.
FIRST_BATCH_CHUNKS = 1


@dataclass(frozen=True)
class Progress:
    report: Callable[[int, int], None] | None

    def __call__(self, done: int, total: int) -> None:
        if self.report is not None:
            self.report(done, total)


@dataclass(frozen=True)
class FinishedSegments:
    """Sends a job's segments on (`TranscriptionJob.on_segments`) as soon as they are final."""

    send: Callable[[list[Segment]], None] | None

    def __call__(self, segments: list[Segment]) -> None:
        if self.send is not None and segments:
            self.send(segments)


class ClipDecoding:
    """What both strategies share: prefixes, language detection, chunk decoding with fallback."""

    def __init__(self, model: LoadedModel, decoder: Decoder, fallback: FallbackDecoder, detector: SpeechDetector) -> None:
        self.model = model
        self.decoder = decoder
        self.fallback = fallback
        self.detector = detector

    def prefix(self, language: str, task: str, context: list[int]) -> tuple[int, ...]:
        tokens = self.model.tokens
        head = (tokens.start_of_previous, *context[-MAX_PROMPT_TOKENS:]) if context else ()
        return (*head, *tokens.transcript_start(language, task))

    def prompt_tokens(self, job: TranscriptionJob) -> list[int]:
        return self.model.text_tokens(" " + job.prompt.strip()) if job.prompt and job.prompt.strip() else []

    def detect_language(self, encoded: torch.Tensor) -> str:
        """The language most probable over the given chunks together (English on an English-only
        model, which has no language tokens to ask)."""
        if self.model.english_only:
            return "en"
        probabilities = self.decoder.language_probabilities(encoded).mean(dim=0)
        return list(self.model.tokens.languages)[int(probabilities.argmax())]

    def encode(self, pieces: list[np.ndarray]) -> torch.Tensor:
        return self.decoder.encode_audio(pieces)

    def speech(self, job: TranscriptionJob) -> tuple[np.ndarray, list[SpeechRegion], VadOptions]:
        """The clip's frame probabilities and speech regions, found with the request's own
        speech options (`chunking_strategy`) over the server's."""
        options = replace(self.detector.options, **job.speech.changes())
        probabilities = self.detector.frame_probabilities(job.samples, job.cancellation)
        return probabilities, speech_regions(probabilities, job.duration, options), options

    def split(self, job: TranscriptionJob, encoded: torch.Tensor, prefix: tuple[int, ...], result: Decoded,
              offset: float, duration: float, language: str, **options) -> ChunkText:
        """A decoded row's segments, with its tokens' log probabilities when the job asks."""
        text = split_segments(self.model, result, offset, duration, language, **options)
        if not job.logprobs or not text.segments:
            return text
        logprobs = chosen_logprobs(self.decoder, encoded, prefix, result.tokens)
        return replace(text, segments=with_logprobs(self.model, text.segments, result, logprobs))


class VadStrategy:
    name = "vad"

    def __init__(self, clip: ClipDecoding, batch_size: int, cover_speech: bool = True,
                 first_batch_chunks: int = FIRST_BATCH_CHUNKS) -> None:
        self.clip = clip
        self.batch_size = batch_size
        self.cover_speech = cover_speech  # off only in benchmarks of fixed work on random weights
        self.first_batch_chunks = first_batch_chunks

    def batches(self, chunks: list[Chunk]) -> list[list[Chunk]]:
        """The chunks in order, `batch_size` at a time, after a first small batch when there is
        more than one batch."""
        first = min(self.first_batch_chunks, self.batch_size) if len(chunks) > self.batch_size else 0
        batches = [chunks[:first]] if first else []
        return batches + [chunks[start : start + self.batch_size] for start in range(first, len(chunks), self.batch_size)]

    def transcribe(self, job: TranscriptionJob) -> tuple[str, list[Segment]]:
        probabilities, regions, options = self.clip.speech(job)
        chunks = plan_chunks(regions, probabilities, job.duration, options)
        progress = Progress(job.on_progress)
        finished = FinishedSegments(job.on_segments)
        progress(0, len(chunks))
        passes = ChunkPasses(self.clip, job, self.clip.prompt_tokens(job), torch.Generator().manual_seed(SAMPLING_SEED))
        segments: list[Segment] = []
        decoded = 0

        def finish(started: StartedBatch) -> None:
            nonlocal decoded
            texts = passes.covered(started, probabilities) if self.cover_speech else passes.texts(started)
            finished(add_segments(texts, segments, job.duration))
            decoded += len(started.chunks)
            progress(decoded, len(chunks))

        # The first batch is finished before the next starts (its text comes first, streamed).
        # From then on a batch's rows are in line while the next batch's audio is encoded, and the
        # next batch's rows take the places its finished rows leave (and ride along with its
        # resumes and fallbacks): a batch's last rows never decode alone.
        in_line: StartedBatch | None = None
        for index, batch in enumerate(self.batches(chunks)):
            raise_if_cancelled(job.cancellation)
            started = passes.start(batch)
            if index == 0:
                finish(started)
                continue
            if in_line is not None:
                finish(in_line)
            in_line = started
        if in_line is not None:
            finish(in_line)
        return passes.language or "en", segments


def add_segments(texts: list[tuple[Chunk, ChunkText]], segments: list[Segment], duration: float) -> list[Segment]:
    """A decoded batch's segments onto the transcript, held to their speech and numbered (final:
    later batches never revise them); returns the new ones."""
    done_before = len(segments)
    for chunk, text in texts:
        for segment in text.segments:
            segment = held_to_speech(segment, chunk.regions)
            previous_end = segments[-1].end if segments else 0.0
            segments.append(renumbered(segment, len(segments), duration, previous_end))
    return segments[done_before:]


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
        return [None if self.clip.fallback.is_silence(result) else result for result in results]

    def text(self, encoded: torch.Tensor, row: int, chunk: Chunk, result: Decoded | None) -> ChunkText:
        if result is None or not result.tokens:
            return ChunkText([], False, 0.0)
        return self.clip.split(self.job, encoded[row : row + 1], self.prefix, result, chunk.start, chunk.duration,
                               self.language)

    def start(self, chunks: list[Chunk]) -> "StartedBatch":
        """The chunks encoded and their first pass handed to the decoder (not waited for)."""
        encoded = self.encode(chunks)
        collect = self.clip.fallback.submit(
            encoded, [chunk_frames(chunk) for chunk in chunks], self.prefix, self.job.temperature,
            self.job.word_timestamps, self.generator, cancellation=self.job.cancellation)
        return StartedBatch(chunks, encoded, collect)

    def first_pass(self, started: "StartedBatch") -> list[Decoded | None]:
        return [None if self.clip.fallback.is_silence(result) else result for result in started.collect()]

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
        for window, result in zip(windows, results):
            window.result = result
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
        for _ in range(MAX_RESUMES_PER_CHUNK):
            resumed = [(window, point) for window in windows if not window.done
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
            log.info("chunk %.1f-%.1f s: text stops at %.1f s before its speech ends at %.1f s; decoding "
                     "from there", window.chunk.start, window.chunk.end, point.stopped, window.chunk.regions[-1].end)
            if MAX_NEW_TOKENS - len(point.carried) >= MIN_TOKENS_TO_CARRY_ON:
                rows.append(window)
                carried.append(point.carried)
            else:
                rest = Window(Chunk(round(point.resume_from, 3), window.chunk.end, point.regions), of=window.of)
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


@dataclass(eq=False)
class Window:
    """A chunk's (or its rest's) encoder row and its text so far; `of` is the chunk it belongs to."""

    chunk: Chunk
    of: int
    row: int = -1
    result: Decoded | None = None
    done: bool = False  # no more resumes: nothing more was found, or a rest of it goes on


@dataclass(frozen=True)
class ResumePoint:
    stopped: float  # seconds in the clip where the text stops
    resume_from: float  # where the untranscribed speech starts (a little before it)
    regions: tuple[SpeechRegion, ...]  # the speech regions not transcribed
    carried: tuple[int, ...]  # the text so far, closed, and the timestamp it goes on at


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


def held_to_speech(segment: Segment, regions: tuple[SpeechRegion, ...]) -> Segment:
    """The segment's edges moved out of pauses onto the speech next to them (Whisper often opens a
    segment early over a pause or closes it late), never past its own text's span."""
    start, end = segment.start, segment.end
    if regions and not any(region.start <= start < region.end for region in regions):
        later = [region.start for region in regions if start < region.start < end]
        if later:
            start = later[0]
    if regions and not any(region.start < end <= region.end for region in regions):
        earlier = [region.end for region in regions if start < region.end < end]
        if earlier:
            end = earlier[-1]
    if (start, end) == (segment.start, segment.end):
        return segment
    words = [replace(word, start=min(max(word.start, start), end), end=min(max(word.end, start), end))
             for word in segment.words]
    return replace(segment, start=start, end=end, words=words)


class SequentialStrategy:
    """openai/whisper's transcribe loop over 30 s windows, conditioned on the previous text."""

    name = "sequential"

    def __init__(self, clip: ClipDecoding, condition_on_previous_text: bool = True) -> None:
        self.clip = clip
        self.condition_on_previous_text = condition_on_previous_text

    def transcribe(self, job: TranscriptionJob) -> tuple[str, list[Segment]]:
        samples = job.samples
        _, regions, _ = self.clip.speech(job)
        total_frames = len(samples) // HOP_LENGTH
        progress = Progress(job.on_progress)
        finished = FinishedSegments(job.on_segments)
        progress(0, total_frames)
        language = job.language
        prompt = self.clip.prompt_tokens(job)
        previous: list[int] = []
        generator = torch.Generator().manual_seed(SAMPLING_SEED)
        segments: list[Segment] = []
        seek = 0
        while seek < total_frames:
            raise_if_cancelled(job.cancellation)
            speech_ahead = [region for region in regions if region.end * FRAMES_PER_SECOND > seek]
            if not speech_ahead:
                break  # nothing but silence, noise or music left
            # jump over silence: a window opens where the next speech starts; text from before a
            # long pause is no context for what follows it (a new speaker, a new topic)
            # (half a second early: the VAD finds onsets late, and Whisper needs the first syllable)
            next_speech = max(int((speech_ahead[0].start - ONSET_LEAD_SECONDS) * FRAMES_PER_SECOND), 0)
            if next_speech - seek > STALE_CONTEXT_SECONDS * FRAMES_PER_SECOND:
                previous = []
            seek = max(seek, next_speech)
            window = samples[seek * HOP_LENGTH : seek * HOP_LENGTH + WINDOW_SAMPLES]
            window_frames = len(window) // HOP_LENGTH
            if window_frames == 0:
                break
            offset = seek / FRAMES_PER_SECOND
            encoded = self.clip.encode([window])
            if language is None:
                language = self.clip.detect_language(encoded)
            result = self.decode(encoded, window_frames, language, job, prompt, previous, generator)
            if previous and repeats(result.tokens, previous, self.clip.model.tokens.timestamp_begin):
                log.info("window at %.1f s repeats the previous text: decoding it again without it", offset)
                previous = []
                result = self.decode(encoded, window_frames, language, job, prompt, previous, generator)
            if self.clip.fallback.is_silence(result):
                seek += window_frames
                progress(min(seek, total_frames), total_frames)
                continue
            prefix = self.clip.prefix(language, job.task, prompt + previous)
            text = self.clip.split(job, encoded, prefix, result, offset, window_frames / FRAMES_PER_SECOND, language,
                                   seek=seek, keep_open_tail=False)
            consumed = self.consumed(text, window_frames, offset, regions)
            done_before = len(segments)
            for segment in text.segments:
                segment = held_to_speech(segment, tuple(regions))
                previous_end = segments[-1].end if segments else 0.0
                segments.append(renumbered(segment, len(segments), job.duration, previous_end))
            finished(segments[done_before:])
            if self.condition_on_previous_text and result.temperature <= 0.5:
                # the closed segments only, as openai/whisper: text after the last one is decoded
                # again in the next window, which must not find it in its prompt already
                previous.extend(token for segment in text.segments for token in segment.tokens)
            else:
                previous = []
            seek += max(consumed, 1)
            progress(min(seek, total_frames), total_frames)
        return language or "en", segments

    def decode(self, encoded: torch.Tensor, frames: int, language: str, job: TranscriptionJob, prompt: list[int],
               previous: list[int], generator: torch.Generator) -> Decoded:
        prefix = self.clip.prefix(language, job.task, prompt + previous)
        return self.clip.fallback.decode(encoded, [frames], prefix, job.temperature, job.word_timestamps, generator,
                                         cancellation=job.cancellation)[0]

    @staticmethod
    def consumed(text: ChunkText, window_frames: int, offset: float, regions: list[SpeechRegion]) -> int:
        """Mel frames the loop moves on by: to the last timestamp, as openai/whisper does, except
        that a single-timestamp ending (the model's "nothing more here") consumes the window only
        when no speech follows that timestamp in it; otherwise the loop resumes there."""
        last = round(text.last_timestamp * FRAMES_PER_SECOND)
        if not text.single_timestamp_ending:
            return last if text.closed_pairs and last > 0 else window_frames
        stopped = offset + text.last_timestamp
        window_end = offset + window_frames / FRAMES_PER_SECOND
        untranscribed = [region for region in regions
                         if region.end > stopped + UNCOVERED_SPEECH_SECONDS and region.start < window_end]
        return max(last, 1) if untranscribed and last > 0 else window_frames


def repeats(tokens: list[int], previous: list[int], timestamp_begin: int) -> bool:
    """Whether the window's text is text the previous windows already said."""
    text = [token for token in tokens if token < timestamp_begin]
    earlier = [token for token in previous if token < timestamp_begin]
    if len(text) < 4 or not earlier:
        return False
    window = len(text)
    return any(earlier[index : index + window] == text for index in range(0, max(len(earlier) - window + 1, 0)))
