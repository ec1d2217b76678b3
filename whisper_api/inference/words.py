"""Token times from the alignment heads' cross-attention: normalise, smooth, dynamic time warping.

The same steps as openai/whisper's `find_alignment` and transformers' token timestamps, on the
host in float32 numpy. The warping runs along anti-diagonals, so it is a few hundred numpy calls
per chunk rather than a Python loop over every (token, frame) cell.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .model import INPUT_STRIDE, TIME_PRECISION

MEDIAN_FILTER_WIDTH = 7


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
