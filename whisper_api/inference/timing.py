"""Word timing, in one place (openai/whisper's timing.py): each token's time from the alignment
heads' cross-attention, tokens grouped into words (punctuation merged), and a segment's span
fitted to its words.

Token times take the same steps as openai/whisper's `find_alignment` and transformers' token
timestamps (normalise, smooth, dynamic time warping), on the host in float32 numpy. The warping
runs along anti-diagonals, so it is a few hundred numpy calls per chunk rather than a Python loop
over every (token, frame) cell.
"""

from __future__ import annotations

import statistics
import string
import unicodedata
from dataclasses import replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..transcript import Word
from .model import INPUT_STRIDE, TIME_PRECISION

# Scripts written without spaces: a "word" is the shortest run of tokens that decodes to whole
# characters, so a multi-byte character (most kanji and kana) is never split across words.
LANGUAGES_WITHOUT_SPACES = {"zh", "ja", "th", "lo", "my", "yue"}
REPLACEMENT_CHARACTER = "\ufffd"
MEDIAN_FILTER_WIDTH = 7  # attention frames smoothed over before the warping (openai/whisper's)


def is_punctuation(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and all(
        character in string.punctuation or unicodedata.category(character).startswith("P") for character in stripped
    )


def character_groups(tokens: list[int], spans: list[tuple[float, float]], decode) -> list[tuple[str, float, float]]:
    """Runs of tokens that decode to whole characters, with the span from first to last token."""
    groups: list[tuple[str, float, float]] = []
    pending: list[int] = []
    pending_start = 0.0
    for token, (start, end) in zip(tokens, spans):
        if not pending:
            pending_start = start
        pending.append(token)
        text = decode(pending)
        if REPLACEMENT_CHARACTER not in text:
            groups.append((text, pending_start, end))
            pending = []
    if pending:  # an incomplete character at the very end: keep its bytes as they decode
        groups.append((decode(pending), pending_start, spans[-1][1]))
    return groups


# openai/whisper's lists (transcribe.py), with the Japanese and Chinese brackets and the full-width
# quotes it misses: opening marks join the word after them, closing marks the word before.
PREPENDED_PUNCTUATION = "\"'“¿([{-" + "「『（【〈《［｛〔‘＂＇"
APPENDED_PUNCTUATION = "\"'.。,，!！?？:：”)]}、" + "」』）】〉》］｝〕’＂＇"
# Marks that open or close alike: in a spaced language a space before one opens, none closes; in a
# language without spaces they alternate.
AMBIGUOUS_QUOTES = set(PREPENDED_PUNCTUATION) & set(APPENDED_PUNCTUATION)


class _WordBuilder:
    """Words as they are grouped: text, start, end; punctuation waiting for the next word."""

    def __init__(self, spaced: bool) -> None:
        self.spaced = spaced
        self.words: list[list] = []  # [text, start, end]
        self.waiting = ""  # opening punctuation for the next word
        self.quotes_seen: dict[str, int] = {}

    def add_text(self, text: str, start: float, end: float) -> None:
        starts_word = text.startswith(" ") if self.spaced else True
        if starts_word or self.waiting or not self.words:
            self.words.append([self.waiting + text, start, end])
            self.waiting = ""
        else:  # the rest of the word before
            self.words[-1][0] += text
            self.words[-1][2] = end

    def add_punctuation(self, text: str) -> None:
        """Closing marks go to the word before (without moving its end: they are not speech),
        the opening marks after them wait for the next word."""
        marks = text.strip()
        split = len(marks)
        while split > 0 and self._opens(marks, split - 1, text.startswith(" ")):
            split -= 1
        closing, opening = marks[:split], marks[split:]
        for mark in marks:
            if mark in AMBIGUOUS_QUOTES:
                self.quotes_seen[mark] = self.quotes_seen.get(mark, 0) + 1
        if closing:
            if self.words and not self.waiting:
                self.words[-1][0] += closing
            else:
                self.waiting += closing
        if opening:
            self.waiting += (" " if text.startswith(" ") and not self.waiting else "") + opening

    def _opens(self, marks: str, index: int, spaced_before: bool) -> bool:
        mark = marks[index]
        if mark not in PREPENDED_PUNCTUATION:
            return False
        if mark not in AMBIGUOUS_QUOTES:
            # in a spaced language, a hyphen or bracket inside a word ("well-known", "f(x)") stays in it
            return not self.spaced or spaced_before or not self.words or index > 0
        if not self.spaced:
            return self.quotes_seen.get(mark, 0) % 2 == 0
        if index > 0:
            return marks[index - 1] in PREPENDED_PUNCTUATION and self._opens(marks, index - 1, spaced_before)
        return spaced_before or not self.words

    def finish(self) -> list[Word]:
        if self.waiting.strip():
            if self.words:
                self.words[-1][0] += self.waiting.strip()
            else:
                return [Word(self.waiting.strip(), 0.0, 0.0)]
        return [Word(text.strip(), start, max(start, end)) for text, start, end in self.words if text.strip()]


def group_words(
    tokens: list[int], spans: list[tuple[float, float]], decode, language: str
) -> list[Word]:
    """Words from text tokens and each token's (start, end) seconds. Punctuation is merged as
    openai/whisper's `merge_punctuations` does: opening marks (「, ", ( ...) onto the word after
    them, closing marks onto the word before; a word's time is its text's, not its marks'."""
    builder = _WordBuilder(spaced=language not in LANGUAGES_WITHOUT_SPACES)
    for text, start, end in character_groups(tokens, spans, decode):
        if is_punctuation(text):
            builder.add_punctuation(text)
        else:
            builder.add_text(text, start, end)
    return builder.finish()


SENTENCE_END_MARKS = ".。!！?？"


def median_word_duration(words: list[Word]) -> float:
    """openai/whisper's yardstick for an overlong word: the median word duration, at most 0.7 s."""
    durations = [word.end - word.start for word in words if word.end > word.start]
    return min(0.7, statistics.median(durations)) if durations else 0.0


def fit_words_to_segment(start: float, end: float, words: list[Word], median: float,
                         last_speech: float) -> tuple[float, float, list[Word]]:
    """A segment's (start, end, words) agreeing with each other, as openai/whisper's
    `add_word_timestamps` makes them: a first word that swallowed the pause before it is cut to
    twice the median word length; then the segment starts at its first word and ends at its last
    (unless that word is the one that is too long, then the word yields to the segment's edge)."""
    if not words or median <= 0:
        return start, end, words
    words = list(words)
    longest = 2 * median
    first = words[0]
    if first.end - last_speech > median * 4 and (
            first.end - first.start > longest or (len(words) > 1 and words[1].end - first.start > longest * 2)):
        if len(words) > 1 and words[1].end - words[1].start > longest:
            boundary = max(words[1].end / 2, words[1].end - longest)
            first = replace(first, end=boundary)
            words[1] = replace(words[1], start=boundary)
        first = replace(first, start=max(0.0, first.end - longest))
        words[0] = first
    if start < first.end and start - 0.5 > first.start:
        words[0] = replace(first, start=max(0.0, min(first.end - median, start)))
    else:
        start = first.start
    last = words[-1]
    if end > last.start and end + 0.5 < last.end:
        words[-1] = replace(last, end=max(last.start + median, end))
    else:
        end = last.end
    return start, max(start, end), words


def cut_long_words_at_sentence_ends(words: list[Word], median: float) -> list[Word]:
    """openai/whisper's guard: a word next to a sentence end is at most twice the median long
    (the attention of a closing 。 or the word after it often spreads over the pause)."""
    if median <= 0:
        return words
    longest = 2 * median
    words = list(words)
    for index in range(1, len(words)):
        word = words[index]
        if word.end - word.start > longest:
            if word.word[-1:] in SENTENCE_END_MARKS:
                words[index] = replace(word, end=word.start + longest)
            elif words[index - 1].word[-1:] in SENTENCE_END_MARKS:
                words[index] = replace(word, start=word.end - longest)
    return words


def median_filter(values: np.ndarray, width: int = MEDIAN_FILTER_WIDTH) -> np.ndarray:
    """Median over `width` neighbours along the last axis, edges reflected."""
    pad = width // 2
    if values.shape[-1] <= pad:
        return values
    padded = np.pad(values, [(0, 0)] * (values.ndim - 1) + [(pad, pad)], mode="reflect")
    return np.median(sliding_window_view(padded, width, axis=-1), axis=-1)


def dynamic_time_warping(cost_matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path through (tokens, frames): (token indices, frame indices) along
    it, from the start. Ties are broken as openai/whisper's `dtw_cpu` does."""
    tokens, frames = cost_matrix.shape
    cost = np.full((tokens + 1, frames + 1), np.inf, dtype=np.float32)
    trace = np.full((tokens + 1, frames + 1), -1, dtype=np.int8)
    cost[0, 0] = 0
    for diagonal in range(2, tokens + frames + 1):
        rows = np.arange(max(1, diagonal - frames), min(tokens, diagonal - 1) + 1)
        if rows.size == 0:
            continue
        columns = diagonal - rows
        diagonal_cost = cost[rows - 1, columns - 1]
        up_cost = cost[rows - 1, columns]
        left_cost = cost[rows, columns - 1]
        take_diagonal = (diagonal_cost < up_cost) & (diagonal_cost < left_cost)
        take_up = ~take_diagonal & (up_cost < diagonal_cost) & (up_cost < left_cost)
        best = np.where(take_diagonal, diagonal_cost, np.where(take_up, up_cost, left_cost))
        cost[rows, columns] = cost_matrix[rows - 1, columns - 1] + best
        trace[rows, columns] = np.where(take_diagonal, 0, np.where(take_up, 1, 2))
    trace[0, :] = 2
    trace[:, 0] = 1
    row, column = tokens, frames
    token_path, frame_path = [], []
    while row > 0 or column > 0:
        token_path.append(row - 1)
        frame_path.append(column - 1)
        move = trace[row, column]
        if move == 0:
            row, column = row - 1, column - 1
        elif move == 1:
            row -= 1
        else:
            column -= 1
    return np.array(token_path[::-1]), np.array(frame_path[::-1])


def token_times(weights: np.ndarray, mel_frames: int, count: int) -> list[tuple[float, float]]:
    """(start, end) seconds of `count` generated tokens from the alignment heads' weights
    (heads, rows, 1500): row i is the attention while token i was the decoder's input.

    As in transformers, a token ends where the path reaches its row and starts where the one
    before it ends (the first at 0); tokens past the last row share its time.
    """
    rows = weights.shape[1] if weights.ndim == 3 else 0
    if rows == 0 or count == 0:
        return [(0.0, 0.0)] * count
    matrix = weights[:, :, : max(mel_frames // INPUT_STRIDE, 1)].astype(np.float32)
    mean = matrix.mean(axis=1, keepdims=True)
    deviation = matrix.std(axis=1, keepdims=True)
    matrix = (matrix - mean) / np.where(deviation > 0, deviation, 1.0)
    matrix = median_filter(matrix).mean(axis=0)
    token_path, frame_path = dynamic_time_warping(-matrix)
    jumps = np.diff(token_path, prepend=-1).astype(bool)
    ends = (frame_path[jumps] * TIME_PRECISION).tolist()
    ends += [ends[-1]] * (count - len(ends))
    starts = [0.0] + ends[: count - 1]
    return list(zip(starts, ends[:count]))
