"""From clustered windows to speaker turns, and from turns to a transcript's segments.

A segment that two speakers share is split where its words change speaker (word timings tell
where); speakers get names in order of first appearance: a known speaker's name, else A, B, ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ..transcript import Segment, Word


BRIDGE_SECONDS = 1.0  # a breath or a comma inside one speaker's talk, not a change of speaker


@dataclass(frozen=True)
class Turn:
    """A stretch of one speaker's speech, in seconds; `speaker` is a cluster index until named."""

    start: float
    end: float
    speaker: int


def turns_from_windows(
    regions: list[tuple[float, float]],
    windows: list[tuple[float, float]],
    labels: list[int],
    quietest: Callable[[float, float], float | None] = lambda start, end: None,
) -> list[Turn]:
    """Every moment of every speech region goes to the window whose centre is nearest; where two
    neighbouring windows disagree, the change is moved to the quietest moment between them
    (`quietest(start, end)`, None where there is no pause: people take turns at pauses, and the
    windows alone place a change only to within half a hop). Pauses shorter than BRIDGE_SECONDS
    inside one speaker's talk belong to that speaker."""
    turns: list[Turn] = []
    for region_start, region_end in regions:
        inside = sorted(
            (0.5 * (start + end), label)
            for (start, end), label in zip(windows, labels)
            if start < region_end and end > region_start
        )
        if not inside:
            continue
        boundaries = [region_start]
        for (centre, label), (next_centre, next_label) in zip(inside, inside[1:]):
            boundary = 0.5 * (centre + next_centre)
            if label != next_label:
                low = max(region_start, centre - 0.5 * (next_centre - centre))
                high = min(region_end, next_centre + 0.5 * (next_centre - centre))
                pause = quietest(low, high)
                boundary = pause if pause is not None else boundary
            boundaries.append(min(max(boundary, boundaries[-1]), region_end))
        boundaries.append(region_end)
        for (_, label), start, end in zip(inside, boundaries, boundaries[1:]):
            if end <= start:
                continue
            if turns and turns[-1].speaker == label and start - turns[-1].end < BRIDGE_SECONDS:
                turns[-1] = replace(turns[-1], end=end)
            else:
                turns.append(Turn(start, end, label))
    return turns


def speaker_between(turns: list[Turn], start: float, end: float) -> int | None:
    """The speaker with the most speech in [start, end]; else the turn nearest to it."""
    if not turns:
        return None
    overlap: dict[int, float] = {}
    for turn in turns:
        shared = min(end, turn.end) - max(start, turn.start)
        if shared > 0:
            overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + shared
    if overlap:
        return max(overlap, key=lambda speaker: overlap[speaker])
    middle = 0.5 * (start + end)
    nearest = min(turns, key=lambda turn: min(abs(turn.start - middle), abs(turn.end - middle)))
    return nearest.speaker


def split_by_speaker(segments: list[Segment], turns: list[Turn]) -> list[tuple[Segment, int | None]]:
    """Each segment with its speaker; a segment whose words change speaker becomes one piece per run."""
    pieces: list[tuple[Segment, int | None]] = []
    for segment in segments:
        if not segment.words:
            pieces.append((segment, speaker_between(turns, segment.start, segment.end)))
            continue
        runs: list[tuple[int | None, list[Word]]] = []
        for word in segment.words:
            speaker = speaker_between(turns, word.start, word.end)
            if runs and runs[-1][0] == speaker:
                runs[-1][1].append(word)
            else:
                runs.append((speaker, [word]))
        if len(runs) == 1:
            pieces.append((segment, runs[0][0]))
            continue
        for index, (speaker, words) in enumerate(runs):
            start = segment.start if index == 0 else words[0].start
            end = segment.end if index == len(runs) - 1 else words[-1].end
            text = "".join(word.word for word in words)
            if index > 0 and not text.startswith(" ") and segment.text.startswith(" "):
                text = " " + text.lstrip()
            pieces.append((replace(segment, start=start, end=max(start, end), text=text, tokens=[], words=words), speaker))
    return pieces


def speaker_names(order: list[int], known: dict[int, str]) -> dict[int, str]:
    """Known speakers keep their names; the others are A, B, ... in order of first appearance."""
    names: dict[int, str] = {}
    letters = (letter_name(index) for index in range(10_000))
    taken = set(known.values())
    for speaker in order:
        if speaker in names:
            continue
        if speaker in known:
            names[speaker] = known[speaker]
            continue
        name = next(letters)
        while name in taken:
            name = next(letters)
        names[speaker] = name
    return names


def letter_name(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    name = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        name = chr(ord("A") + remainder) + name
    return name
