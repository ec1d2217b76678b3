"""What the decoder may emit next: suppression masks and OpenAI's timestamp rules, for a whole batch.

Everything here is built once per model and applied on the device with a fixed, small number of
tensor operations per step: no Python loop over rows, no host round trip, no float64. The rules
are openai/whisper's `ApplyTimestampRules` (as transformers' Whisper processor has them):
- timestamps come in pairs, except directly before end-of-text;
- timestamps never decrease (and a pair's closing timestamp is not repeated as the next opening);
- the first token is a timestamp no later than `max_initial_timestamp` (unless the row carries on
  its own earlier text: then it takes up the rules where that text left them);
- where the total probability of the timestamps beats every single text token, a timestamp it is.

A row's place in these rules is a small state machine (`START` ... `FINISHED`) and a floor (the
lowest timestamp still allowed). Both are advanced by table lookups indexed by (state, token), and
what a state forbids is one lookup compared with the floor, so a step costs six operations
whatever the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import LoadedModel

NEGATIVE_INFINITY = float("-inf")
MAX_INITIAL_TIMESTAMP_INDEX = 50  # 1.0 s: the first segment starts within a second of the chunk

# Where a row stands. START: nothing yet (as if a timestamp came just before, so the first
# timestamp opens the text). AFTER_TEXT: anything may follow. PAIR_CLOSED: a timestamp followed a
# timestamp: text or end-of-text next. PAIR_OPENED: a timestamp followed text: its closing
# timestamp (the same or later) or end-of-text next. FINISHED: only end-of-text again, at log
# probability 0. RESUMED: a row carrying on its own text just took up at a timestamp: text next
# (it resumes where speech is known to be untranscribed: a model that ended its text there
# would end it again).
START, AFTER_TEXT, PAIR_CLOSED, PAIR_OPENED, FINISHED, RESUMED = range(6)
STATES = 6
TEXT, TIMESTAMP, END_OF_TEXT = range(3)  # kinds of token
# state after each kind of token, per state
NEXT_STATE = {
    START: (AFTER_TEXT, PAIR_CLOSED, FINISHED),
    AFTER_TEXT: (AFTER_TEXT, PAIR_OPENED, FINISHED),
    PAIR_CLOSED: (AFTER_TEXT, PAIR_CLOSED, FINISHED),
    PAIR_OPENED: (AFTER_TEXT, PAIR_CLOSED, FINISHED),
    FINISHED: (FINISHED, FINISHED, FINISHED),
    RESUMED: (AFTER_TEXT, PAIR_CLOSED, FINISHED),
}
# after a timestamp in these states, the next one must be strictly later (openai: the last
# timestamp + 1, unless it opened a pair, which its closing timestamp may repeat)
LAST_WAS_TIMESTAMP = (START, PAIR_CLOSED, PAIR_OPENED, RESUMED)


@dataclass
class TimestampState:
    """Per row, on the device: where it stands in the rules, and the lowest timestamp allowed."""

    state: torch.Tensor  # long (rows,)
    floor: torch.Tensor  # int32 (rows, 1): timestamps below this token id are forbidden

    def copy_(self, other: "TimestampState") -> None:
        """Take `other`'s values in place (static buffers of a captured CUDA graph)."""
        self.state.copy_(other.state)
        self.floor.copy_(other.floor)

    def select(self, rows: torch.Tensor) -> "TimestampState":
        return TimestampState(self.state.index_select(0, rows), self.floor.index_select(0, rows))


class DecodingRules:
    """The rule tables of one loaded model, on its device, over its vocabulary."""

    def __init__(self, model: LoadedModel, vocabulary_size: int, device: torch.device) -> None:
        tokens = model.tokens
        self.timestamp_begin = tokens.timestamp_begin
        self.vocabulary_size = vocabulary_size
        self.device = device
        self.split_sizes = (tokens.timestamp_begin, vocabulary_size - tokens.timestamp_begin)
        ids = torch.arange(vocabulary_size)
        is_timestamp = ids >= tokens.timestamp_begin
        is_text = ids < tokens.end_of_text
        self.before_timestamps = (~is_timestamp).to(device).unsqueeze(0)
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
        self.end_of_text_forbidden = (ids == tokens.end_of_text).to(device).unsqueeze(0)
        only_end_of_text = ~(ids == tokens.end_of_text)
        forbidden_in = {
            START: suppressed, AFTER_TEXT: suppressed, PAIR_CLOSED: suppressed | is_timestamp,
            PAIR_OPENED: suppressed | is_text, FINISHED: only_end_of_text,
            RESUMED: suppressed | is_timestamp | (ids == tokens.end_of_text),
        }
        # (states, vocabulary): a token is forbidden where its entry is below the row's floor.
        # Forbidden outright: -1 (below any floor); allowed text: above any floor; allowed
        # timestamps: their own id (forbidden below the floor)
        never, always = -1, vocabulary_size + 1
        below_floor = torch.stack([
            torch.where(forbidden_in[state], never, torch.where(is_timestamp, ids, always)) for state in range(STATES)
        ])
        self.below_floor = below_floor.to(torch.int32).to(device)
        kind = torch.full((vocabulary_size,), TEXT)
        kind[is_timestamp] = TIMESTAMP
        kind[tokens.end_of_text] = END_OF_TEXT
        # flat over (state, token): index = state * vocabulary_size + token
        next_state = torch.stack([torch.tensor(NEXT_STATE[state])[kind] for state in range(STATES)])
        self.next_state = next_state.reshape(-1).to(device)
        floor_after = torch.stack([
            torch.where(is_timestamp, ids + int(state in LAST_WAS_TIMESTAMP), 0) for state in range(STATES)
        ])
        self.floor_after = floor_after.reshape(-1, 1).to(torch.int32).to(device)

    def initial_state(self, rows: int) -> TimestampState:
        return TimestampState(
            torch.full((rows,), START, dtype=torch.long, device=self.device),
            torch.full((rows, 1), self.timestamp_begin, dtype=torch.int32, device=self.device),
        )

    def opening(self, rows: int, resumed_at: int | None = None) -> tuple[TimestampState, torch.Tensor]:
        """The rows' state before their first sampled token, and what that token may not be. A
        row resumed at a timestamp (its prefix ends with its own closed text and that opening
        timestamp) goes on with text (RESUMED)."""
        if resumed_at is None:
            return self.initial_state(rows), self.first_step_suppressed
        state = self.resumed_state(rows, resumed_at)
        return state, self.forbidden(1, state)

    def resumed_state(self, rows: int, resumed_at: int) -> TimestampState:
        """The state of rows that take up their own text at timestamp token `resumed_at`."""
        return TimestampState(
            torch.full((rows,), RESUMED, dtype=torch.long, device=self.device),
            torch.full((rows, 1), resumed_at + 1, dtype=torch.int32, device=self.device),
        )

    def forbidden(self, step: int, state: TimestampState) -> torch.Tensor:
        """(rows, vocabulary) True where a token may not come next at `step` (0 = first sampled)."""
        if step == 0:
            return self.first_step_suppressed
        return self.below_floor.index_select(0, state.state) < state.floor

    def advance(self, state: TimestampState, chosen: torch.Tensor) -> TimestampState:
        """The rows' state after their `chosen` tokens."""
        flat = chosen.add(state.state, alpha=self.vocabulary_size)
        floor = torch.maximum(state.floor, self.floor_after.index_select(0, flat))
        return TimestampState(self.next_state.index_select(0, flat), floor)

    def timestamp_forced(self, logprobs: torch.Tensor) -> "TimestampWeight":
        """Per row, whether the timestamps together outweigh every text token (then a timestamp
        it must be), with what the choice of the next token needs from that comparison."""
        text, timestamps = logprobs.split(self.split_sizes, dim=-1)
        best_text, text_token = text.max(dim=-1)
        timestamp_total = timestamps.logsumexp(dim=-1)
        return TimestampWeight(timestamp_total > best_text, timestamp_total, best_text, text_token, timestamps)


@dataclass
class TimestampWeight:
    forced: torch.Tensor  # bool (rows,)
    timestamp_total: torch.Tensor  # (rows,): to renormalise a chosen timestamp's log probability
    best_text: torch.Tensor  # (rows,): the best text token's log probability...
    text_token: torch.Tensor  # ...and the token
    timestamps: torch.Tensor  # (rows, timestamps): the timestamps' log probabilities (a view)
