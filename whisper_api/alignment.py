"""Word timings: grouping Whisper's text tokens into words, each timed by cross-attention alignment,
and a segment's span fitted to its words (openai/whisper's timing.py rules)."""

from __future__ import annotations

import statistics
import string
import unicodedata
from dataclasses import replace

from .transcript import Word

# Scripts written without spaces: a "word" is the shortest run of tokens that decodes to whole
# characters, so a multi-byte character (most kanji and kana) is never split across words.
LANGUAGES_WITHOUT_SPACES = {"zh", "ja", "th", "lo", "my", "yue"}
REPLACEMENT_CHARACTER = "\ufffd"


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
