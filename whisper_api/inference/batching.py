"""Rows that join and leave a decoding batch between steps: the scheduler's continuous batching.

A `DecodingGroup` decodes the rows that can share a step: the same temperature, word-timestamp
setting and context length (`GroupKey`); their prefixes (language, task, prompt, a row's own
earlier text it carries on from), token limits and chunks may differ, and so may the step each
row is at: rows admitted later decode beside rows
admitted earlier, each at its own position. New rows are run through their prefix together and
joined to the batch between two steps; finished rows leave it (a quarter of the batch at a time,
or at once when another row waits for the place); a row may be parked, its cache rows set aside,
to give its place to another job's row, and rejoin later where it stopped.

Per row, the arithmetic is `Sampling`'s (decoder.py): the same prefill, rules, choice and
scores, so a row decodes the same tokens whatever shares its batch. Sampled rows draw their noise
from their own generator, so a row's text does not depend on its neighbours either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .repetition import loops_at_the_end
from .decoder import Decoded, Decoder, DecodingRequest, Sampling, _gumbel_noise
from .forward import Cache
from .rows import LOOP_CHECK_STEPS
from .rules import TimestampState


@dataclass(frozen=True)
class GroupKey:
    """What rows must share to decode in one step."""

    temperature: float
    word_timestamps: bool
    positions: int  # self-attention cache length: prefix + token limit
    min_new_tokens: int
    apart: Any = None  # a job decoded apart from the others (after a failure in a shared batch)

    @classmethod
    def of(cls, request: DecodingRequest, apart: Any = None) -> "GroupKey":
        return cls(request.temperature, request.word_timestamps, len(request.prefix) + request.max_new_tokens,
                   request.min_new_tokens, apart)


@dataclass(eq=False)
class RowWork:
    """One chunk to decode and its progress; `deliver` receives its result once it is done."""

    owner: Any  # the job (opaque here)
    encoded: torch.Tensor  # (1, frames, width)
    request: DecodingRequest
    frames: int  # mel frames of real audio (word times are aligned within them)
    generator: torch.Generator | None
    deliver: Callable[["RowWork", Decoded], None]
    tokens: list[int] = field(default_factory=list)
    steps: int = 0  # tokens chosen so far, end-of-text included
    finished: bool = False
    looped: bool = False
    sum_logprob: float | None = None
    no_speech: float = 0.0
    columns: list[tuple[torch.Tensor, int]] = field(default_factory=list)  # alignment weights, per token fed in
    delivered: bool = False

    def restart(self) -> None:
        """Back to no token decoded (its batch failed: it is decoded again from the start)."""
        self.tokens, self.steps, self.finished, self.looped = [], 0, False, False
        self.sum_logprob, self.columns, self.delivered = None, [], False


@dataclass
class Rows:
    """Rows' device state in batch order: cache, rule state, scores, last tokens, positions."""

    works: list[RowWork]
    cache: Cache
    state: TimestampState
    sum_logprobs: torch.Tensor  # (rows,) float32
    chosen: torch.Tensor  # (rows,) the last token chosen, fed in at the next step
    positions: list[int]  # where each row's next token goes

    def taken(self, indices: list[int]) -> "Rows":
        """Rows `indices` in a cache of their own (this one's is left as it is)."""
        rows = torch.tensor(indices, device=self.chosen.device)
        return self._selected(indices, rows, self.cache.taken(rows))

    def kept(self, indices: list[int]) -> "Rows":
        """Rows `indices` (ascending) only, the cache's kept in place (Cache.keep_rows)."""
        self.cache.keep_rows(indices)
        return self._selected(indices, torch.tensor(indices, device=self.chosen.device), self.cache)

    def _selected(self, indices: list[int], rows: torch.Tensor, cache: Cache) -> "Rows":
        return Rows([self.works[index] for index in indices], cache, self.state.select(rows),
                    self.sum_logprobs.index_select(0, rows), self.chosen.index_select(0, rows),
                    [self.positions[index] for index in indices])

    @classmethod
    def joined(cls, parts: list["Rows"]) -> "Rows":
        if len(parts) == 1:
            return parts[0]
        return cls(
            [work for part in parts for work in part.works],
            Cache.joined([part.cache for part in parts]),
            TimestampState(torch.cat([part.state.state for part in parts]),
                           torch.cat([part.state.floor for part in parts])),
            torch.cat([part.sum_logprobs for part in parts]),
            torch.cat([part.chosen for part in parts]),
            [position for part in parts for position in part.positions],
        )


class DecodingGroup:
    def __init__(self, decoder: Decoder, key: GroupKey) -> None:
        self.decoder = decoder
        self.key = key
        self.batch: Rows | None = None
        self._position: torch.Tensor | None = None  # on the device: one element when all rows agree
        self._choice = Sampling(decoder, DecodingRequest((), key.temperature), None)

    @property
    def works(self) -> list[RowWork]:
        return self.batch.works if self.batch is not None else []

    def __len__(self) -> int:
        return len(self.works)

    def live(self) -> list[RowWork]:
        return [work for work in self.works if not work.finished]

    # joining and leaving

    def prefilled(self, works: list[RowWork]) -> Rows:
        """New rows with the same prefix through it, and their first tokens chosen."""
        decoder, request = self.decoder, works[0].request
        rows = len(works)
        encoded = torch.cat([work.encoded for work in works]) if rows > 1 else works[0].encoded
        cache, logits, no_speech, carried_weights = decoder.prefill(encoded, request, rows)
        state, forbidden = decoder.rules.opening(rows, request.resumed_at)
        if request.min_new_tokens:
            forbidden = forbidden | decoder.rules.end_of_text_forbidden
        chosen, logprob = self.choose(logits, forbidden, works)
        state = decoder.rules.advance(state, chosen)
        for position, (work, probability) in enumerate(zip(works, no_speech.tolist())):
            work.no_speech = probability
            if carried_weights is not None:
                work.columns.append((carried_weights, position))
        part = Rows(list(works), cache, state, logprob.clone(), chosen, [len(request.prefix)] * rows)
        self.record(part, chosen.cpu().numpy(), None)
        return part

    def join(self, parts: list[Rows]) -> None:
        if not parts:
            return
        self.batch = Rows.joined(([self.batch] if self.batch is not None else []) + parts)
        self._position = None

    def keep(self, indices: list[int]) -> None:
        if self.batch is None:
            return
        if len(indices) == len(self.batch.works):
            return
        self.batch = self.batch.kept(indices) if indices else None
        self._position = None

    def carry_on(self, work: RowWork, carried: tuple[int, ...]) -> None:
        """`work`, whose text just ended, goes on in its place from `carried`: its own tokens up
        to a closing timestamp, then the timestamp it resumes at. The cache keeps those tokens'
        positions (what the row wrote after them is hidden, then overwritten), and the rules take
        up as after a resumed prefix: the same as a row prefilled with that prefix, without the
        prefill or the encoder keys and values made again."""
        batch, request = self.batch, work.request
        index = next(index for index, other in enumerate(batch.works) if other is work)
        written = (*request.carried_tokens, *work.tokens)
        kept = len(carried) - 1
        assert written[:kept] == carried[:kept], "a row carries on from its own text"
        start = len(request.prefix) - request.carried  # where the row's own tokens begin
        position = start + kept  # where the resuming timestamp is fed in
        limit = request.max_new_tokens + request.carried
        work.request = replace(request, prefix=(*request.prefix[:start], *carried), carried=len(carried),
                               max_new_tokens=limit - len(carried))
        work.tokens, work.steps, work.finished, work.looped = [], 0, False, False
        work.sum_logprob, work.columns = None, []
        cache = batch.cache
        cache.per_row_visibility()
        cache.visible[index, ..., position:] = float("-inf")
        batch.chosen[index] = carried[-1]
        batch.sum_logprobs[index] = 0.0
        resumed = self.decoder.rules.resumed_state(1, carried[-1])
        batch.state.state[index] = resumed.state[0]
        batch.state.floor[index] = resumed.floor[0]
        batch.positions[index] = position
        self._position = None

    def compact(self, force: bool = False) -> bool:
        """Finished rows leave (a quarter of the batch at a time, or any when `force`)."""
        finished = sum(work.finished for work in self.works)
        if not finished or (not force and finished < max(1, len(self.works) // 4)):
            return False
        self.keep([index for index, work in enumerate(self.works) if not work.finished])
        return True

    def park(self, works: list[RowWork]) -> Rows:
        """`works` leave the batch with their state, to rejoin later."""
        chosen = {id(work) for work in works}
        indices = [index for index, work in enumerate(self.works) if id(work) in chosen]
        parked = self.batch.taken(indices)
        self.keep([index for index, work in enumerate(self.works) if id(work) not in chosen])
        return parked

    def drop(self, owner: Any) -> list[RowWork]:
        """Rows of `owner` leave the batch for good (its job failed or was cancelled)."""
        dropped = [work for work in self.works if work.owner is owner]
        if dropped:
            self.keep([index for index, work in enumerate(self.works) if work.owner is not owner])
        return dropped

    # decoding

    def step(self) -> list[RowWork]:
        """One token for every row; returns the rows that finished in it."""
        batch, decoder, key = self.batch, self.decoder, self.key
        rules = decoder.rules
        if self._position is None:
            distinct = set(batch.positions)
            values = [batch.positions[0]] if len(distinct) == 1 else batch.positions
            self._position = torch.tensor(values, device=batch.chosen.device)
        heads = decoder.alignment_heads if key.word_timestamps else None
        logits, weights = decoder.forward.step(batch.chosen, self._position, batch.cache, heads,
                                               reach=max(batch.positions) + 1)
        self._position += 1
        batch.positions = [position + 1 for position in batch.positions]
        forbidden = rules.forbidden(1, batch.state)
        if key.min_new_tokens:
            short = torch.tensor([work.steps < key.min_new_tokens for work in batch.works], device=logits.device)
            forbidden = forbidden | (rules.end_of_text_forbidden & short.unsqueeze(1))
        chosen, logprob = self.choose(logits.float(), forbidden, batch.works)
        batch.sum_logprobs += logprob
        batch.state = rules.advance(batch.state, chosen)
        batch.chosen = chosen
        stacked = torch.cat([weights[layer] for layer in heads], dim=1) if heads else None
        return self.record(batch, chosen.cpu().numpy(), stacked)  # the one transfer of the step

    def choose(self, logits: torch.Tensor, forbidden: torch.Tensor, works: list[RowWork]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        noise = None
        if self.key.temperature > 0:
            noise = torch.cat([_gumbel_noise((1, logits.shape[1]), work.generator) for work in works])
        return self._choice.choose(logits, forbidden, noise)

    def record(self, batch: Rows, chosen: np.ndarray, weights: torch.Tensor | None) -> list[RowWork]:
        """The chosen tokens into each row's text; the rows that finished with them, scored."""
        decoder, key = self.decoder, self.key
        end_of_text, timestamp_begin = decoder.tokens.end_of_text, decoder.rules.timestamp_begin
        done: list[tuple[int, RowWork]] = []
        sums = None
        for position, work in enumerate(batch.works):
            if work.finished:
                continue
            if weights is not None:
                work.columns.append((weights, position))  # for the token fed in at this step
            step = work.steps
            work.steps += 1
            token = int(chosen[position])
            if token == end_of_text:
                work.finished = True
            else:
                work.tokens.append(token)
                if (step % LOOP_CHECK_STEPS == LOOP_CHECK_STEPS - 1 and not key.min_new_tokens
                        and loops_at_the_end([token for token in work.tokens if token < timestamp_begin])):
                    work.finished = work.looped = True
                if work.steps >= work.request.max_new_tokens:
                    work.finished = True
            if work.finished:
                done.append((position, work))
        if done:
            sums = batch.sum_logprobs.cpu().numpy()
        for position, work in done:
            if work.sum_logprob is None:
                work.sum_logprob = float(sums[position])
        return [work for _, work in done]

    def result(self, work: RowWork) -> Decoded:
        alignment = None
        if self.key.word_timestamps:
            if work.columns:
                alignment = torch.cat([weights[position] for weights, position in work.columns], dim=1).cpu().numpy()
            else:
                alignment = np.zeros((0, 0, 0), dtype=np.float32)
        work.columns = []
        return self.decoder.finish(work.request, work.tokens, work.sum_logprob or 0.0, work.no_speech, alignment,
                                   work.frames, work.looped)
