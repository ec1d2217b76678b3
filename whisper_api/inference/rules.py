"""What the decoder may emit next: suppression masks and OpenAI's timestamp rules, for a whole batch.

Everything here is built once per decoding call and applied on the device with a fixed, small
number of tensor operations per step: no Python loop over rows, no host round trip, no float64.
The rules are openai/whisper's `ApplyTimestampRules` (as transformers' Whisper processor has them):
- timestamps come in pairs, except directly before end-of-text;
- timestamps never decrease (and a pair's closing timestamp is not repeated as the next opening);
- the first token is a timestamp no later than `max_initial_timestamp`;
- where the total probability of the timestamps beats every single text token, a timestamp it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import LoadedModel

NEGATIVE_INFINITY = float("-inf")
MAX_INITIAL_TIMESTAMP_INDEX = 50  # 1.0 s: the first segment starts within a second of the chunk


@dataclass
class TimestampState:
    """Per row, on the device: the last two tokens and the last timestamp emitted."""

    last: torch.Tensor  # long (rows,)
    penultimate: torch.Tensor
    last_timestamp: torch.Tensor  # timestamp_begin - 1 where none yet

    def advance(self, chosen: torch.Tensor, timestamp_begin: int) -> "TimestampState":
        return TimestampState(
            chosen, self.last, torch.where(chosen >= timestamp_begin, chosen, self.last_timestamp)
        )

    def select(self, rows: torch.Tensor) -> "TimestampState":
        return TimestampState(
            self.last.index_select(0, rows), self.penultimate.index_select(0, rows),
            self.last_timestamp.index_select(0, rows),
        )


class DecodingRules:
    """Masks of one decoding call, on the device, over the model's vocabulary."""

    def __init__(self, model: LoadedModel, vocabulary_size: int, device: torch.device, dtype: torch.dtype) -> None:
        tokens = model.tokens
        self.timestamp_begin = tokens.timestamp_begin
        self.end_of_text = tokens.end_of_text
        self.device = device
        ids = torch.arange(vocabulary_size, device=device)
        self.ids = ids.unsqueeze(0)  # (1, vocabulary)
        self.text = self.ids < tokens.end_of_text  # ordinary text tokens
        self.before_timestamps = self.ids < tokens.timestamp_begin
        # never emitted: the configured non-speech tokens and every special token but end-of-text
        # (start of transcript, languages, tasks, no-speech, no-timestamps)
        suppressed = torch.zeros(vocabulary_size, dtype=torch.bool)
        suppressed[list(model.suppress_tokens)] = True
        suppressed[tokens.end_of_text + 1 : tokens.timestamp_begin] = True
        self.always_suppressed = suppressed.to(device).unsqueeze(0)
        first = suppressed.clone()
        first[: tokens.timestamp_begin] = True  # the first token is a timestamp...
        first[tokens.timestamp_begin + MAX_INITIAL_TIMESTAMP_INDEX + 1 :] = True  # ...within a second
        # (a blank or end-of-text as the first token, which Whisper's begin-suppression forbids,
        # is ruled out with every other non-timestamp)
        self.first_step_suppressed = first.to(device).unsqueeze(0)

    def initial_state(self, rows: int) -> TimestampState:
        none = torch.full((rows,), -1, dtype=torch.long, device=self.device)
        return TimestampState(none, none, torch.full_like(none, self.timestamp_begin - 1))

    def forbidden(self, step: int, state: TimestampState) -> torch.Tensor:
        """(rows, vocabulary) True where a token may not come next at `step` (0 = first sampled)."""
        if step == 0:
            return self.first_step_suppressed
        last_is_timestamp = (state.last >= self.timestamp_begin).unsqueeze(1)
        if step == 1:  # a single timestamp so far: its pair partner or text, never end-of-text
            penultimate_is_timestamp = True
        else:
            penultimate_is_timestamp = (state.penultimate >= self.timestamp_begin).unsqueeze(1)
        # the lowest timestamp allowed: the last one again to close an opened pair, else a later one
        opened = last_is_timestamp & ~penultimate_is_timestamp if step > 1 else torch.zeros_like(last_is_timestamp)
        floor = state.last_timestamp.unsqueeze(1) + 1 - opened.long()
        timestamp_forbidden = (self.ids < floor) | (last_is_timestamp & penultimate_is_timestamp)
        forbidden = torch.where(self.before_timestamps, opened & self.text, timestamp_forbidden)
        return forbidden | self.always_suppressed

    def timestamp_forced(self, logprobs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows whose timestamps together outweigh every text token, and the timestamps' total
        log probability (to renormalise the chosen timestamp's log probability)."""
        timestamp_total = logprobs[:, self.timestamp_begin :].logsumexp(dim=-1)
        best_text = logprobs[:, : self.timestamp_begin].amax(dim=-1)
        return timestamp_total > best_text, timestamp_total
