"""A decoded chunk's tokens -> timed segments (cut at timestamp pairs) and words, in clip time."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..alignment import cut_long_words_at_sentence_ends, fit_words_to_segment, group_words, median_word_duration
from ..transcript import Segment, Word
from .decoder import Decoded
from .model import LoadedModel, TIME_PRECISION


@dataclass(frozen=True)
class ChunkText:
    """What one decoded chunk says: its segments and where its text stops."""

    segments: list[Segment]  # ids 0, seek 0: numbered when the transcript is assembled
    single_timestamp_ending: bool  # the model closed its text with one timestamp: nothing follows
    last_timestamp: float  # seconds from the chunk's start of the last timestamp token (0 if none)
    closed_pairs: bool = False  # the text holds at least one pair of timestamps (a closed segment)


def split_segments(model: LoadedModel, result: Decoded, offset: float, duration: float, language: str,
                   seek: int = 0, keep_open_tail: bool = True) -> ChunkText:
    """Cut the chunk's tokens at timestamp pairs; times are `offset` + the tokens' seconds, and a
    segment without a closing timestamp ends at the chunk's `duration`. Text after the last pair
    that no timestamp closes is kept unless `keep_open_tail` is off (the sequential loop decodes
    it again in its next window)."""
    tokens = result.tokens
    timestamp_begin = model.tokens.timestamp_begin
    is_timestamp = [token >= timestamp_begin for token in tokens]
    single_timestamp_ending = is_timestamp[-2:] == [False, True]
    boundaries = [index + 1 for index in range(len(tokens) - 1) if is_timestamp[index] and is_timestamp[index + 1]]
    stamps = [token for token in tokens if token >= timestamp_begin]
    last_timestamp = (stamps[-1] - timestamp_begin) * TIME_PRECISION if stamps else 0.0
    pieces: list[tuple[float, float, int, int]] = []
    if boundaries:
        if single_timestamp_ending or (keep_open_tail and tokens and not is_timestamp[-1]):
            boundaries.append(len(tokens))
        last = 0
        for boundary in boundaries:
            start = (tokens[last] - timestamp_begin) * TIME_PRECISION if is_timestamp[last] else 0.0
            end = (tokens[boundary - 1] - timestamp_begin) * TIME_PRECISION if is_timestamp[boundary - 1] else duration
            pieces.append((start, end, last, boundary))
            last = boundary
    elif tokens:
        start = (tokens[0] - timestamp_begin) * TIME_PRECISION if is_timestamp[0] else 0.0
        end = last_timestamp if stamps and last_timestamp > start else duration
        pieces.append((start, end, 0, len(tokens)))
    segments = []
    for start, end, first, last in pieces:
        piece_tokens = tokens[first:last]
        text = model.decode_text(piece_tokens)
        if not text.strip():
            continue
        segments.append(Segment(
            id=0, seek=seek, start=offset + start, end=offset + max(end, start), text=text, tokens=piece_tokens,
            temperature=result.temperature, avg_logprob=result.avg_logprob,
            compression_ratio=result.compression_ratio, no_speech_prob=result.no_speech_prob,
            words=_words(model, result, first, last, offset, language),
        ))
    return ChunkText(fitted_to_words(segments, offset), single_timestamp_ending, last_timestamp, bool(boundaries))


def fitted_to_words(segments: list[Segment], offset: float) -> list[Segment]:
    """With word timestamps, each segment spans its words (openai/whisper's timing rules)."""
    words = [word for segment in segments for word in segment.words]
    if not words:
        return segments
    median = median_word_duration(words)
    words = iter(cut_long_words_at_sentence_ends(words, median))
    fitted, last_speech = [], offset
    for segment in segments:
        start, end, segment_words = fit_words_to_segment(
            segment.start, segment.end, [next(words) for _ in segment.words], median, last_speech)
        fitted.append(replace(segment, start=start, end=end, words=segment_words))
        if segment_words:
            last_speech = end
    return fitted


def _words(model: LoadedModel, result: Decoded, first: int, last: int, offset: float, language: str) -> list[Word]:
    if not result.token_spans:
        return []
    end_of_text = model.tokens.end_of_text
    indexes = [index for index in range(first, last) if result.tokens[index] < end_of_text]
    spans = [(offset + result.token_spans[index][0], offset + result.token_spans[index][1]) for index in indexes]
    return group_words([result.tokens[index] for index in indexes], spans, model.tokenizer.decode, language)


def renumbered(segment: Segment, number: int, duration: float, previous_end: float = 0.0) -> Segment:
    """Number the segment and keep it, and its words, inside the audio, after the segment before
    it and inside each other; with words, the segment spans exactly its words."""
    end = min(max(segment.end, previous_end), duration)
    start = min(max(segment.start, previous_end), end)
    words = [
        replace(word, start=min(max(word.start, start), end), end=min(max(word.end, start), end))
        for word in segment.words
    ]
    if words:
        start, end = words[0].start, max(words[0].start, words[-1].end)
    return replace(segment, id=number, start=start, end=end, words=words)
