"""Our decoding loop against transformers' `generate` on the same chunk, prompt and weights:
greedy gives the same tokens, beam search the same or a better-scored text, token times within
0.1 s; the rules hold (timestamps paired and monotonic, first timestamp within a second)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers.modeling_outputs import BaseModelOutput

from tests.support.speech import MEETING_SENTENCES, character_error_rate, concatenate, japanese_speech
from whisper_api.inference.decoder import Decoder, DecodingRequest
from whisper_api.inference.forward import Cache, TextDecoder
from whisper_api.inference.model import SAMPLE_RATE, WINDOW_FRAMES

WORD_TIME_TOLERANCE_SECONDS = 0.1
# Beam search: ours and transformers' keep different candidate lists (transformers scores with a
# length penalty and keeps 2 * beams), so the texts may differ; both must read the speech.
BEAM_CER_LIMIT = 0.15


@pytest.fixture(scope="module")
def chunks(engine) -> dict:
    """Two chunks: ~28 s of six sentences, and the first two sentences alone (shorter, padded)."""
    long_audio, _ = concatenate(*[japanese_speech(text) for text in MEETING_SENTENCES[:6]], gap_seconds=0.8)
    long_audio = long_audio[: 28 * SAMPLE_RATE]
    short_audio, _ = concatenate(*[japanese_speech(text) for text in MEETING_SENTENCES[6:8]], gap_seconds=0.8)
    model = engine.model
    with torch.no_grad():
        encoded = model.encode(model.log_mel([long_audio, short_audio]))
    reference = "".join(MEETING_SENTENCES[:6])
    return {"encoded": encoded, "reference": reference}


def transformers_generate(engine, encoded: torch.Tensor, prompt: list[int] | None = None, **arguments):
    model = engine.model
    extra = {}
    if prompt:
        extra["prompt_ids"] = torch.tensor([model.tokens.start_of_previous, *prompt])
    with torch.no_grad():
        return model.model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoded), language="ja", task="transcribe",
            return_timestamps=True, force_unique_generate_call=True, return_dict_in_generate=True,
            max_new_tokens=224, **extra, **arguments,
        )


def prefix(engine, prompt: list[int] | None = None) -> tuple[int, ...]:
    tokens = engine.model.tokens
    head = (tokens.start_of_previous, *prompt) if prompt else ()
    return (*head, tokens.start_of_transcript, tokens.languages["ja"], tokens.transcribe)


def generated(sequence: torch.Tensor, prefix_length: int, end_of_text: int) -> list[int]:
    return [token for token in sequence.tolist()[prefix_length:] if token != end_of_text]


@pytest.mark.parametrize("with_prompt", [False, True], ids=["no-prompt", "prompt"])
def test_greedy_decoding_gives_the_same_tokens_as_transformers_generate(engine, chunks, with_prompt):
    prompt = engine.model.text_tokens(" 会議の議事録です。") if with_prompt else None
    encoded = chunks["encoded"]
    with torch.no_grad():
        ours = engine.decoder.decode(encoded, DecodingRequest(prefix(engine, prompt)), [WINDOW_FRAMES] * 2)
    theirs = transformers_generate(engine, encoded, prompt)
    prefix_length = len(prefix(engine, prompt))
    end_of_text = engine.model.tokens.end_of_text
    for row, result in enumerate(ours):
        expected = generated(theirs["sequences"][row], prefix_length, end_of_text)
        assert result.tokens == expected
        assert len(result.tokens) > 20


def test_beam_search_reads_the_speech_as_well_as_transformers_beam_search(engine, chunks):
    encoded = chunks["encoded"][:1]
    with torch.no_grad():
        ours = engine.decoder.decode(encoded, DecodingRequest(prefix(engine), beam_size=2), [WINDOW_FRAMES])[0]
    theirs = transformers_generate(engine, encoded, num_beams=2)
    their_text = engine.model.decode_text(generated(theirs["sequences"][0], 3, engine.model.tokens.end_of_text))
    our_text = engine.model.decode_text(ours.tokens)
    assert character_error_rate(chunks["reference"], our_text) <= max(
        BEAM_CER_LIMIT, character_error_rate(chunks["reference"], their_text) + 0.02
    )
    greedy = engine.decoder.decode(encoded, DecodingRequest(prefix(engine)), [WINDOW_FRAMES])[0]
    assert ours.avg_logprob >= greedy.avg_logprob - 0.05  # the beam finds at least as likely a text


def test_token_times_match_transformers_within_a_tenth_of_a_second(engine, chunks):
    encoded = chunks["encoded"][:1]
    with torch.no_grad():
        ours = engine.decoder.decode(encoded, DecodingRequest(prefix(engine), word_timestamps=True), [WINDOW_FRAMES])[0]
    theirs = transformers_generate(engine, encoded, return_token_timestamps=True)
    assert generated(theirs["sequences"][0], 3, engine.model.tokens.end_of_text) == ours.tokens
    their_ends = theirs["token_timestamps"][0].tolist()[3 : 3 + len(ours.tokens)]
    our_ends = [end for _, end in ours.token_spans]
    assert np.max(np.abs(np.array(our_ends) - np.array(their_ends))) <= WORD_TIME_TOLERANCE_SECONDS


def test_timestamps_come_in_increasing_pairs_and_start_within_a_second(engine, chunks):
    timestamp_begin = engine.model.tokens.timestamp_begin
    with torch.no_grad():
        results = engine.decoder.decode(chunks["encoded"], DecodingRequest(prefix(engine)), [WINDOW_FRAMES] * 2)
    for result in results:
        tokens = result.tokens
        assert timestamp_begin <= tokens[0] <= timestamp_begin + 50
        stamps = [token for token in tokens if token >= timestamp_begin]
        assert stamps == sorted(stamps)
        # between two text runs there are exactly two timestamps (one closing, one opening)
        runs = "".join("t" if token >= timestamp_begin else "x" for token in tokens)
        assert all(len(run) == 2 for run in runs.strip("t").split("x") if run)


def test_sampling_is_reproducible_with_the_same_generator_and_reads_the_speech(engine, chunks):
    encoded = chunks["encoded"][:1]
    request = DecodingRequest(prefix(engine), temperature=0.4)
    with torch.no_grad():
        first = engine.decoder.decode(encoded, request, [WINDOW_FRAMES], torch.Generator().manual_seed(1))[0]
        second = engine.decoder.decode(encoded, request, [WINDOW_FRAMES], torch.Generator().manual_seed(1))[0]
    assert first.tokens == second.tokens
    assert character_error_rate(chunks["reference"], engine.model.decode_text(first.tokens)) < 0.3


def test_rows_that_finish_early_leave_the_batch_without_changing_any_row(engine, chunks):
    """The short chunk finishes long before the long one and leaves the batch: every row's tokens,
    score and token times are those it gets decoded alone."""
    encoded = chunks["encoded"]
    request = DecodingRequest(prefix(engine), word_timestamps=True)
    with torch.no_grad():
        together = engine.decoder.decode(encoded, request, [WINDOW_FRAMES] * 2)
        alone = [engine.decoder.decode(encoded[row : row + 1], request, [WINDOW_FRAMES])[0] for row in range(2)]
    assert len(together[1].tokens) < len(together[0].tokens) / 2  # the short one did finish early
    for batched, single in zip(together, alone):
        assert batched.tokens == single.tokens
        assert batched.avg_logprob == pytest.approx(single.avg_logprob, abs=1e-3)
        assert np.allclose(batched.token_spans, single.token_spans, atol=0.021)


class OperatorNames(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_eager_attention_gives_the_same_tokens_as_sdpa(engine, chunks):
    """`[model] attention = eager` (the DirectML advice when the fused kernel fails) reaches every
    attention call of ours, and decodes the same text."""
    eager = Decoder.__new__(Decoder)
    eager.__dict__.update(engine.decoder.__dict__, forward=TextDecoder(engine.model.model, "eager"), _graphs={})
    request = DecodingRequest(prefix(engine), word_timestamps=True)
    with torch.no_grad():
        fused = engine.decoder.decode(chunks["encoded"], request, [WINDOW_FRAMES] * 2)
        with OperatorNames() as seen:
            plain = eager.decode(chunks["encoded"], request, [WINDOW_FRAMES] * 2)
    assert "bmm" in seen.names and not any("scaled_dot_product" in name for name in seen.names)
    for ours, theirs in zip(plain, fused):
        assert ours.tokens == theirs.tokens
        assert np.allclose(ours.token_spans, theirs.token_spans, atol=0.021)


def test_a_step_reading_only_the_written_positions_gives_the_whole_cache_logits(engine, chunks):
    """Cache.attended: the self-attention of a step reads the positions written so far (in blocks),
    not the whole preallocated cache, and gives the same logits as reading it all."""
    forward, tokens = engine.decoder.forward, engine.model.tokens
    encoded = chunks["encoded"]
    start = prefix(engine)
    with torch.no_grad():
        logits = {}
        for reach in (None, len(start) + 1):
            cache = forward.new_cache(encoded, 448)
            forward.prefill(torch.tensor([list(start)] * 2), cache)
            step_tokens = torch.tensor([tokens.timestamp_begin] * 2)
            logits[reach], _ = forward.step(step_tokens, torch.tensor([len(start)]), cache, reach=reach)
            if reach is not None:
                keys, _, visible = cache.attended(reach)
                assert keys[0].shape[2] < 448 and visible.shape[-1] == keys[0].shape[2]
    assert torch.allclose(logits[None], logits[len(start) + 1], atol=1e-4)
    assert torch.equal(logits[None].argmax(-1), logits[len(start) + 1].argmax(-1))


def test_rows_join_and_leave_a_batch_cache_in_place_and_decode_as_before(engine, chunks):
    """Cache.joined / keep_rows (the scheduler's batches): joining rows are written into the
    batch's free slots and leaving rows make the rows behind them move down, in the same tensors;
    every row then steps to the logits it gets in a cache of its own."""
    forward, tokens = engine.decoder.forward, engine.model.tokens
    long_chunk, short_chunk = chunks["encoded"][:1], chunks["encoded"][1:]
    start = prefix(engine)

    def cache_of(encoded: torch.Tensor, text: list[int]):
        cache = forward.new_cache(encoded, 448)
        forward.prefill(torch.tensor([list(start) + text] * encoded.shape[0]), cache)
        cache.per_row_visibility()
        return cache

    def step(cache, positions: list[int]) -> torch.Tensor:
        rows = len(positions)
        position = torch.tensor(positions if len(set(positions)) > 1 else positions[:1])
        logits, _ = forward.step(torch.tensor([tokens.timestamp_begin] * rows), position, cache,
                                 reach=max(positions) + 1)
        return logits

    texts = [[], [tokens.timestamp_begin], [tokens.timestamp_begin, 1], []]  # rows at three positions
    encoded = [long_chunk, short_chunk, long_chunk, short_chunk]
    with torch.no_grad():
        alone = [step(cache_of(chunk, text), [len(start) + len(text)])[0] for chunk, text in zip(encoded, texts)]
        batch = Cache.joined([cache_of(chunk, text) for chunk, text in zip(encoded[:3], texts[:3])])
        storage = batch.cross_keys[0].data_ptr()
        batch.keep_rows([0, 2])  # row 1 leaves: row 2 moves down
        assert batch.rows == 2 and batch.cross_keys[0].data_ptr() == storage
        joined = Cache.joined([batch, cache_of(encoded[3], texts[3])])  # into the slot row 1 left
        assert joined is batch and batch.rows == 3 and batch.cross_keys[0].data_ptr() == storage
        together = step(batch, [len(start) + len(texts[index]) for index in (0, 2, 3)])
    for row, index in enumerate((0, 2, 3)):
        assert torch.allclose(together[row], alone[index], atol=1e-4)
        assert together[row].argmax() == alone[index].argmax()
