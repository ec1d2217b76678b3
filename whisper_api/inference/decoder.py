"""The decoding loop: a batch of encoded chunks -> tokens, scores and token times.

One call decodes every row with the same prefix (previous-text context, start of transcript,
language, task) at one temperature: greedy at 0, sampling above it, beam search where asked. Per
step, every rule is applied to the whole batch on the device and one small tensor (the chosen
tokens) comes back to the host. Sampling is Gumbel-max (noise drawn on the host from the job's
own generator, so a request always gets the same answer), beam hypotheses are reordered with
`index_select`: nothing DirectML runs on the CPU or cannot run (no `multinomial`,
`repeat_interleave`, float64). Scores follow openai/whisper: the log probability of each chosen
token from the logits after the rules, averaged over the tokens plus end-of-text.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

import numpy as np
import torch

from ..cancellation import Cancellation, raise_if_cancelled
from .forward import Cache, TextDecoder
from .model import LoadedModel
from .quantization import INT8_ENCODER_KEYS_DTYPE
from .rules import DecodingRules, NEGATIVE_INFINITY, TimestampState
from .rows import LOOP_CHECK_STEPS, LiveRows
from .timing import token_times

T = TypeVar("T")

MAX_NEW_TOKENS = 224  # half the decoder's context, as openai/whisper
MAX_CAPTURED_BATCH_SIZES = 2


@dataclass(frozen=True)
class DecodingRequest:
    prefix: tuple[int, ...]  # [<|startofprev|> context...] <|startoftranscript|> language task
    temperature: float = 0.0
    beam_size: int = 1
    word_timestamps: bool = False
    max_new_tokens: int = MAX_NEW_TOKENS
    min_new_tokens: int = 0  # benchmarks only: end-of-text is forbidden before this many tokens
    # a row whose text loops is stopped early once it fails this check (it would fail it anyway)
    compression_ratio_threshold: float = 2.4
    # checked before every step: a cancelled job leaves the model within one step
    cancellation: Cancellation | None = field(default=None, compare=False)
    # A row carrying on its own earlier text in the same window: the prefix ends with that text
    # (closed by a timestamp) and the timestamp it resumes at, `carried` tokens in all. They are
    # the result's first tokens, aligned with the rest for word times; the rules take up after them.
    carried: int = 0
    # Where the scheduler decodes the row: asked when its text ends whether it goes on in its
    # place in the batch (ContinuesInPlace). Not part of what rows share.
    continuation: "ContinuesInPlace | None" = field(default=None, compare=False)

    @property
    def carried_tokens(self) -> tuple[int, ...]:
        return self.prefix[len(self.prefix) - self.carried :]

    @property
    def resumed_at(self) -> int | None:
        """The timestamp token a carrying row resumes at (the prefix's last token)."""
        return self.prefix[-1] if self.carried else None


class ContinuesInPlace(Protocol):
    """A row's own rule for going on past the end of its text (coverage.py has the one used)."""

    def after(self, result: "Decoded") -> "tuple[int, ...] | Decoded":
        """Given the row's result so far: the tokens it carries on from (a prefix of its tokens,
        closed by a timestamp, then the timestamp it resumes at: the row goes on decoding from
        there, in its place, its cache kept), or the result the row ends with."""


@dataclass(frozen=True)
class Decoded:
    tokens: list[int]  # generated tokens, end-of-text excluded
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float
    token_spans: list[tuple[float, float]] | None = None  # per token, seconds from the chunk's start
    looped: bool = False  # stopped early: the text ended in a loop (it fails the checks like one)


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


class Decoder:
    """Decodes batches of encoded chunks with one loaded model; not thread-safe (the engine's
    scheduler is the one caller while requests run)."""

    def __init__(self, model: LoadedModel, cuda_graphs: bool = True) -> None:
        self.model = model
        # greedy steps replayed as CUDA graphs on CUDA (one launch a step instead of ~140)
        self.cuda_graphs = cuda_graphs and model.device.type == "cuda"
        self._graphs: dict[int, GraphedSteps] = {}
        self.forward = TextDecoder(model.model, model.attention,
                                   INT8_ENCODER_KEYS_DTYPE if model.int8_weights else None)
        self.vocabulary_size = self.forward.token_embedding.shape[0]
        self.rules = DecodingRules(model, self.vocabulary_size, model.device)
        self.tokens = model.tokens
        self.zero = torch.zeros((), device=model.device)
        heads_by_layer: dict[int, list[int]] = {}
        for layer, head in model.alignment_heads:
            heads_by_layer.setdefault(layer, []).append(head)
        self.alignment_heads = {
            layer: torch.tensor(heads, device=model.device) for layer, heads in sorted(heads_by_layer.items())
        }

    def graphed_steps(self, rows: int) -> "GraphedSteps":
        """The captured steps for `rows` rows; the two most recently used batch sizes are kept
        (each holds a cache of the decoder's whole context: on large models, gigabytes)."""
        graphed = self._graphs.pop(rows, None)
        if graphed is None:
            while len(self._graphs) >= MAX_CAPTURED_BATCH_SIZES:
                del self._graphs[next(iter(self._graphs))]
            graphed = GraphedSteps(self, rows)
        self._graphs[rows] = graphed  # most recent last
        return graphed

    def exclusive(self, function: Callable[[], T]) -> T:
        """`function`'s model work, with the model to itself (the scheduler's decoder runs it on
        the model thread, between two of its calls)."""
        return function()

    def encode_audio(self, pieces: list[np.ndarray]) -> torch.Tensor:
        """Encoder states (pieces, 1500, width) of up to 30 s of audio each."""
        return self.model.encode(self.model.log_mel(pieces))

    def language_probabilities(self, encoded: torch.Tensor) -> torch.Tensor:
        """(rows, languages) probabilities over the language tokens (in `tokens.languages` order)
        from one step on <|startoftranscript|> alone."""
        cache = self.forward.new_cache(encoded, 1)
        start = torch.full((encoded.shape[0], 1), self.tokens.start_of_transcript, device=self.model.device)
        hidden, _ = self.forward.prefill(start, cache)
        logits = self.forward.logits(hidden[:, -1]).float()
        language_ids = torch.tensor(list(self.tokens.languages.values()), device=self.model.device)
        return logits.index_select(1, language_ids).softmax(dim=-1).cpu()

    @torch.no_grad()
    def decode(self, encoded: torch.Tensor, request: DecodingRequest, frames: list[int],
               generator: torch.Generator | None = None) -> list[Decoded]:
        """Decode each row of `encoded` (rows, 1500, width); `frames` are each chunk's mel frames of
        real audio (word times are aligned within them)."""
        if request.beam_size > 1 and request.temperature == 0:
            return BeamSearch(self, request).run(encoded, frames)
        return Sampling(self, request, generator).run(encoded, frames)

    def decode_rows(self, encoded: torch.Tensor, requests: list[DecodingRequest], frames: list[int],
                    generator: torch.Generator | None = None) -> list[Decoded]:
        """Each row with its own request (rows carrying on their own text have prefixes of their
        own): here rows of the same request decode together; the scheduler mixes them all."""
        by_request: dict[DecodingRequest, list[int]] = {}
        for row, request in enumerate(requests):
            by_request.setdefault(request, []).append(row)
        results: list[Decoded | None] = [None] * len(requests)
        for request, rows in by_request.items():
            taken = encoded.index_select(0, torch.tensor(rows, device=encoded.device))
            decoded = Decoder.decode(self, taken, request, [frames[row] for row in rows], generator)  # not a subclass's
            for row, result in zip(rows, decoded):
                results[row] = result
        return results

    def submit_rows(self, encoded: torch.Tensor, requests: list[DecodingRequest], frames: list[int],
                    generator: torch.Generator | None = None) -> Callable[[], list[Decoded]]:
        """`decode_rows`, its results collected by calling the returned function. Here they are
        decoded at once; the scheduler decodes them while the caller goes on."""
        if len(set(requests)) == 1:
            results = self.decode(encoded, requests[0], frames, generator)
        else:
            results = self.decode_rows(encoded, requests, frames, generator)
        return lambda: results

    def prefill(self, encoded: torch.Tensor, request: DecodingRequest, rows: int, cache: Cache | None = None
                ) -> tuple[Cache, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The prefix through the decoder: the cache, the last position's logits, the no-speech
        probabilities (from <|startoftranscript|>'s position) and, with word timestamps, the
        alignment heads' weights (rows, heads, carried, frames) over the row's carried text. The
        rest of the prefix has none: word times leave it out, as transformers and openai/whisper do."""
        if cache is None:
            cache = self.forward.new_cache(encoded, len(request.prefix) + request.max_new_tokens)
        prefix = torch.tensor([list(request.prefix)] * rows, device=self.model.device)
        heads = self.alignment_heads if request.word_timestamps and request.carried else None
        hidden, weights = self.forward.prefill(prefix, cache, heads)
        carried_weights = None
        if heads:
            stacked = torch.cat([weights[layer] for layer in heads], dim=1)
            carried_weights = stacked[:, :, len(request.prefix) - request.carried :]
        # the context before it holds text and timestamp tokens only: the one <|startoftranscript|>
        sot = request.prefix.index(self.tokens.start_of_transcript)
        logits = self.forward.logits(torch.cat([hidden[:, -1], hidden[:, sot]])).float()
        # contiguous before the copy: torch-directml failed copying a sliced tensor to the host
        # ("bytes_count must be less or equal to src size", DirectML issue 348)
        no_speech = logits[rows:].softmax(dim=-1)[:, self.tokens.no_speech].contiguous().cpu()
        return cache, logits[:rows], no_speech, carried_weights

    def align(self, encoded: torch.Tensor, request: DecodingRequest, results: list[Decoded], frames: list[int]
              ) -> list[Decoded]:
        """Token times for results decoded without gathering attention (beam search): the prefix
        and tokens again through the decoder, teacher-forced, reading the alignment heads."""
        aligned = []
        context = request.prefix[: len(request.prefix) - request.carried]  # results hold the carried text
        for row, result in enumerate(results):
            tokens = torch.tensor([[*context, *result.tokens]], device=self.model.device)
            cache = self.forward.new_cache(encoded[row : row + 1], tokens.shape[1])
            _, weights = self.forward.prefill(tokens, cache, self.alignment_heads)
            stacked = torch.cat([weights[layer] for layer in self.alignment_heads], dim=1)[0]
            matrix = stacked[:, len(context) :].contiguous().cpu().numpy()
            aligned.append(replace(result, token_spans=token_times(matrix, frames[row], len(result.tokens))))
        return aligned

    def compression_check(self, threshold: float):
        """Whether tokens decode to text more repetitive than `threshold` (openai's check)."""
        return lambda tokens: compression_ratio(self.model.decode_text(tokens)) > threshold

    def finish(self, request: DecodingRequest, tokens: list[int], sum_logprob: float, no_speech: float,
               alignment: np.ndarray | None, frames: int, looped: bool = False) -> Decoded:
        """The row's result: its carried text and its new tokens (`alignment` covers both), scored
        and checked for repetition on the new tokens alone (the carried text passed before)."""
        new = len(tokens)
        text = self.model.decode_text(tokens)
        tokens = [*request.carried_tokens, *tokens]
        spans = None
        if alignment is not None:
            spans = token_times(alignment[:, : len(tokens)], frames, len(tokens))
        return Decoded(
            tokens=tokens,
            avg_logprob=sum_logprob / (new + 1),
            no_speech_prob=no_speech,
            temperature=request.temperature,
            compression_ratio=compression_ratio(text),
            token_spans=spans,
            looped=looped,
        )


def _gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    """-log(-log(U)) on the host: argmax(logits / T + noise) samples softmax(logits / T)."""
    uniform = torch.rand(shape, generator=generator).clamp_(min=1e-20, max=1.0 - 1e-7)
    return -torch.log(-torch.log(uniform))


class Sampling:
    """Greedy (temperature 0) or sampled decoding of every row at once."""

    def __init__(self, decoder: Decoder, request: DecodingRequest, generator: torch.Generator | None) -> None:
        self.decoder = decoder
        self.request = request
        self.generator = generator

    def run(self, encoded: torch.Tensor, frames: list[int]) -> list[Decoded]:
        decoder, request = self.decoder, self.request
        rules, device = decoder.rules, decoder.model.device
        end_of_text = decoder.tokens.end_of_text
        rows = encoded.shape[0]
        graphed = None
        if decoder.cuda_graphs and request.temperature == 0 and not request.word_timestamps:
            graphed = decoder.graphed_steps(rows)
        cache = graphed.prepare(encoded) if graphed else None
        cache, logits, no_speech, carried_weights = decoder.prefill(encoded, request, rows, cache)
        state, opening = rules.opening(rows, request.resumed_at)
        sum_logprobs = torch.zeros(rows, dtype=torch.float32, device=device)
        position = torch.tensor([len(request.prefix)], device=device)
        heads = decoder.alignment_heads if request.word_timestamps else None
        live = LiveRows(rows, end_of_text, rules.timestamp_begin)
        if carried_weights is not None:
            live.record_weights(carried_weights)
        for step in range(request.max_new_tokens):
            raise_if_cancelled(request.cancellation)
            forbid_end_of_text = step < request.min_new_tokens
            if step == 0:
                forbidden = opening
                if forbid_end_of_text:
                    forbidden = forbidden | rules.end_of_text_forbidden
                chosen, logprob = self.choose(logits, forbidden)
                sum_logprobs += logprob
                state = rules.advance(state, chosen)
                if graphed:
                    graphed.load(chosen, len(request.prefix), state, sum_logprobs)
            elif graphed:
                # the next step is launched before this one's tokens are read, so the GPU does not
                # wait for the host; not before a loop check, which reads the sums of this step
                loop_check = step % LOOP_CHECK_STEPS == LOOP_CHECK_STEPS - 1 and not request.min_new_tokens
                ahead = step + 1 < request.max_new_tokens and not loop_check
                chosen = graphed.step_tokens(forbid_end_of_text, step + 1 < request.min_new_tokens, ahead)
            else:
                extra = rules.end_of_text_forbidden if forbid_end_of_text else None
                chosen, state, weights = self.one_step(chosen, position, cache, state, sum_logprobs, extra, heads,
                                                       reach=len(request.prefix) + step)
                if heads:
                    live.record_weights(torch.cat([weights[layer] for layer in heads], dim=1))
            live.record(chosen if isinstance(chosen, np.ndarray) else chosen.cpu().numpy())  # the step's one transfer
            # (not when a benchmark forces the length: a random-weight model loops at will)
            if step % LOOP_CHECK_STEPS == LOOP_CHECK_STEPS - 1 and not request.min_new_tokens:
                live.stop_loops(lambda: (graphed.sum_logprobs if graphed else sum_logprobs).cpu().numpy(),
                                decoder.compression_check(request.compression_ratio_threshold))
            if live.all_finished():
                break
            if graphed is None and live.worth_compacting():
                keep = live.compact(sum_logprobs.cpu().numpy())
                rows_kept = torch.from_numpy(keep).to(device)
                cache.select(rows_kept)
                state = state.select(rows_kept)
                sum_logprobs = sum_logprobs.index_select(0, rows_kept)
                chosen = chosen.index_select(0, rows_kept)
        live.finish_sums((graphed.sum_logprobs if graphed else sum_logprobs).cpu().numpy())
        return [
            decoder.finish(request, live.tokens[row], live.sums[row], float(no_speech[row]),
                           live.alignment_of(row) if heads else None, frames[row], live.looped[row])
            for row in range(rows)
        ]

    def one_step(self, chosen: torch.Tensor, position: torch.Tensor, cache: Cache, state: TimestampState,
                 sum_logprobs: torch.Tensor, extra_forbidden: torch.Tensor | None,
                 heads: dict[int, torch.Tensor] | None = None, reach: int | None = None,
                 ) -> tuple[torch.Tensor, TimestampState, dict[int, torch.Tensor]]:
        """A step after the first: `chosen` in at `position` (both advanced in place), the next
        tokens out; `sum_logprobs` accumulates in place. `reach`: see TextDecoder.step."""
        rules = self.decoder.rules
        logits, weights = self.decoder.forward.step(chosen, position, cache, heads, reach)
        position += 1
        forbidden = rules.forbidden(1, state)
        if extra_forbidden is not None:
            forbidden = forbidden | extra_forbidden
        chosen, logprob = self.choose(logits.float(), forbidden)
        sum_logprobs += logprob
        return chosen, rules.advance(state, chosen), weights

    def choose(self, logits: torch.Tensor, forbidden: torch.Tensor, noise: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The next token of every row and its log probability (finished rows may only repeat
        end-of-text, at log probability 0). Sampling draws `noise` from the generator unless
        given (the scheduler's rows each draw from their own)."""
        rules = self.decoder.rules
        logprobs = logits.masked_fill(forbidden, NEGATIVE_INFINITY).log_softmax(dim=-1)
        weight = rules.timestamp_forced(logprobs)
        forced, timestamp_total = weight.forced, weight.timestamp_total
        if self.request.temperature > 0:
            candidates = logprobs.masked_fill(forced.unsqueeze(1) & rules.before_timestamps, NEGATIVE_INFINITY)
            if noise is None:
                noise = _gumbel_noise(tuple(candidates.shape), self.generator)
            noise = noise.to(candidates.device)
            # log probabilities differ from the logits by a constant per row: same samples
            chosen = (candidates / self.request.temperature).add_(noise).argmax(dim=-1)
            logprob = candidates.gather(1, chosen.unsqueeze(1)).squeeze(1)
            return chosen, logprob - torch.where(forced, timestamp_total, self.decoder.zero)
        # greedy: the best text token, unless the timestamps together outweigh it, then the best
        # timestamp, its log probability renormalised over the timestamps
        best_timestamp, timestamp_index = weight.timestamps.max(dim=-1)
        chosen = torch.where(forced, timestamp_index + rules.timestamp_begin, weight.text_token)
        return chosen, torch.where(forced, best_timestamp - timestamp_total, weight.best_text)


class BeamSearch:
    """openai/whisper's beam search (patience 1): per chunk, `beam_size` hypotheses; each step
    takes the best continuations over all of them; a finished one is kept aside until
    `beam_size` have finished; the best by average log probability wins."""

    def __init__(self, decoder: Decoder, request: DecodingRequest) -> None:
        self.decoder = decoder
        self.request = request
        self.beams = request.beam_size

    def run(self, encoded: torch.Tensor, frames: list[int]) -> list[Decoded]:
        decoder, request, beams = self.decoder, self.request, self.beams
        rules, device = decoder.rules, decoder.model.device
        end_of_text = decoder.tokens.end_of_text
        chunks = encoded.shape[0]
        rows = chunks * beams
        # each chunk's encoder states once per hypothesis, by index_select (not repeat_interleave)
        expand = torch.arange(chunks, device=device).unsqueeze(1).expand(chunks, beams).reshape(-1)
        cache, logits, no_speech, _ = decoder.prefill(encoded.index_select(0, expand), request, rows)
        state, opening = rules.opening(rows, request.resumed_at)
        sum_logprobs = torch.zeros(rows, dtype=torch.float32, device=device)
        sum_logprobs.view(chunks, beams)[:, 1:] = NEGATIVE_INFINITY  # identical hypotheses: keep one
        position = torch.tensor([len(request.prefix)], device=device)
        histories: list[list[int]] = [[] for _ in range(rows)]
        live_scores: list[float] = [0.0] * rows
        finished: list[dict[tuple[int, ...], float]] = [{} for _ in range(chunks)]
        vocabulary = decoder.vocabulary_size
        chosen = torch.empty(0)
        for step in range(request.max_new_tokens):
            raise_if_cancelled(request.cancellation)
            if step > 0:
                logits, _ = decoder.forward.step(chosen, position, cache, reach=len(request.prefix) + step)
                logits = logits.float()
                position += 1
            logits = logits.masked_fill(rules.forbidden(step, state) if step else opening, NEGATIVE_INFINITY)
            logprobs = logits.log_softmax(dim=-1)
            weight = rules.timestamp_forced(logprobs)
            forced, timestamp_total = weight.forced, weight.timestamp_total
            logprobs = logprobs.masked_fill(forced.unsqueeze(1) & rules.before_timestamps, NEGATIVE_INFINITY)
            logprobs = logprobs - torch.where(forced, timestamp_total, decoder.zero).unsqueeze(1)
            scores = (sum_logprobs.unsqueeze(1) + logprobs).view(chunks, beams * vocabulary)
            # at most one end-of-text per hypothesis among 2 * beams: at least `beams` live ones
            top_scores, top_indices = scores.topk(2 * beams, dim=-1)
            # one transfer: scores and flat indices (exact in float32 below 2^24)
            host = torch.stack([top_scores, top_indices.float()]).cpu().numpy()
            sources, tokens, new_scores = [], [], []
            for chunk in range(chunks):
                kept = 0
                for score, flat in zip(host[0, chunk], host[1, chunk].astype(np.int64)):
                    beam, token = divmod(int(flat), vocabulary)
                    row = chunk * beams + beam
                    if not np.isfinite(score):
                        continue
                    if token == end_of_text:
                        if len(finished[chunk]) < beams:
                            finished[chunk].setdefault(tuple(histories[row]), float(score))
                        continue
                    sources.append(row)
                    tokens.append(token)
                    new_scores.append(float(score))
                    kept += 1
                    if kept == beams:
                        break
                while kept < beams:  # fewer live continuations than beams: pad with dead ones
                    sources.append(chunk * beams)
                    tokens.append(end_of_text)
                    new_scores.append(NEGATIVE_INFINITY)
                    kept += 1
            histories = [histories[source] + [token] for source, token in zip(sources, tokens)]
            live_scores = new_scores
            if all(len(done) >= beams for done in finished):
                break
            source_rows = torch.tensor(sources, device=device)
            chosen = torch.tensor(tokens, device=device)
            sum_logprobs = torch.tensor(new_scores, dtype=torch.float32, device=device)
            cache.select(source_rows, same_chunks=True)
            state = rules.advance(state.select(source_rows), chosen)
        results = []
        for chunk in range(chunks):
            candidates = dict(finished[chunk])
            live = sorted(range(chunk * beams, (chunk + 1) * beams), key=lambda row: -live_scores[row])
            for row in live:  # too few finished within the token limit: the live ones make up
                if len(candidates) >= beams:
                    break
                candidates.setdefault(tuple(histories[row]), live_scores[row])
            # openai/whisper's ranking: sum of log probabilities over the length
            best = max(candidates.items(), key=lambda item: item[1] / max(len(item[0]), 1))
            result = decoder.finish(request, list(best[0]), best[1], float(no_speech[chunk * beams]), None, frames[chunk])
            results.append(result)
        if request.word_timestamps:
            results = self.decoder.align(encoded, request, results, frames)
        return results


class GraphedSteps:
    """Greedy steps after the first for a batch of `rows`, captured once as a CUDA graph over
    static buffers (cache of the decoder's full context, tokens, position, rule state, scores)
    and replayed: the same operations as `Sampling.one_step`, launched as one."""

    def __init__(self, decoder: Decoder, rows: int) -> None:
        device, model = decoder.model.device, decoder.model
        self.decoder = decoder
        frames = model.model.config.max_source_positions
        placeholder = torch.zeros((rows, frames, decoder.forward.width), dtype=model.dtype, device=device)
        self.cache = decoder.forward.new_cache(placeholder, model.max_target_positions)
        self.chosen = torch.zeros(rows, dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.state = decoder.rules.initial_state(rows)
        self.sum_logprobs = torch.zeros(rows, dtype=torch.float32, device=device)
        self.extra_forbidden = torch.zeros_like(decoder.rules.end_of_text_forbidden)
        self.greedy = Sampling(decoder, DecodingRequest(()), None)
        self.host_tokens = [torch.empty(rows, dtype=torch.long).pin_memory() for _ in range(2)]
        self.turn = 0
        self.pending: tuple[torch.cuda.Event, torch.Tensor] | None = None
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up off the capture, as CUDA graphs require
                self._body()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._body()

    def _body(self) -> None:
        chosen, state, _ = self.greedy.one_step(self.chosen, self.position, self.cache, self.state,
                                                self.sum_logprobs, self.extra_forbidden)
        self.chosen.copy_(chosen)
        self.state.copy_(state)

    def prepare(self, encoded: torch.Tensor) -> Cache:
        """The static cache made ready for a new batch: its encoder keys and values, nothing visible."""
        self.pending = None
        self.decoder.forward.load_cross(self.cache, encoded)
        self.cache.visible.fill_(float("-inf"))
        return self.cache

    def load(self, chosen: torch.Tensor, position: int, state: TimestampState, sum_logprobs: torch.Tensor) -> None:
        self.pending = None
        self.chosen.copy_(chosen)
        self.position.fill_(position)
        self.state.copy_(state)
        self.sum_logprobs.copy_(sum_logprobs)

    def replay(self, forbid_end_of_text: bool) -> torch.Tensor:
        self.extra_forbidden.copy_(self.decoder.rules.end_of_text_forbidden if forbid_end_of_text
                                   else torch.zeros_like(self.extra_forbidden))
        self.graph.replay()
        return self.chosen

    def _launch(self, forbid_end_of_text: bool) -> tuple[torch.cuda.Event, torch.Tensor]:
        """Replay one step and queue the copy of its tokens to pinned host memory."""
        self.replay(forbid_end_of_text)
        self.turn ^= 1
        tokens = self.host_tokens[self.turn]
        tokens.copy_(self.chosen, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return done, tokens

    def step_tokens(self, forbid_end_of_text: bool, forbid_next: bool, ahead: bool) -> np.ndarray:
        """This step's tokens on the host. With `ahead`, the next step is launched first (its
        tokens are read by the next call), so the GPU works while the host reads these; a step
        launched after every row has finished only repeats end-of-text at log probability 0."""
        if self.pending is None:
            self.pending = self._launch(forbid_end_of_text)
        done, tokens = self.pending
        self.pending = self._launch(forbid_next) if ahead else None
        done.synchronize()
        return tokens.numpy().copy()
