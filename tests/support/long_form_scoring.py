"""Scoring a long-form transcript against a clip's known sentences and non-speech spans; the
acceptance tests (tests/test_long_form.py) and the benchmark (bench/long_form.py) both use it.

Segments are anything with `start`, `end` (seconds) and `text`: our `Segment`s and
faster-whisper's alike.
"""

from __future__ import annotations

import statistics
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tests.support.long_clips import LongFormClip, Sentence
from tests.support.speech import character_error_rate

# A sentence is found when the segments overlapping its time hold its text with a character
# error rate under this. Measured with Whisper base (float32, greedy, CPU) on these clips: heard
# sentences score 0.00-0.25 under sequential and up to 0.36 under vad (homophones: 震度 for 振動,
# 大人 for 音が, 例えば for たとえば, 日々も for 昼よりも, in one sentence); a sentence the decoder
# lost, or wrote 16 s away from its speech, scores 1.0. Half-way between the two.
SENTENCE_CER_LIMIT = 0.5


class TimedText(Protocol):
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class ClipScore:
    sentences: int
    found: int
    missing: tuple[str, ...]
    invented_characters: int
    invented_text: tuple[str, ...]
    seconds_over_non_speech: float  # silence, noise and tones
    seconds_over_pauses: float  # pauses of a second or more between sentences
    segments_across_long_pauses: int  # segments holding a whole pause of a second or more
    median_start_error: float | None

    @property
    def found_share(self) -> float:
        return self.found / self.sentences if self.sentences else 1.0


def comparable(text: str) -> str:
    """The characters character_error_rate compares: NFKC, case-folded, no spaces or punctuation."""
    normalized = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in normalized if not c.isspace() and not unicodedata.category(c).startswith("P"))


def best_substring(reference: str, text: str) -> str:
    """The stretch of `text` closest to `reference` by edit distance (semi-global alignment:
    what comes before or after it in `text` costs nothing)."""
    needle, haystack = comparable(reference), comparable(text)
    if not needle or not haystack:
        return haystack
    # previous[j]: (cost, start) of aligning needle[:i] so that it ends at haystack[j]
    previous = [(0, j) for j in range(len(haystack) + 1)]
    for i in range(1, len(needle) + 1):
        current = [(i, 0)]
        for j in range(1, len(haystack) + 1):
            substitute = previous[j - 1][0] + (needle[i - 1] != haystack[j - 1])
            options = (
                (substitute, previous[j - 1][1]),
                (previous[j][0] + 1, previous[j][1]),
                (current[j - 1][0] + 1, current[j - 1][1]),
            )
            current.append(min(options))
        previous = current
    end = min(range(len(previous)), key=lambda j: previous[j][0])
    return haystack[previous[end][1] : end]


def overlaps(segment: TimedText, start: float, end: float) -> bool:
    return segment.start < end and segment.end > start


def sentence_error(sentence: Sentence, segments: Sequence[TimedText]) -> float:
    """Character error rate of the sentence against the best stretch of the text of the
    segments overlapping its time."""
    text = "".join(segment.text for segment in segments if overlaps(segment, sentence.start, sentence.end))
    return character_error_rate(sentence.text, best_substring(sentence.text, text))


def covered_seconds(segments: Sequence[TimedText], start: float, end: float) -> float:
    """Seconds of [start, end] under at least one segment."""
    spans = sorted((max(s.start, start), min(s.end, end)) for s in segments if overlaps(s, start, end))
    total, reach = 0.0, start
    for first, last in spans:
        first = max(first, reach)
        if last > first:
            total += last - first
            reach = last
    return total


def score(clip: LongFormClip, segments: Sequence[TimedText]) -> ClipScore:
    segments = [segment for segment in segments if comparable(segment.text)]
    required = [sentence for sentence in clip.sentences if sentence.complete]
    missing = tuple(s.text for s in required if sentence_error(s, segments) >= SENTENCE_CER_LIMIT)
    invented = [
        segment.text
        for segment in segments
        if not any(overlaps(segment, sentence.start, sentence.end) for sentence in clip.sentences)
    ]
    start_errors = []
    for segment in segments:
        starts = [s.start for s in clip.sentences if overlaps(segment, s.start, s.end)]
        if starts:
            start_errors.append(min(abs(segment.start - start) for start in starts))
    gaps = [span for span in clip.non_speech if span.kind != "pause"]
    pauses = [span for span in clip.non_speech if span.kind == "pause"]
    return ClipScore(
        sentences=len(required),
        found=len(required) - len(missing),
        missing=missing,
        invented_characters=sum(len(comparable(text)) for text in invented),
        invented_text=tuple(invented),
        seconds_over_non_speech=round(sum(covered_seconds(segments, g.start, g.end) for g in gaps), 2),
        seconds_over_pauses=round(sum(covered_seconds(segments, p.start, p.end) for p in pauses), 2),
        segments_across_long_pauses=sum(
            any(segment.start <= p.start and segment.end >= p.end for p in pauses) for segment in segments
        ),
        median_start_error=round(statistics.median(start_errors), 3) if start_errors else None,
    )
