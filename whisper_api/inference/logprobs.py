"""Each text token's log probability (`include[]=logprobs`): the chosen tokens teacher-forced
through the decoder once more, after the text is final (fallback and loop trimming done), so the
decoding loop itself carries nothing extra for requests that do not ask."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import torch

from ..transcript import Segment, TokenLogprob
from .decoder import Decoded, Decoder
from .model import LoadedModel


@lru_cache(maxsize=1)
def byte_of_character() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2's, Whisper's): each printable stand-in -> its byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    characters = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return {chr(character): byte for byte, character in zip(printable, characters)}


def token_bytes(model: LoadedModel, token: int) -> list[int]:
    piece = model.tokenizer.convert_ids_to_tokens(token)
    table = byte_of_character()
    return [table[character] for character in piece if character in table]


def chosen_logprobs(decoder: Decoder, encoded: torch.Tensor, prefix: tuple[int, ...], tokens: list[int]) -> list[float]:
    """log p(token | prefix, tokens before it) for each of `tokens` under the model, one row of
    `encoded` (1, frames, width)."""
    if not tokens:
        return []
    sequence = torch.tensor([[*prefix, *tokens]], device=encoded.device)
    cache = decoder.forward.new_cache(encoded, sequence.shape[1])
    hidden, _ = decoder.forward.prefill(sequence, cache)
    # the position before each token predicts it
    logits = decoder.forward.logits(hidden[0, len(prefix) - 1 : len(prefix) - 1 + len(tokens)]).float()
    chosen = torch.tensor(tokens, device=encoded.device).unsqueeze(1)
    return logits.log_softmax(dim=-1).gather(1, chosen).squeeze(1).cpu().tolist()


def with_logprobs(model: LoadedModel, segments: list[Segment], result: Decoded, logprobs: list[float]
                  ) -> list[Segment]:
    """The segments cut from `result` with their text tokens' entries (timestamps left out);
    each segment's tokens are the next run of the result's tokens."""
    timestamp_begin = model.tokens.timestamp_begin
    position = 0
    marked = []
    for segment in segments:
        length = len(segment.tokens)
        while position + length <= len(result.tokens) and result.tokens[position : position + length] != segment.tokens:
            position += 1
        entries = []
        for offset, token in enumerate(segment.tokens):
            if token >= timestamp_begin or position + offset >= len(logprobs):
                continue
            raw = token_bytes(model, token)
            entries.append(TokenLogprob(bytes(raw).decode("utf-8", errors="replace"),
                                        round(logprobs[position + offset], 6), raw))
        position += length
        marked.append(replace(segment, logprobs=entries))
    return marked
