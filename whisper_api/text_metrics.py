"""Error rates of a transcript against its reference: characters (Japanese) and words (English)."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence


def scored_characters(text: str) -> list[str]:
    """The characters that count: NFKC-normalized (full and half width alike), case-folded,
    without spaces and punctuation."""
    normalized = unicodedata.normalize("NFKC", text).casefold()
    return [c for c in normalized if not c.isspace() and not unicodedata.category(c).startswith("P")]


def scored_words(text: str) -> list[str]:
    normalized = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in normalized if not unicodedata.category(c).startswith("P")).split()


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance: insertions, deletions and substitutions, one each."""
    previous = list(range(len(hypothesis) + 1))
    for row, expected in enumerate(reference, start=1):
        current = [row]
        for column, actual in enumerate(hypothesis, start=1):
            current.append(min(previous[column] + 1, current[column - 1] + 1, previous[column - 1] + (expected != actual)))
        previous = current
    return previous[-1]


def error_rate(reference: Sequence[str], hypothesis: Sequence[str]) -> float:
    """Edit distance over the reference's length; an empty reference scores 0.0 only against nothing."""
    if not reference:
        return 0.0 if not hypothesis else 1.0
    return edit_distance(reference, hypothesis) / len(reference)


def character_error_rate(reference: str, hypothesis: str) -> float:
    return error_rate(scored_characters(reference), scored_characters(hypothesis))


def word_error_rate(reference: str, hypothesis: str) -> float:
    return error_rate(scored_words(reference), scored_words(hypothesis))
