"""Cutting decoding loops: a short run of text tokens repeated over and over is kept once.

Whisper sometimes locks into a loop ("ありがとうございます。ありがとうございます。..." until the
token limit), most often on Japanese, music or noise. Temperature fallback usually breaks the
loop; when every temperature loops, the repeats carry no information, so they are dropped.
"""

from __future__ import annotations

import math

import numpy as np

MAX_PERIOD = 24  # longest repeating unit looked for, in text tokens (a sentence or two)
MIN_REPEATS = 5  # the unit must occur this many times in a row...
MIN_REPEATED_TOKENS = 12  # ...and cover at least this many tokens ("はい、はい、" stays)


def loop_start(text_tokens: list[int]) -> tuple[int, int] | None:
    """(index, period) of the earliest run of one unit repeated past the thresholds, else None."""
    best: tuple[int, int] | None = None
    for period in range(1, min(MAX_PERIOD, len(text_tokens) // MIN_REPEATS) + 1):
        repeats_needed = max(MIN_REPEATS, math.ceil(MIN_REPEATED_TOKENS / period))
        matches_needed = period * (repeats_needed - 1)  # token i equals token i + period this often in a row
        run = 0
        for index in range(len(text_tokens) - period):
            run = run + 1 if text_tokens[index] == text_tokens[index + period] else 0
            if run >= matches_needed:
                start = index - run + 1
                if best is None or start < best[0]:
                    best = (start, period)
                break
    return best


def loops_at_the_end(text_tokens: list[int]) -> bool:
    """Whether the text ends in a loop past the thresholds: its last tokens are one unit repeated
    (a decoding stuck there will only repeat it until the token limit)."""
    tokens = np.asarray(text_tokens)
    for period in range(1, min(MAX_PERIOD, len(tokens) // MIN_REPEATS) + 1):
        matches_needed = period * (max(MIN_REPEATS, math.ceil(MIN_REPEATED_TOKENS / period)) - 1)
        if matches_needed + period <= len(tokens) and np.array_equal(
                tokens[-matches_needed:], tokens[-matches_needed - period : -period]):
            return True
    return False


def trim_repetition(tokens: list[int], end_of_text: int) -> list[int]:
    """`tokens` without the repeats of a loop: the first occurrence stays, closed by a timestamp.

    Tokens at or above `end_of_text` (timestamps) are ignored when looking for the loop, because
    a looping segment repeats its text under ever new timestamps.
    """
    positions = [index for index, token in enumerate(tokens) if token < end_of_text]
    found = loop_start([tokens[index] for index in positions])
    if found is None:
        return tokens
    start, period = found
    cut = positions[start + period]  # where the first repeat begins
    kept = tokens[:cut]
    while len(kept) >= 2 and kept[-1] >= end_of_text and kept[-2] >= end_of_text:
        kept.pop()  # a timestamp pair opening the repeat: keep only the one closing the text
    return kept
