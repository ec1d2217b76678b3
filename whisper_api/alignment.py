"""Word timings: grouping Whisper's text tokens into words, each timed by cross-attention alignment."""

from __future__ import annotations

import string
import unicodedata

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


def group_words(
    tokens: list[int], spans: list[tuple[float, float]], decode, language: str
) -> list[Word]:
    """Words from text tokens and each token's (start, end) seconds."""
    groups = character_groups(tokens, spans, decode)
    words: list[list] = []
    for text, start, end in groups:
        if language in LANGUAGES_WITHOUT_SPACES:
            starts_word = not is_punctuation(text)
        else:
            starts_word = text.startswith(" ") and not is_punctuation(text)
        if starts_word or not words:
            words.append([text, start, end])
        else:  # a continuation or punctuation belongs to the word before it
            words[-1][0] += text
            words[-1][2] = end
    return [Word(text.strip(), start, max(start, end)) for text, start, end in words if text.strip()]
