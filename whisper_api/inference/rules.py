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


# What may follow, per row: anything; text or end-of-text (a pair just closed, or the first
# timestamp opened the text); a timestamp or end-of-text (text just ended: close it); only
# end-of-text again (the row has finished: its log probability is then 0)
ANYTHING, NO_TIMESTAMP, NO_TEXT, FINISHED = 0, 1, 2, 3


@dataclass
class TimestampState:
    """Per row, on the device: what may follow, and the lowest timestamp allowed."""

    mode: torch.Tensor  # long (rows,): ANYTHING, NO_TIMESTAMP or NO_TEXT
    floor: torch.Tensor  # long (rows,): timestamps below this token are forbidden
    last_was_timestamp: torch.Tensor  # long (rows,): 1 where the last token was a timestamp

    def advance(self, chosen: torch.Tensor, timestamp_begin: int, end_of_text: int) -> "TimestampState":
        """After `chosen`: a timestamp after a timestamp closes a pair (text next, later
        timestamps only); a timestamp after text opens one (only its closing timestamp, the same
        or later, or end-of-text next); text leaves anything possible."""
        is_timestamp = (chosen >= timestamp_begin).long()
        mode = is_timestamp * (2 - self.last_was_timestamp) + (chosen == end_of_text) * FINISHED
        # a closing timestamp may repeat the opening one; after a closed pair, strictly later
        floor = torch.maximum(self.floor, (chosen + self.last_was_timestamp) * is_timestamp)
        return TimestampState(mode, floor, is_timestamp)

    def copy_(self, other: "TimestampState") -> None:
        """Take `other`'s values in place (static buffers of a captured CUDA graph)."""
        self.mode.copy_(other.mode)
        self.floor.copy_(other.floor)
        self.last_was_timestamp.copy_(other.last_was_timestamp)

    def select(self, rows: torch.Tensor) -> "TimestampState":
        return TimestampState(
            self.mode.index_select(0, rows), self.floor.index_select(0, rows),
            self.last_was_timestamp.index_select(0, rows),
        )


class DecodingRules:
    """Masks of one decoding call, on the device, over the model's vocabulary."""

    def __init__(self, model: LoadedModel, vocabulary_size: int, device: torch.device) -> None:
        tokens = model.tokens
        self.timestamp_begin = tokens.timestamp_begin
        self.device = device
        self.before_timestamps = (torch.arange(vocabulary_size) < tokens.timestamp_begin).to(device).unsqueeze(0)
        # never emitted: the configured non-speech tokens and every special token but end-of-text
        # (start of transcript, languages, tasks, no-speech, no-timestamps)
        suppressed = torch.zeros(vocabulary_size, dtype=torch.bool)
        suppressed[list(model.suppress_tokens)] = True
        suppressed[tokens.end_of_text + 1 : tokens.timestamp_begin] = True
        first = suppressed.clone()
        first[: tokens.timestamp_begin] = True  # the first token is a timestamp...
        first[tokens.timestamp_begin + MAX_INITIAL_TIMESTAMP_INDEX + 1 :] = True  # ...within a second
        # (a blank or end-of-text as the first token, which Whisper's begin-suppression forbids,
        # is ruled out with every other non-timestamp)
        self.first_step_suppressed = first.to(device).unsqueeze(0)
        is_timestamp = torch.arange(vocabulary_size) >= tokens.timestamp_begin
        is_text = torch.arange(vocabulary_size) < tokens.end_of_text
        only_end_of_text = torch.ones(vocabulary_size, dtype=torch.bool)
        only_end_of_text[tokens.end_of_text] = False
        self.end_of_text_forbidden = (torch.arange(vocabulary_size) == tokens.end_of_text).to(device).unsqueeze(0)
        by_mode = torch.stack([suppressed, suppressed | is_timestamp, suppressed | is_text, only_end_of_text])
        self.by_mode = by_mode.to(device)  # (modes, vocabulary): forbidden in each mode
        # token ids where they are timestamps, beyond every floor elsewhere: `< floor` picks the
        # timestamps below a row's floor and nothing else
        self.timestamp_ids = torch.where(is_timestamp, torch.arange(vocabulary_size), vocabulary_size + 1).to(device).unsqueeze(0)

    def initial_state(self, rows: int) -> TimestampState:
        # before the first token, as if a timestamp came just before: the first one opens the text
        ones = torch.ones(rows, dtype=torch.long, device=self.device)
        return TimestampState(ones * ANYTHING, ones * self.timestamp_begin, ones)

    def forbidden(self, step: int, state: TimestampState) -> torch.Tensor:
        """(rows, vocabulary) True where a token may not come next at `step` (0 = first sampled)."""
        if step == 0:
            return self.first_step_suppressed
        return self.by_mode.index_select(0, state.mode) | (self.timestamp_ids < state.floor.unsqueeze(1))

    def timestamp_forced(self, logprobs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows whose timestamps together outweigh every text token, and the timestamps' total
        log probability (to renormalise the chosen timestamp's log probability)."""
        timestamp_total = logprobs[:, self.timestamp_begin :].logsumexp(dim=-1)
        best_text = logprobs[:, : self.timestamp_begin].amax(dim=-1)
        return timestamp_total > best_text, timestamp_total
