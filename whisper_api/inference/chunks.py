"""Speech regions -> chunks the model decodes one at a time: at most max_chunk_seconds each,
as few as the speech allows, as even as the pauses allow, cut at pauses.

Whisper encodes every chunk as a full 30 s window, so the number of chunks is what a clip's
encoding costs. A region is the VAD's speech between pauses of min_silence_ms or more, so read
speech, a lecture or a fast talker makes regions of a minute or more whose sentences are apart
by 0.1-0.5 s: those shorter pauses (quiet frames inside a region) are places to cut too, so
chunks fill their windows across region boundaries (a 10-minute lecture: 21 windows, not 26).
Among the plans with the fewest chunks the one whose longest chunk is shortest wins (to the
second), then the one whose shortest cut pause is longest, then the one with the most pause at
its cuts; a pause inside a region counts for less than any pause between regions. A stretch
with no pause at all longer than a chunk is cut inside speech into pieces of even length, each
cut at the least speech-like frame within CUT_WINDOW_SECONDS around its even place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .vad import FRAME_SECONDS, OFFSET_HYSTERESIS, SpeechRegion, VadOptions

# Added around a chunk's speech (its regions are padded already): the model hears a little
# room before the first word and after the last, as it would in a 30 s window of a recording.
CHUNK_PAD_SECONDS = 0.2
# Where a region too long for one chunk is cut: the quietest frame in a window this long around
# the even cut. Read Japanese breathes every 2-4 s, so 4 s nearly always holds a pause between
# phrases.
CUT_WINDOW_SECONDS = 4.0
# Plans whose longest chunks differ by less than this are as even as each other: the pauses decide.
EVEN_ENOUGH_SECONDS = 1.0
# A pause inside a region is a place to cut when this many frames in a row are below the VAD's
# offset threshold (about 0.1 s: the gap between two phrases, not the dip inside a word).
INNER_PAUSE_FRAMES = 3


@dataclass(frozen=True)
class Chunk:
    """Audio from start to end (seconds in the clip) holding the given speech regions."""

    start: float
    end: float
    regions: tuple[SpeechRegion, ...]

    @property
    def duration(self) -> float:
        return self.end - self.start


def plan_chunks(
    regions: list[SpeechRegion], probabilities: np.ndarray, duration: float, options: VadOptions
) -> list[Chunk]:
    """Chunks in order, not overlapping, inside [0, duration], each at most
    options.max_chunk_seconds long, together holding every region."""
    limit = options.max_chunk_seconds - 2 * CHUNK_PAD_SECONDS
    quiet = max(options.threshold - OFFSET_HYSTERESIS, 0.01)
    # A cut's pause is measured as between regions: the silence less both regions' padding. An
    # inner pause is shorter than min_silence_ms, so it ranks below every pause between regions,
    # and a cut inside speech (no silence at all) below every inner pause.
    padding = 2 * options.speech_pad_ms / 1000
    pieces: list[SpeechRegion] = []
    pauses: list[float] = []  # pauses[i - 1]: the pause between pieces[i - 1] and pieces[i]
    for region in regions:
        for part_index, (inner_pause, part) in enumerate(split_at_inner_pauses(region, probabilities, quiet)):
            for piece_index, piece in enumerate(split_long_region(part, probabilities, limit)):
                if not pieces:  # the first piece: no cut before it
                    pass
                elif piece_index:
                    pauses.append(-padding)
                elif part_index:
                    pauses.append(inner_pause - padding)
                else:
                    pauses.append(piece.start - pieces[-1].end)
                pieces.append(piece)
    if not pieces:
        return []
    groups = _fewest_groups(pieces, pauses, limit)
    chunks: list[Chunk] = []
    for index, group in enumerate(groups):
        first, last = group[0], group[-1]
        previous_end = groups[index - 1][-1].end if index else None
        next_start = groups[index + 1][0].start if index + 1 < len(groups) else None
        start = first.start - CHUNK_PAD_SECONDS
        start = max(start, 0.0 if previous_end is None else (previous_end + first.start) / 2)
        end = last.end + CHUNK_PAD_SECONDS
        end = min(end, duration if next_start is None else (last.end + next_start) / 2)
        chunks.append(Chunk(round(max(start, 0.0), 3), round(min(end, duration), 3), tuple(group)))
    return chunks


def split_at_inner_pauses(region: SpeechRegion, probabilities: np.ndarray, quiet: float
                          ) -> list[tuple[float, SpeechRegion]]:
    """The region cut in the middle of every run of INNER_PAUSE_FRAMES or more frames below
    `quiet` inside it, as (seconds of the pause before the part, part); the first part's pause
    is 0."""
    first = int(np.ceil(region.start / FRAME_SECONDS))
    last = min(int(region.end / FRAME_SECONDS), len(probabilities))
    if last - first <= INNER_PAUSE_FRAMES:
        return [(0.0, region)]
    below = np.concatenate(([False], probabilities[first:last] < quiet, [False]))
    edges = np.flatnonzero(below[1:] != below[:-1])  # run starts and ends, alternating
    parts: list[tuple[float, SpeechRegion]] = []
    start, pause = region.start, 0.0
    for run_start, run_end in zip(edges[::2], edges[1::2]):
        if run_end - run_start < INNER_PAUSE_FRAMES or run_start == 0 or run_end == last - first:
            continue  # too short, or the region's own padded edge
        cut = round(float(first + (run_start + run_end) / 2) * FRAME_SECONDS, 3)
        if region.start < cut < region.end:
            parts.append((pause, SpeechRegion(start, cut)))
            start, pause = cut, float(run_end - run_start) * FRAME_SECONDS
    parts.append((pause, SpeechRegion(start, region.end)))
    return parts


def split_long_region(region: SpeechRegion, probabilities: np.ndarray, limit: float) -> list[SpeechRegion]:
    """The region itself, or as few pieces of at most `limit` seconds as it needs, of about even
    length: each cut at the frame with the lowest speech probability within CUT_WINDOW_SECONDS
    around the even place for it (never so early that the rest would not fit in the pieces left)."""
    pieces: list[SpeechRegion] = []
    start = region.start
    count = int(np.ceil((region.end - start) / limit - 1e-9))
    while count > 1:
        even = start + (region.end - start) / count
        window_start = max(even - CUT_WINDOW_SECONDS / 2, region.end - (count - 1) * limit, start)
        window_end = min(even + CUT_WINDOW_SECONDS / 2, start + limit)
        first_frame = int(np.ceil(window_start / FRAME_SECONDS))
        last_frame = min(int(window_end / FRAME_SECONDS), len(probabilities))
        if last_frame > first_frame:
            quietest = first_frame + int(np.argmin(probabilities[first_frame:last_frame]))
            cut = min(max((quietest + 0.5) * FRAME_SECONDS, window_start), window_end)
        else:  # no probabilities for this stretch: cut at the even place
            cut = even
        cut = round(cut, 3)
        pieces.append(SpeechRegion(start, cut))
        start = cut
        count -= 1
    pieces.append(SpeechRegion(start, region.end))
    return pieces


def _fewest_groups(pieces: list[SpeechRegion], pauses: list[float], limit: float) -> list[list[SpeechRegion]]:
    """Consecutive pieces grouped so that each group spans at most `limit` seconds: fewest
    groups, then the shortest longest group (in whole EVEN_ENOUGH_SECONDS), then the longest
    shortest cut pause, then the most pause at the cuts (a dynamic programme over where each
    group starts; a group reaches back at most `limit` seconds). pauses[i - 1] is the pause a
    cut before pieces[i] is at."""
    count = len(pieces)
    # best[j]: the best plan for pieces[:j] as
    # (groups, longest group in whole units, -shortest cut pause, -total cut pause)
    Plan = tuple[int, int, float, float]
    best: list[Plan] = [(0, 0, -float("inf"), 0.0)] + [(count + 1, 0, 0.0, 0.0)] * count
    start_of_last: list[int] = [0] * (count + 1)
    for end in range(1, count + 1):
        for first in range(end - 1, -1, -1):
            span = pieces[end - 1].end - pieces[first].start
            if span > limit + 0.001:
                break
            groups, longest, negative_shortest, negative_total = best[first]
            longest = max(longest, int(span // EVEN_ENOUGH_SECONDS))
            if first:
                pause = pauses[first - 1]
                candidate = (groups + 1, longest, max(negative_shortest, -pause), negative_total - pause)
            else:
                candidate = (1, longest, -float("inf"), 0.0)
            if candidate < best[end]:
                best[end], start_of_last[end] = candidate, first
    groups: list[list[SpeechRegion]] = []
    end = count
    while end:
        first = start_of_last[end]
        groups.append(pieces[first:end])
        end = first
    return groups[::-1]
