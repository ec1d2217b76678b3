"""The rows of one decoding call on the host: what each has produced, which are still decoding,
and which have left the batch.

A row that has finished only repeats end-of-text; once a quarter of the batch (at least one row)
has, the finished rows leave it: their cache rows are dropped, so every later step reads the
encoder keys and values of the rows still decoding only (on a CPU, and on an integrated GPU, a
step's time is the memory it reads). A row whose text has locked into a loop that already fails
the compression check is stopped there (every LOOP_CHECK_STEPS steps): left alone it would repeat
itself to the token limit and keep the whole batch decoding, only to fail that check at the end.
A repeated phrase that still passes the check ("Go! Go! Go! Go! Go!") is speech: it decodes on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..repetition import loops_at_the_end

LOOP_CHECK_STEPS = 16


class LiveRows:
    def __init__(self, rows: int, end_of_text: int, timestamp_begin: int) -> None:
        self.end_of_text = end_of_text
        self.timestamp_begin = timestamp_begin
        self.in_batch = np.arange(rows)  # batch position -> row
        self.finished = np.zeros(rows, dtype=bool)  # per batch position
        self.tokens: list[list[int]] = [[] for _ in range(rows)]  # per row, end-of-text excluded
        self.looped = [False] * rows
        self.sums: list[float | None] = [None] * rows  # per row, once it is done
        self.weights: list[tuple[np.ndarray, torch.Tensor]] = []  # (rows in the batch, alignment weights)

    def record(self, chosen: np.ndarray) -> None:
        for position in np.flatnonzero(~self.finished):
            token = int(chosen[position])
            if token == self.end_of_text:
                self.finished[position] = True
            else:
                self.tokens[self.in_batch[position]].append(token)

    def record_weights(self, weights: torch.Tensor) -> None:
        """(rows in the batch, alignment heads, 1, frames) for the token just fed in."""
        self.weights.append((self.in_batch, weights))

    def stop_loops(self, sum_logprobs: Callable[[], np.ndarray], fails_compression: Callable[[list[int]], bool]
                   ) -> None:
        """Stops the rows whose text ends in a loop and already fails the compression check
        (`fails_compression(tokens)`), keeping their score so far."""
        sums = None
        for position in np.flatnonzero(~self.finished):
            row = self.in_batch[position]
            if (loops_at_the_end([token for token in self.tokens[row] if token < self.timestamp_begin])
                    and fails_compression(self.tokens[row])):
                sums = sum_logprobs() if sums is None else sums
                self.finished[position] = True
                self.looped[row] = True
                self.sums[row] = float(sums[position])

    def all_finished(self) -> bool:
        return bool(self.finished.all())

    def worth_compacting(self) -> bool:
        return int(self.finished.sum()) >= max(1, len(self.in_batch) // 4)

    def compact(self, sum_logprobs: np.ndarray) -> np.ndarray:
        """Drops the finished rows (keeping their scores): the batch positions that stay."""
        self._take_sums(sum_logprobs, np.flatnonzero(self.finished))
        keep = np.flatnonzero(~self.finished)
        self.in_batch = self.in_batch[keep]
        self.finished = self.finished[keep]
        return keep

    def finish_sums(self, sum_logprobs: np.ndarray) -> None:
        self._take_sums(sum_logprobs, range(len(self.in_batch)))

    def _take_sums(self, sum_logprobs: np.ndarray, positions) -> None:
        for position in positions:
            row = self.in_batch[position]
            if self.sums[row] is None:  # a stopped row keeps the score it had when it stopped
                self.sums[row] = float(sum_logprobs[position])

    def alignment_of(self, row: int) -> np.ndarray:
        """(alignment heads, steps, frames) on the host for `row`, in the model's head order."""
        columns = [weights[int(np.flatnonzero(in_batch == row)[0])]
                   for in_batch, weights in self.weights if (in_batch == row).any()]
        if not columns:
            return np.zeros((0, 0, 0), dtype=np.float32)
        return torch.cat(columns, dim=1).cpu().numpy()
