"""Long-form strategies: a clip of any length -> language and segments, in order.

`vad` (the default): Silero VAD finds the speech; it is cut into chunks of at most 30 s at the
longest pauses; chunks are decoded `batch_size` at a time, each on its own with the request's
prompt (never conditioned on the previous chunk's text: a model that repeats the previous text
over new audio is how sentences get lost), and their segments are mapped back to the clip and
held to the speech they cover. A chunk whose text stops short of its speech is carried on from
where the text stopped, in the same window (its audio is encoded once: coverage.py).

`sequential`: openai/whisper's loop, one 30 s window after another, conditioned on the previous
text; the VAD lets it jump over silence and never consume a window past speech the model did not
transcribe.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from ..cancellation import raise_if_cancelled
from ..transcript import Segment, TranscriptionJob
from .chunks import Chunk, plan_chunks
from .clip import ClipDecoding
from .coverage import UNCOVERED_SPEECH_SECONDS, ChunkPasses, StartedBatch
from .decoder import Decoded
from .model import FRAMES_PER_SECOND, HOP_LENGTH, WINDOW_SAMPLES
from .segments import ChunkText, renumbered
from .vad import SpeechRegion

log = logging.getLogger(__name__)

SAMPLING_SEED = 0
ONSET_LEAD_SECONDS = 0.5
# The sequential loop forgets the previous text across a pause this long.
STALE_CONTEXT_SECONDS = 10.0
# A streamed job with more chunks than one batch decodes this many first, on their own: its first
# text comes after one chunk's decoding instead of a whole batch's. A job that is not streamed has
# no one waiting for its first text: its first chunk rides along with the next ones (a chunk
# decoding alone pays for reading every weight at every step; 1.2 s of a 10-minute lecture's
# 31 s on two cores).
FIRST_BATCH_CHUNKS = 1
# Batches encoded and decoding ahead of the one being finished (its resumes and fallbacks): their
# rows take the places its finished rows leave. A job nobody streams keeps two in line (the
# 10-minute lecture: 47 one-row steps instead of 80); a streamed one keeps one, so that each
# batch's text is sent one batch's encoding sooner.
BATCHES_IN_LINE = {"streamed": 1, "not streamed": 2}


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


class VadStrategy:
    name = "vad"

    def __init__(self, clip: ClipDecoding, batch_size: int, cover_speech: bool = True,
                 first_batch_chunks: int = FIRST_BATCH_CHUNKS) -> None:
        self.clip = clip
        self.batch_size = batch_size
        self.cover_speech = cover_speech  # off only in benchmarks of fixed work on random weights
        self.first_batch_chunks = first_batch_chunks

    def batches(self, chunks: list[Chunk], streamed: bool = True) -> list[list[Chunk]]:
        """The chunks in order, `batch_size` at a time, after a first small batch when the job is
        streamed and there is more than one batch."""
        first = min(self.first_batch_chunks, self.batch_size) if streamed and len(chunks) > self.batch_size else 0
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

        # A streamed job's first batch is finished before the next starts (its text comes first).
        # From then on a batch's rows are in line while the next batches' audio is encoded, and
        # the next batches' rows take the places its finished rows leave (and ride along with its
        # resumes and fallbacks): a batch's last rows never decode alone.
        streamed = job.on_segments is not None
        ahead = BATCHES_IN_LINE["streamed" if streamed else "not streamed"]
        in_line: deque[StartedBatch] = deque()
        for index, batch in enumerate(self.batches(chunks, streamed)):
            raise_if_cancelled(job.cancellation)
            started = passes.start(batch, carry_on=self.cover_speech)
            if index == 0 and streamed:
                finish(started)
                continue
            if len(in_line) >= ahead:
                finish(in_line.popleft())
            in_line.append(started)
        while in_line:
            finish(in_line.popleft())
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
